"""`stop` without the agent (launcher/remote/quickstop.py), as a user checks it.

After a stop no process of the cluster is left on any host, whichever way it
went: the sh script alone (a healthy cluster, or one whose scheduler had
died), or the agent after it where the script leaves it (a helper that
ignores SIGTERM; a process without the token: tests/test_escapees.py). A
second stop exits 0. The script itself, on processes this test starts: it
signals nothing it cannot prove it may end.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

import launcher
from launcher.remote import quickstop
from launcher.remote.agent import TOKEN_VAR, _members
from launcher.remote.protocol import Stop
from launcher.store import state
from launcher.testing.clusters import cli, cluster_processes, session_members, ssh_inventory, wait_until


def _steps():
    """An ``on_step`` hook and what it saw: address -> the ops run there."""
    seen: dict[str, set] = defaultdict(set)
    return (lambda address, op, *_: seen[address].add(op)), seen


def _stop_watched(name: str):
    """``launcher.stop(name)`` watched: its summary and the ops run per host; stopped again if it failed."""
    hook, seen = _steps()
    try:
        return launcher.stop(name, on_step=hook), seen
    finally:
        if state.read(name) is not None:
            launcher.stop(name)


def _as_before_the_relay(name: str) -> None:
    """Make the record one of a launch before the relay (its trees lack ``relay``)."""
    old = state.read(name)
    for h in old.hosts:
        h.extra.pop("relay", None)
    state.write(old)


def _run_files(name: str) -> list[str]:
    top = Path(os.path.expanduser(f"~/.pyku-launch/{name}"))
    return sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_file()) if top.exists() else []


def test_a_healthy_cluster_stops_through_its_scheduler_with_one_session_and_a_second_stop_exits_0(sshd, tmp_path):
    """The scheduler's host gets the one SSH session (the sh script, no agent); the scheduler has
    every nanny end its own tree (launcher/remote/relay.py): the worker hosts are not even connected
    to, and still nothing is left there, their run files but the logs and their spill space are gone."""
    name = "quick"
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name=name, workers=(1, 2), nworkers=1)
    rec = launcher.launch(inv)
    hook, seen = _steps()
    try:
        with launcher.connect(name) as client:
            spill = set(client.run(lambda dask_worker: dask_worker.local_directory).values())
        assert len(spill) == 2 and all(os.path.isdir(d) for d in spill), spill
        summary = launcher.stop(name, on_step=hook)
    finally:
        if state.read(name) is not None:
            launcher.stop(name)
    assert session_members(rec) == [] and cluster_processes(name) == []
    assert state.read(name) is None and summary["stopped"] >= 3, summary
    scheduler_host = next(h.address for h in rec.hosts if h.role == "scheduler")
    assert dict(seen) == {scheduler_host: {"stop-sh"}}, dict(seen)  # no agent, no worker host session
    assert all(f.endswith(".log") for f in _run_files(name)), _run_files(name)  # the logs stay, as before
    assert not any(os.path.exists(d) for d in spill), spill
    r = cli("stop", "--name", name)
    assert r.returncode == 0 and "not running" in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_nanny_that_does_not_answer_leaves_its_tree_to_its_own_host(sshd, tmp_path):
    """A frozen nanny (SIGSTOP) answers no relay: the scheduler does not count its tree as gone,
    and the stop goes on on that host only (its script, then the agent's SIGKILL), and nothing is left."""
    name = "frozen"
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name=name, workers=(1, 2), nworkers=1)
    rec = launcher.launch(inv)
    frozen, other = [h for h in rec.hosts if h.role == "workers"]
    scheduler_host = next(h.address for h in rec.hosts if h.role == "scheduler")
    os.kill(frozen.pid, signal.SIGSTOP)  # the tree's leader: the nanny's process
    summary, seen = _stop_watched(name)
    assert session_members(rec) == [] and cluster_processes(name) == [] and state.read(name) is None
    assert summary["killed"] >= 1, summary
    assert seen[scheduler_host] == {"stop-sh"} and seen[frozen.address] == {"stop-sh", "stop"}, dict(seen)
    assert other.address not in seen, dict(seen)


