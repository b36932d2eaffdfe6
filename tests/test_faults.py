"""Faults on the real sshd hosts: each gets a defined behaviour, nothing lost, nothing left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import launcher
from launcher.store import state
from launcher.testing.clusters import ROOT, agent_processes, cli, cluster_processes, session_members, ssh_inventory, wait_until

NOBODY = "127.0.0.9"  # a loopback address where no sshd listens




def _pids(client) -> dict:
    """Worker address -> pid of the workers that answer (a dying one may not)."""
    return client.run(os.getpid, on_error="ignore")


def test_unreachable_host_rolls_back_by_default(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="unreach", extra_hosts=(NOBODY,))
    r = cli(str(inv))
    assert r.returncode == 1
    line = r.stderr.strip().splitlines()[-1]
    assert NOBODY in line and "--allow-partial" in line
    assert state.read("unreach") is None and cluster_processes("unreach") == []


def test_allow_partial_starts_on_the_hosts_that_work(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="partial", extra_hosts=(NOBODY,),
                        host_extra={2: 'env = "source /nonexistent/env.src"'})
    r = cli(str(inv), "--allow-partial")
    assert r.returncode == 0, r.stderr
    assert f"{NOBODY}" in r.stdout and "127.0.0.4" in r.stdout and "MISSING" in r.stdout
    try:
        st = launcher.status("partial")
        assert [h["address"] for h in st["hosts"] if h["role"] == "workers"] == ["127.0.0.3"]
        assert set(st["missing"]) == {NOBODY, "127.0.0.4"}
        assert st["state"] == "running"
        with launcher.connect("partial") as client:
            assert client.submit(lambda: 2).result() == 2
    finally:
        rec = state.read("partial")
        launcher.stop("partial")
    assert session_members(rec) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_launch_rolls_back(sshd, state_dir, tmp_path, sig, code):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="sig")
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", str(inv)], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "[4/4] workers" in line:  # scheduler running, workers being started
            proc.send_signal(sig)
            break
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, "".join(seen) + err
    assert "interrupted" in err
    assert state.read("sig") is None
    assert cluster_processes("sig") == []
    assert wait_until(lambda: not agent_processes(), 10), agent_processes()
    assert not os.path.exists(os.path.expanduser("~/.pyku-launch/sig"))


def test_scheduler_killed_workers_exit_by_themselves(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="orphans", workers=(1,), death_timeout=8)
    rec = launcher.launch(inv)
    sched = next(h for h in rec.hosts if h.role == "scheduler")
    workers = [h for h in rec.hosts if h.role == "workers"]
    assert session_members(workers)
    os.kill(sched.pid, signal.SIGKILL)
    t0 = time.monotonic()
    assert wait_until(lambda: not session_members(workers), timeout=30), "workers outlived the scheduler"
    assert time.monotonic() - t0 < 8 + 15
    assert launcher.status("orphans")["state"] == "down"
    r = cli("status", "--name", "orphans")
    assert "down" in r.stdout and "pyku-launch stop" in r.stdout
    launcher.stop("orphans")
    assert not state.state_path("orphans").exists()
    rec2 = launcher.launch(inv)  # the name works again
    launcher.stop("orphans")
    assert session_members(rec2) == []


def test_killed_worker_is_restarted_by_its_nanny(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="restart", workers=(1,))
    rec = launcher.launch(inv)
    try:
        with launcher.connect("restart") as client:
            pids = _pids(client)
            victim_addr, victim = sorted(pids.items())[0]
            os.kill(victim, signal.SIGKILL)
            assert wait_until(lambda: len(_pids(client)) == 2 and victim not in _pids(client).values(),
                         timeout=30)
            assert client.submit(lambda: 5).result() == 5
    finally:
        launcher.stop("restart")
    assert session_members(rec) == []


def test_worker_past_its_memory_limit_is_restarted_others_keep_computing(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="oom", workers=(1,),
                        host_extra={1: 'memory_limit = "300MiB"'})
    rec = launcher.launch(inv)
    try:
        with launcher.connect("oom") as client:
            pids = _pids(client)
            (hog_addr, hog_pid), (other_addr, _) = sorted(pids.items())

            def hog():
                import time as _t
                blocks = []
                for _ in range(200):  # up to 2 GiB, 10 MiB at a time
                    blocks.append(bytearray(10 * 2**20))
                    _t.sleep(0.02)
                return len(blocks)

            hogging = client.submit(hog, workers=[hog_addr], allow_other_workers=False, pure=False)
            small = client.map(lambda x: x * 2, range(50), workers=[other_addr], pure=False)
            assert client.gather(small) == [x * 2 for x in range(50)]
            assert wait_until(lambda: hog_pid not in _pids(client).values()
                         and len(_pids(client)) == 2, timeout=60), "the hog's worker was not restarted"
            hogging.cancel()
            assert client.submit(lambda: 3, pure=False).result() == 3
    finally:
        launcher.stop("oom")
    assert session_members(rec) == []


def test_stale_state_after_everything_died(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="stale", workers=(1,))
    rec = launcher.launch(inv)
    for pid in session_members(rec):
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not session_members(rec), 10)
    assert launcher.status("stale")["state"] == "down"
    r = cli(str(inv))
    assert r.returncode == 0, r.stderr
    assert "scheduler is gone" in r.stderr
    rec2 = state.read("stale")
    assert launcher.status("stale")["state"] == "running"
    launcher.stop("stale")
    assert session_members(rec2) == [] and cluster_processes("stale") == []


def test_concurrent_launches_one_wins(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="race", workers=(1,))
    procs = [subprocess.Popen([sys.executable, "-m", "launcher.cli", str(inv), "--quiet"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    try:
        winners = [r for r in results if r[0] == 0 and "already running" not in r[1]]
        assert len(winners) == 1, results
        loser = next(r for r in results if r is not winners[0])
        assert (loser[0] == 1 and "busy" in loser[2]) or (loser[0] == 0 and "already running" in loser[1])
        rec = state.read("race")
        scheds = [p for p in cluster_processes("race") if "dask_scheduler" in p]
        assert len(scheds) == 1
    finally:
        launcher.stop("race")
    assert session_members(rec) == []


def test_soak_tasks_while_workers_are_killed(sshd, state_dir, tmp_path):
    """Small graphs through connect() while a worker is SIGKILLed every 1.5 s: every result correct.

    It runs until five kills have happened (however fast the machine), with
    at least one graph computed between two kills.
    """
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="soak")
    rec = launcher.launch(inv)
    kills, graphs, graphs_at_kill = 0, 0, []
    try:
        with launcher.connect("soak") as client:
            deadline = time.monotonic() + 180
            last_kill = time.monotonic()
            while kills < 5:
                assert time.monotonic() < deadline, f"soak too slow: {graphs} graphs, {kills} kills"
                parts = client.map(lambda x, i=graphs: x * x + i, range(8), pure=False)
                total = client.submit(sum, parts, pure=False)
                assert total.result(timeout=60) == sum(x * x + graphs for x in range(8))
                graphs += 1
                if time.monotonic() - last_kill > 1.5:
                    pids = sorted(_pids(client).values())
                    if len(pids) >= 3:  # keep at least one worker per host alive
                        os.kill(pids[kills % len(pids)], signal.SIGKILL)
                        kills += 1
                        graphs_at_kill.append(graphs)
                    last_kill = time.monotonic()
        # graphs kept completing between kills, not only before the first
        assert all(b > a for a, b in zip(graphs_at_kill, graphs_at_kill[1:])), graphs_at_kill
    finally:
        launcher.stop("soak")
    assert session_members(rec) == [] and cluster_processes("soak") == []


def test_launcher_killed_outright_leaves_a_record_that_stop_cleans(sshd, state_dir, tmp_path):
    """SIGKILL (or the OOM killer) mid-launch: no rollback can run, but nothing is lost track of."""
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="sigkill")
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", str(inv)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
    for line in proc.stderr:
        if "scheduler done" in line:  # the scheduler runs, workers are on their way
            break
    proc.kill()
    proc.wait()
    proc.stderr.close()
    # Its agents on the hosts see their channel close and exit.
    assert wait_until(lambda: not agent_processes(), 15), agent_processes()
    rec = state.read("sigkill")
    assert rec is not None and rec.phase == "starting"
    assert session_members(rec)  # the scheduler (at least) is running, and known
    assert launcher.status("sigkill")["state"] == "half-launched"
    r = cli(str(inv))  # a new launch cleans up the half-launched one first
    assert r.returncode == 0, r.stderr
    assert "half-launched" in r.stderr
    assert session_members(rec) == []
    rec2 = state.read("sigkill")
    launcher.stop("sigkill")
    assert session_members(rec2) == [] and cluster_processes("sigkill") == []


def test_workers_that_exit_at_start_fail_the_launch_at_once(sshd, state_dir, tmp_path):
    # A host whose workers die as they start (here a broken dask setting in
    # its environment, which the version preflight cannot see) must not keep
    # the launch waiting for the full registration timeout.
    broken = f"{sshd.env_line()} && export DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=bogus"
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="crashing", workers=(1, 2),
                        host_extra={2: f"env = '{broken}'"}, timeout=300)
    t0 = time.monotonic()
    r = cli(str(inv))
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "127.0.0.4" in line and "exited" in line and "bogus" in line, line  # the root cause, from the log
    assert took < 120, f"the launch waited {took:.0f} s for workers that had died"
    assert state.read("crashing") is None and cluster_processes("crashing") == []
