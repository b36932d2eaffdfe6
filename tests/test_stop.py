"""What README promises of `stop`, each on the real sshd hosts.

Stop finds a cluster's processes by their token, ends them (SIGTERM, then
SIGKILL), checks that none is left and removes the run files and spill
space; when it cannot prove the end (a survivor, an unreachable scheduler
host) it keeps the state, so that a later stop can finish the job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from contextlib import contextmanager

import launcher
from launcher.store import state
from launcher.remote.agent import TOKEN_VAR
from launcher.testing.clusters import cli, cluster_processes, session_members, ssh_inventory


def _workers_token(rec) -> str:
    return next(h.token for h in rec.hosts if h.role == "workers")


def test_stop_kills_what_ignores_sigterm(sshd, tmp_path):
    """A process of the cluster that ignores SIGTERM is SIGKILLed, and counted as killed."""
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="stubborn", workers=(1,), nworkers=1)
    rec = launcher.launch(inv)
    try:
        ready = tmp_path / "ignoring"

        def start_stubborn_child(path=str(ready)):
            # A task starts a helper that ignores SIGTERM (it inherits the worker's token).
            import subprocess as sp
            import sys as _sys
            import time as _t
            code = ("import signal, time, pathlib, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                    "pathlib.Path(sys.argv[1]).touch(); time.sleep(600)")
            sp.Popen([_sys.executable, "-c", code, path], start_new_session=True)
            for _ in range(200):
                if __import__("os").path.exists(path):
                    return True
                _t.sleep(0.05)
            return False

        with launcher.connect("stubborn") as client:
            assert client.submit(start_stubborn_child, pure=False).result(timeout=60)
        summary = launcher.stop("stubborn")
    except BaseException:
        launcher.stop("stubborn")
        raise
    assert summary["killed"] >= 1, summary
    assert session_members(rec) == [] and cluster_processes("stubborn") == []
    assert state.read("stubborn") is None


@contextmanager
def _respawning(token: str):
    """A process outside the cluster that keeps starting processes with the cluster's token.

    To ``stop`` they look like cluster processes that reappear however often
    they are killed: stop cannot prove the end. The spawner itself carries
    no token, so only the test ends it.
    """
    code = textwrap.dedent("""\
        import os, subprocess, sys, time
        env = dict(os.environ, **{sys.argv[1]: sys.argv[2]})
        while True:
            subprocess.Popen(["sleep", "60"], env=env)
            time.sleep(0.05)
    """)
    env = {k: v for k, v in os.environ.items() if k != TOKEN_VAR}
    proc = subprocess.Popen([sys.executable, "-c", code, TOKEN_VAR, token], env=env)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_process_that_keeps_coming_back_fails_stop_and_keeps_the_state(sshd, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="survivor", workers=(1,), nworkers=1)
    rec = launcher.launch(inv)
    try:
        with _respawning(_workers_token(rec)):
            r = cli("stop", "--name", "survivor")
            assert r.returncode == 1, r.stdout + r.stderr
            line = r.stderr.strip().splitlines()[-1]
            assert "survived" in line and "state kept" in line, line
            assert "Traceback" not in r.stderr
            assert state.read("survivor") is not None  # a later stop can finish the job
    finally:
        summary = launcher.stop("survivor")  # the spawner is gone: now it can
    assert summary["stopped"] >= 1
    assert session_members(rec) == [] and state.read("survivor") is None


@contextmanager
def _frozen(pid: int):
    """SIGSTOP a test sshd: connections to it are accepted by the kernel, never answered."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_scheduler_host_unreachable_at_stop_keeps_the_state(sshd, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="nosched", workers=(1,), nworkers=1,
                        ssh_extra="connect_timeout = 3")
    rec = launcher.launch(inv)
    try:
        with _frozen(sshd.hosts[0].pid):  # 127.0.0.2, the scheduler's host
            r = cli("stop", "--name", "nosched")
        assert r.returncode == 1, r.stdout + r.stderr
        line = r.stderr.strip().splitlines()[-1]
        assert "127.0.0.2" in line and "state kept" in line, line
        assert state.read("nosched") is not None
        # The scheduler still runs: nothing else would ever stop it.
        sched = next(h for h in rec.hosts if h.role == "scheduler")
        from launcher.remote.agent import _members
        assert _members(sched.token)
    finally:
        r = cli("stop", "--name", "nosched")
    assert r.returncode == 0, r.stderr
    assert session_members(rec) == [] and state.read("nosched") is None


def test_stop_removes_the_workers_spill_space(sshd, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="spill", workers=(1,), nworkers=1)
    rec = launcher.launch(inv)
    try:
        with launcher.connect("spill") as client:
            dirs = list(client.run(lambda dask_worker: dask_worker.local_directory).values())
        assert dirs and all(os.path.isdir(d) for d in dirs)
        # default spill space: local disk, not the (shared) home with the run files
        assert not any(d.startswith(os.path.expanduser("~")) for d in dirs), dirs
    finally:
        launcher.stop("spill")
    assert session_members(rec) == []
    assert not any(os.path.exists(d) for d in dirs), dirs