def test_a_record_without_the_relay_stops_each_host_by_its_script(sshd, tmp_path):
    """A cluster launched before the relay (its records lack ``relay``): every host's own script."""
    name = "quickold"
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name=name, workers=(1, 2), nworkers=1)
    rec = launcher.launch(inv)
    _as_before_the_relay(name)
    summary, seen = _stop_watched(name)
    assert session_members(rec) == [] and cluster_processes(name) == [] and state.read(name) is None
    assert summary["stopped"] >= 3, summary
    assert dict(seen) == {h.address: {"stop-sh"} for h in rec.hosts}, dict(seen)
    assert all(f.endswith(".log") for f in _run_files(name)), _run_files(name)


def test_a_cluster_whose_scheduler_died_is_stopped_on_every_host(sshd, tmp_path):
    name = "headless"
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name=name, workers=(1, 2), nworkers=1)
    rec = launcher.launch(inv)
    sched = next(h for h in rec.hosts if h.role == "scheduler")
    try:
        for pid in _members(sched.token):  # the scheduler's tree, found by its own token
            os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not _members(sched.token), 10)
        assert all(_members(h.token) for h in rec.hosts if h.role == "workers")  # the workers wait for it
        r = cli("stop", "--name", name)
    finally:
        if state.read(name) is not None:
            launcher.stop(name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert session_members(rec) == [] and cluster_processes(name) == [] and state.read(name) is None


@pytest.mark.parametrize("relay", [True, False], ids=["by-its-nanny", "by-the-agent"])
def test_a_helper_that_ignores_sigterm_is_killed_on_its_host_only(relay, sshd, tmp_path):
    """Relayed, the nanny kills it after its grace (no session on that host); without the relay
    (an older record), the host's script leaves it to the agent there, which kills it."""
    name = "stubborn2" if relay else "stubborn3"
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name=name, workers=(1,), nworkers=1)
    rec = launcher.launch(inv)
    if not relay:
        _as_before_the_relay(name)
    hook, seen = _steps()
    try:
        def helper_ignoring_sigterm() -> int:  # a task's helper: it carries the worker's token
            import subprocess as sp
            import sys as _sys
            import time as _t

            code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(600)"
            p = sp.Popen([_sys.executable, "-c", code], start_new_session=True, stdout=sp.PIPE)
            p.stdout.readline()
            _t.sleep(0.1)
            return p.pid

        with launcher.connect(name) as client:
            pid = client.submit(helper_ignoring_sigterm, pure=False).result(timeout=60)
        summary = launcher.stop(name, on_step=hook)
    finally:
        if state.read(name) is not None:
            launcher.stop(name)
    assert summary["killed"] >= 1, summary
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] == "Z"
    assert session_members(rec) == [] and cluster_processes(name) == [] and state.read(name) is None
    worker_host = next(h.address for h in rec.hosts if h.role == "workers")
    scheduler_host = next(h.address for h in rec.hosts if h.role == "scheduler")
    assert seen[scheduler_host] == {"stop-sh"}, dict(seen)
    assert seen.get(worker_host, set()) == (set() if relay else {"stop-sh", "stop"}), dict(seen)


# ---- the script alone, on processes this test starts (local, no sshd)


def _start(token: str, shell_code: str) -> subprocess.Popen:
    env = dict(os.environ, **{TOKEN_VAR: token})
    return subprocess.Popen(["/bin/sh", "-c", shell_code], env=env, start_new_session=True)


def _script(request: Stop, path: str | None = None) -> quickstop.Outcome:
    env = dict(os.environ, PATH=path) if path else None
    out = subprocess.run(quickstop.command(request), shell=True, capture_output=True, text=True, env=env, timeout=60)
    return quickstop.parse(out.stdout)


