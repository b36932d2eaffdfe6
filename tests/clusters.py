"""Helpers for tests (and bench/) that launch real clusters on the sshd test hosts.

Every "host" of the testbed is this machine, so the processes a launch
started can be checked directly in /proc, by the session ids the launcher
recorded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ssh_inventory(path: Path, testbed, *, name: str, workers=(1, 2), nworkers: int = 2,
                  protocol: str = "tls", cluster_extra: str = "", ssh_extra: str = "",
                  workers_extra: str = "", host_extra: dict[int, str] | None = None,
                  scheduler: int = 0, extra_hosts: tuple[str, ...] = (), death_timeout: float = 20) -> Path:
    """Write an inventory: scheduler on testbed host ``scheduler``, workers on ``workers``.

    Ports are 0 (any free port) so tests never collide with each other or a
    user's cluster; the PATH line makes the hosts use this interpreter.
    ``death_timeout`` also bounds a worker's start (the nanny gives up after
    it): keep it well above the start time of a loaded machine.
    """
    host_extra = host_extra or {}
    hosts = "\n".join(
        f'[[host]]\naddress = "{testbed.hosts[i].address}"\n{host_extra.get(i, "")}\n' for i in workers)
    hosts += "".join(f'[[host]]\naddress = "{a}"\n' for a in extra_hosts)
    text = textwrap.dedent(f"""\
        [cluster]
        name = "{name}"
        env = '{testbed.env_line()}'
        python = "{testbed.python()}"
        protocol = "{protocol}"
        port = 0
        dashboard_port = 0
        death_timeout = {death_timeout:g}
        timeout = 60
        {cluster_extra}

        [ssh]
        user = "{testbed.user}"
        port = {testbed.port}
        identity = "{testbed.identity}"
        known_hosts = "{testbed.known_hosts}"
        config = "{testbed.ssh_config}"
        {ssh_extra}

        [scheduler]
        address = "{testbed.hosts[scheduler].address}"

        [workers]
        nworkers = {nworkers}
        nthreads = 1
        memory_limit = "1GiB"
        {workers_extra}

        """) + hosts
    path.write_text(text)
    return path


def session_members(record: dict) -> list[int]:
    """Live pids of every process tree the launch recorded (all hosts are this machine)."""
    from launcher.agent import _members

    return [pid for h in record["hosts"] for pid in _members(h["token"])]


def cluster_processes(name: str) -> list[str]:
    """Command lines of any dask process of cluster ``name`` still running anywhere here."""
    marker = f"/.pyku-launch/{name}/"
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmd:
            out.append(f"{pid} {cmd}")
    return out


def agent_processes() -> list[str]:
    """Command lines of launcher agents still running here (one per host and command)."""
    from launcher.agent import BOOTSTRAP

    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if BOOTSTRAP in cmd:
            out.append(f"{pid} {cmd}")
    return out


def wait_until(pred, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def cli(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``pyku-launch`` as a user would, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "launcher.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=ROOT)
