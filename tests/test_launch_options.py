"""README's options and promises around a launch, each on the real sshd hosts.

``--timeout``, ``min_hosts``, ``--allow-partial`` with a host whose workers
come late, signals during the wait for registrations, the ``tcp`` warning,
``status`` of a degraded cluster, ``$PYKU_CLUSTER`` and usage errors.

Slow workers are real: their host's ``python`` is a wrapper that sleeps
before it execs the interpreter, only when it starts the workers (the
agent, started by the same ``python``, is not delayed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import launcher
from launcher import LaunchError
from launcher.store import state
from launcher.remote.agent import _members
from launcher.testing import ROOT
from launcher.testing.clusters import (agent_processes, cli, cluster_processes, session_members, slow_python,
                                      ssh_inventory, wait_until)

NOBODY = "127.0.0.9"  # a loopback address where no sshd listens


def test_timeout_option_bounds_the_wait_and_rolls_back(sshd, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="tmo", workers=(1,), timeout=120,
                        host_extra={1: f'python = "{slow_python(tmp_path, 60)}"'})
    t0 = time.monotonic()
    r = cli(str(inv), "--timeout", "3", "--quiet")
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stdout + r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "127.0.0.3" in line and "0 of 2 workers registered within 3 s" in line, line
    assert took < 60, f"--timeout 3 but the launch took {took:.0f} s (the inventory says 120)"
    assert state.read("tmo") is None and cluster_processes("tmo") == []


def test_min_hosts_goes_on_without_an_unreachable_host(sshd, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="minh", workers=(1, 2), extra_hosts=(NOBODY,),
                        cluster_extra="min_hosts = 2")
    rec = launcher.launch(inv)  # no --allow-partial: min_hosts says 2 of 3 will do
    try:
        st = launcher.status("minh")
        assert st["state"] == "running" and set(st["missing"]) == {NOBODY}
        assert sorted(h["address"] for h in st["hosts"] if h["role"] == "workers") == ["127.0.0.3", "127.0.0.4"]
    finally:
        launcher.stop("minh")
    assert session_members(rec) == []


def test_min_hosts_not_met_fails_and_names_every_missing_host(sshd, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="minf", workers=(1,), extra_hosts=(NOBODY, "127.0.0.10"),
                        cluster_extra="min_hosts = 2")
    r = cli(str(inv))
    assert r.returncode == 1, r.stdout + r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert NOBODY in line and "127.0.0.10" in line, line
    assert state.read("minf") is None and cluster_processes("minf") == []


def test_allow_partial_leaves_out_a_host_whose_workers_come_late(sshd, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="late", workers=(1, 2), timeout=6,
                        host_extra={2: f'python = "{slow_python(tmp_path, 60)}"'})
    r = cli(str(inv), "--allow-partial", "--quiet")
    assert r.returncode == 0, r.stderr
    rec = state.read("late")
    try:
        assert "MISSING" in r.stdout and "0 of 2 workers registered within 6 s" in r.stdout
        st = launcher.status("late")
        assert st["state"] == "running" and set(st["missing"]) == {"127.0.0.4"}
        # what the late host had started was stopped, not left to register later
        assert [h.address for h in rec.hosts if h.role == "workers"] == ["127.0.0.3"]
        assert not [p for p in cluster_processes("late") if "127.0.0.4" in p]
        with launcher.connect("late") as client:
            assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2
    finally:
        launcher.stop("late")
    assert session_members(rec) == [] and cluster_processes("late") == []


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_while_waiting_for_registrations_rolls_back(sshd, tmp_path, sig, code):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="waitsig", workers=(1,),
                        host_extra={1: f'python = "{slow_python(tmp_path, 60)}"'})
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", str(inv)], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "registered (" in line:  # the scheduler runs; the workers are awaited
            proc.send_signal(sig)
            break
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, "".join(seen) + err
    assert "interrupted" in err and "could not stop" not in err, err
    assert state.read("waitsig") is None
    assert cluster_processes("waitsig") == []
    assert wait_until(lambda: not agent_processes(), 10), agent_processes()


def test_tcp_protocol_is_warned_about(sshd, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="plain", workers=(1,), nworkers=1, protocol="tcp")
    r = cli(str(inv))
    rec = state.read("plain")
    try:
        assert r.returncode == 0, r.stderr
        warning = next(ln for ln in r.stderr.splitlines() if "tcp" in ln)
        assert "warning" in warning and "anyone" in warning, warning
        assert rec.scheduler.startswith("tcp://")
    finally:
        launcher.stop("plain")
    assert session_members(rec) == []


def test_status_degraded_when_a_hosts_workers_are_killed(sshd, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="degr", workers=(1, 2))
    rec = launcher.launch(inv)
    try:
        victim = next(h for h in rec.hosts if h.role == "workers" and h.address == "127.0.0.4")
        for pid in _members(victim.token):
            os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: launcher.status("degr")["state"] == "degraded", 30)
        r = cli("status", "--name", "degr", "--json")
        st = json.loads(r.stdout)
        live = {h["address"]: (h["expected"], h["live"]) for h in st["hosts"] if h["role"] == "workers"}
        assert live == {"127.0.0.3": (2, 2), "127.0.0.4": (2, 0)}, live
        with launcher.connect("degr") as client:  # what is left still computes
            assert client.submit(lambda: 7).result(timeout=30) == 7
    finally:
        launcher.stop("degr")
    assert session_members(rec) == []


def test_pyku_cluster_picks_among_several(sshd, tmp_path, monkeypatch):
    recs = {n: launcher.launch(ssh_inventory(tmp_path / f"{n}.toml", sshd, name=n, workers=(1,), nworkers=1))
            for n in ("first", "second")}
    try:
        with pytest.raises(LaunchError, match="PYKU_CLUSTER"):
            launcher.connect()  # two known: which one?
        monkeypatch.setenv("PYKU_CLUSTER", "second")
        with launcher.connect() as client:
            assert client.scheduler.address == recs["second"].scheduler
        r = cli("status", "--json")
        assert json.loads(r.stdout)["name"] == "second"
    finally:
        for n in recs:
            launcher.stop(n)
    assert all(session_members(rec) == [] for rec in recs.values())


@pytest.mark.parametrize("args", [
    ["--no-such-option"],
    ["status", "--bogus"],
    ["logs", "-n", "many"],
    ["stop", "--name"],
    ["up"],
])
def test_usage_errors_exit_2(state_dir, args):
    r = cli(*args)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.strip()
