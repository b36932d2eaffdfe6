"""The command line as a user meets it: help, dry-run, progress, summary, status, logs."""

from __future__ import annotations

import io
import json
import os
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

import launcher
from launcher.store import state
from launcher.cli import main
from launcher.ui.progress import Reporter
from launcher.testing.clusters import cli, cluster_processes, session_members, ssh_inventory
from launcher.testing.sshd import free_port as sshd_free_port

COMMANDS = ["launch", "check", "status", "logs", "stop", "env"]
STAMP = re.compile(r"^\d\d:\d\d:\d\d ")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), prog_name="pyku-launch", catch_exceptions=False)


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_every_help_has_an_example(command):
    r = invoke(*command, "--help")
    assert r.exit_code == 0, r.output
    assert "Usage: pyku-launch" in r.output and "Example" in r.output


def test_no_argument_prints_usage_and_known_clusters(state_dir):
    r = invoke()
    assert r.exit_code == 0
    assert r.output.startswith("Usage: pyku-launch") and "Known clusters: none" in r.output
    state.state_path("somewhere").write_text(json.dumps({"hosts": []}))
    assert "Known clusters: somewhere" in invoke().output


def test_errors_are_one_line(state_dir):
    r = invoke("logs", "--name", "nothing-here")
    assert r.exit_code == 1
    assert r.stderr.strip() == "pyku-launch: error: cluster 'nothing-here' is not launched"


def test_status_json_of_a_cluster_never_launched(state_dir):
    r = invoke("status", "--name", "never", "--json")
    assert r.exit_code == 7  # "not launched" (README, "Commands and exit codes")
    st = json.loads(r.stdout)
    assert st["name"] == "never" and st["state"] == "not launched"
    assert {"scheduler", "dashboard", "hosts", "missing"} <= set(st)


def test_dry_run_starts_nothing_and_names_each_host(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="dryrun")
    for args in (["--dry-run", str(inv)], ["launch", str(inv), "--dry-run"], ["up", str(inv), "--dry-run"]):
        r = invoke(*args)
        assert r.exit_code == 0, r.output
        for host in sshd.hosts[:3]:
            assert f"[{host.address}]" in r.output
        assert "dask_scheduler" in r.output and r.output.count("dask_worker") == 2
    assert cluster_processes("dryrun") == []
    assert state.read("dryrun") is None
    assert not os.path.exists(os.path.expanduser("~/.pyku-launch/dryrun"))


def test_launch_output_status_json_and_logs(sshd, state_dir, tmp_path):
    name = "clistory"
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name=name, workers=(1, 2), nworkers=2)
    scheduler, *workers = [h.address for h in sshd.hosts[:3]]
    launched = cli(str(inv))  # a pipe, not a terminal: plain lines
    rec = state.read(name)
    try:
        assert launched.returncode == 0, launched.stderr

        # no control characters off a terminal; progress lines are timestamped
        for text in (launched.stdout, launched.stderr):
            assert "\x1b" not in text and "\r" not in text
        progress = launched.stderr.strip().splitlines()
        assert progress and all(STAMP.match(ln) for ln in progress), progress
        for step in ("[1/4] connect", "[2/4] preflight", "[3/4] scheduler", "[4/4] workers"):
            assert any(step in ln for ln in progress), step
        assert "workers 4/4 registered" in launched.stderr

        # the summary: address, dashboard, hosts x workers x memory, connect and stop
        out = launched.stdout
        assert f"scheduler  tls://{scheduler}:" in out
        # a TLS cluster's dashboard is closed to the network: the summary says how to reach it
        assert f"dashboard  on {scheduler}'s loopback only: pyku-launch dashboard --name {name}" in out
        for w in workers:
            assert re.search(rf"^  {re.escape(w)}\s+workers\s+2\s+1\s+1\.0 GiB\s+2\.0 GiB\s+ok$", out, re.M), out
        assert re.search(r"^  total\s+4\s+4\.0 GiB$", out, re.M), out
        assert f"connect('{name}')" in out and f"pyku-launch stop --name {name}" in out
        assert f'shell      eval "$(pyku-launch env --name {name})"' in out  # for Client(address): dask_env.py

        # launching again changes nothing; --quiet keeps only the summary
        again = cli(str(inv), "--quiet")
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout and again.stderr == ""

        r = invoke("status", "--json")
        assert r.exit_code == 0, r.output
        st = json.loads(r.stdout)
        assert {"name", "scheduler", "dashboard", "state", "hosts", "missing"} <= set(st)
        assert st["name"] == name and st["state"] == "running" and st["missing"] == {}
        assert st["scheduler"] == rec.scheduler and st["dashboard"].startswith("http://")
        for h in st["hosts"]:
            assert {"address", "role", "expected", "live", "memory_limit"} <= set(h)
        assert {h["address"]: (h["expected"], h["live"], h["memory_limit"])
                for h in st["hosts"] if h["role"] == "workers"} == {w: (2, 2, 2**30) for w in workers}

        r = invoke("status")
        assert r.exit_code == 0 and "\x1b" not in r.output
        assert f"cluster    {name}: running" in r.output
        assert f'eval "$(pyku-launch env --name {name})"' in r.output
        for w in workers:
            assert re.search(rf"^  {re.escape(w)}\s+workers\s+2/2\s", r.output, re.M), r.output

        r = invoke("logs", "-n", "5")
        assert r.exit_code == 0, r.output
        lines = r.output.strip().splitlines()
        hosts_seen = {ln.split()[0] for ln in lines}
        assert hosts_seen == {scheduler, *workers}
        assert any(ln.startswith(scheduler) and "scheduler.log:" in ln for ln in lines)
        for w in workers:
            assert any(ln.startswith(w) and "workers.log:" in ln for ln in lines)

        r = invoke("logs", workers[0], "-n", "3")
        assert r.exit_code == 0 and {ln.split()[0] for ln in r.output.strip().splitlines()} == {workers[0]}
    finally:
        stopped = cli("stop", "--name", name)
    assert stopped.returncode == 0, stopped.stderr
    assert "none left" in stopped.stdout
    assert session_members(rec) == []
    assert cluster_processes(name) == []


