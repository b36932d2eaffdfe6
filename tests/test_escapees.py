"""Processes a task starts outside the cluster's reach (own session, fresh environment) end with stop.

What is caught: every descendant of the cluster's processes, found by walking the
process tree before the first signal, including orphans of a double fork (the
leader of each process tree is a child subreaper, so they stay in the tree).
What is not: see README, "What stop cannot find".
"""

from __future__ import annotations

import os
import signal

import launcher
from launcher.testing.clusters import session_members, ssh_inventory, wait_until


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_processes_a_task_detaches_end_with_stop(sshd, state_dir, tmp_path):
    def _child_in_new_session() -> int:
        """A task's helper that leaves the cluster: new session, no environment (no token)."""
        import subprocess

        return subprocess.Popen(["sleep", "300"], env={}, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid

    def _daemon() -> int:
        """A task's helper that daemonizes: double fork, new session, no environment; its parent exits."""
        import subprocess

        out = subprocess.run(["/bin/sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"], env={},
                             start_new_session=True, capture_output=True, text=True)
        return int(out.stdout)

    name = "escapees"
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name=name, workers=(1,))
    rec = launcher.launch(inv)
    pids = []
    try:
        with launcher.connect(name) as client:
            pids = [client.submit(_child_in_new_session, pure=False).result(),
                    client.submit(_daemon, pure=False).result()]
        assert all(_alive(p) for p in pids)
        for pid in pids:  # no token: the cluster's own record does not know them
            with open(f"/proc/{pid}/environ", "rb") as f:
                assert b"PYKU_LAUNCH_TOKEN" not in f.read()
        launcher.stop(name)
        assert wait_until(lambda: not any(_alive(p) for p in pids), 5), [p for p in pids if _alive(p)]
    finally:
        for pid in pids:  # what this test started, if stop missed it
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if launcher.status(name)["state"] != "not launched":
            launcher.stop(name)
    assert session_members(rec) == []