@pytest.mark.parametrize("case", ["tree", "tokenless child", "no grep -z", "grep fails on /proc"])
def test_the_script_ends_only_what_it_can_prove(case, tmp_path):
    token = f"qs.{os.getpid()}.{re.sub(r'[^A-Za-z0-9]+', '-', case)}"
    rundir = tmp_path / "run"
    rundir.mkdir()
    for f in ("w.log", "key.pem"):
        (rundir / f).write_text("x")
    code = {"tree": "sleep 300 & sleep 300; wait",
            "tokenless child": "env -i sleep 300 & sleep 300; wait",
            "no grep -z": "sleep 300 & sleep 300; wait",
            "grep fails on /proc": "sleep 300 & sleep 300; wait"}[case]
    path = None
    fake = {"no grep -z": "echo 'grep: invalid option -- z' >&2\nexit 2",
            # passes the -z check, then cannot scan (as "Argument list too long" would): an empty
            # answer that must not read as "nothing left"
            "grep fails on /proc": f'for a; do case $a in /proc/*) exit 2;; esac; done\nexec {shutil.which("grep")} "$@"'}
    if case in fake:  # a grep of its own before the real one on PATH
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "grep").write_text(f"#!/bin/sh\n{fake[case]}\n")
        (bin_dir / "grep").chmod(0o755)
        path = f"{bin_dir}:{os.environ['PATH']}"
    proc = _start(token, code)
    expected = 2 if case == "tokenless child" else 3  # the shell and its children with the token
    try:
        assert wait_until(lambda: len(_members(token)) == expected, 10)
        request = quickstop.resolved(Stop(tokens=[token], remove=[], prune=[], grace=3.0, empty=[str(rundir)],
                                          keep=["*.log"]), os.path.expanduser("~"))
        outcome = _script(request, path)
        if case == "tree":
            assert outcome == quickstop.Outcome(gone=True, signalled=3)
            assert _members(token) == [] and sorted(os.listdir(rundir)) == ["w.log"]
        else:  # left to the agent, nothing signalled, nothing removed
            assert not outcome.gone and outcome.signalled == 0, outcome
            assert len(_members(token)) == expected and sorted(os.listdir(rundir)) == ["key.pem", "w.log"]
    finally:
        pids = _members(token)
        if case == "tokenless child":
            pids += [int(c) for p in pids for t in os.listdir(f"/proc/{p}/task")
                     for c in open(f"/proc/{p}/task/{t}/children").read().split()]
        for pid in set(pids):
            os.kill(pid, signal.SIGKILL)
        proc.wait()


def test_requests_the_script_does_not_handle_go_to_the_agent():
    base = Stop(tokens=["c.s.u.l.workers"], remove=["~/.pyku-launch/c/l.workers"], prune=["~/.pyku-launch"])
    home = "/home/u"
    assert quickstop.resolved(base, home).remove == ["/home/u/.pyku-launch/c/l.workers"]
    assert quickstop.resolved(base, None) is None  # a tree recorded before this version
    for edited in ("home/u", ["/home/u"], 0):  # a record edited by hand: the agent resolves the paths
        assert quickstop.resolved(base, edited) is None, edited
    for other in (Stop(tokens=[], remove=[], prune=[], prefixes=["c.s."]),  # a sweep
                  Stop(tokens=["t"], remove=[], prune=[], settle=2.0),
                  Stop(tokens=["t"], remove=["{tmpdir}/pyku-launch-{uid}/c/l"], prune=[]),  # never spawned
                  Stop(tokens=["t"], remove=["~other/x"], prune=[]),
                  Stop(tokens=["t; rm -rf /"], remove=[], prune=[])):
        assert quickstop.resolved(other, home) is None, other
    assert quickstop.parse("rc chatter\n@@pyku-quickstop@@ agent 2 grace\n") == quickstop.Outcome(False, 2, "grace")
    assert quickstop.parse("bash: /bin/sh: not found\n") is None  # no last words: the agent decides


def test_the_scripts_relay_request_of_many_trees_reaches_the_scheduler_whole(tmp_path):
    """The request for hundreds of worker hosts (past the 128 KiB a single argument may have) is
    written whole into the scheduler's run directory, from the script's standard input, 0600."""
    token = f"qs.{os.getpid()}.relay"
    trees = {f"{token}.{i}": Stop(tokens=[f"{token}.{i}"], remove=[f"/nonexistent/{i}/" + "x" * 200],
                                  prune=[], grace=1.0) for i in range(600)}
    relay = quickstop.Relay(trees, str(tmp_path), budget=2.5, names={t: [f"h{i}-0"] for i, t in enumerate(trees)})
    request = relay.request_json()
    assert len(request) > 128 * 1024
    out = subprocess.run(quickstop.command(Stop(tokens=[token], remove=[], prune=[], grace=1.0), relay),
                         shell=True, capture_output=True, text=True, input=request, timeout=60)
    assert quickstop.parse(out.stdout) == quickstop.Outcome(True, 0), out.stdout + out.stderr
    written = Path(relay.request_path)
    assert written.read_text() == request and (written.stat().st_mode & 0o777) == 0o600
    assert quickstop.parse_relay(out.stdout, relay) == {}  # no scheduler answered: nothing proven