def test_reporter_off_a_terminal_is_plain_and_quiet_is_silent():
    out = io.StringIO()
    r = Reporter(stream=out)
    r.step("workers", "4 on 2 hosts")
    r.workers({"a": 1}, {"a": 2, "b": 2})
    r.host("b", "left out: unreachable")
    r.done("workers", 1.5)
    r.close()
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert all(STAMP.match(ln) for ln in text.splitlines())
    assert "[4/4] workers: 4 on 2 hosts" in text and "workers 1/4 registered (a 1/2, b 0/2)" in text

    quiet = io.StringIO()
    r = Reporter(quiet=True, stream=quiet)
    r.step("connect", "3 hosts")
    r.warn("something")
    r.done("connect", 0.1)
    assert quiet.getvalue() == ""


def test_reporter_on_a_terminal_draws_steps_and_hosts():
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with pytest.raises(RuntimeError), Reporter(console=console) as r:
        r.step("connect", "3 hosts")
        r.done("connect", 0.25)
        r.step("workers", "4 on 2 hosts")
        r.workers({"127.0.0.3": 2, "127.0.0.4": 1}, {"127.0.0.3": 2, "127.0.0.4": 2})
        r.host("127.0.0.5", "left out: unreachable")
        raise RuntimeError("a step fails")
    final = Console(file=io.StringIO(), width=100, color_system=None)
    final.print(r.renderable())
    text = final.file.getvalue()
    assert "✓ 1/4 connect" in text and "0.2 s" in text
    assert "✗ 4/4 workers" in text  # cut short by the error
    assert "2/2 workers" in text and "1/2 workers" in text
    assert "127.0.0.5" in text and "left out: unreachable" in text


def test_two_hosts_on_one_address_keep_their_own_progress_rows(sshd, state_dir, tmp_path):
    """One address, two SSH ports: the host left out is marked, not its neighbour."""
    address = sshd.hosts[1].address
    dead_port = sshd_free_port(address)  # nothing listens there
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="rows", workers=(1,))
    inv.write_text(inv.read_text() + f'[[host]]\naddress = "{address}"\nport = {dead_port}\n')
    console = Console(file=io.StringIO(), force_terminal=True, width=160)
    with Reporter(console=console) as r:
        rec = launcher.launch(inv, reporter=r, allow_partial=True)
    try:
        final = Console(file=io.StringIO(), width=160, color_system=None)
        final.print(r.renderable())
        rows = {line.split()[1]: line for line in final.file.getvalue().splitlines()
                if len(line.split()) > 1 and line.split()[1].startswith(address)}
        assert "2/2 workers" in rows[address] and "left out" not in rows[address], rows
        assert "left out" in rows[f"{address}-{dead_port}"], rows
    finally:
        launcher.stop("rows")
    assert session_members(rec) == []
