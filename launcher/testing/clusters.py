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

from . import ROOT, isolation


def ssh_inventory(path: Path, testbed, *, name: str, workers=(1, 2), nworkers: int = 2,
                  protocol: str = "tls", cluster_extra: str = "", ssh_extra: str = "",
                  workers_extra: str = "", host_extra: dict[int, str] | None = None, scheduler_extra: str = "",
                  scheduler: int = 0, extra_hosts: tuple[str, ...] = (), death_timeout: float = 20,
                  timeout: float = 60, memory_limit: str = "1GiB", known_hosts: str | None = None,
                  ports: dict[int, int] | None = None, env: str | None = None, python: str | None = None) -> Path:
    """Write an inventory: scheduler on testbed host ``scheduler``, workers on ``workers``.

    Ports are 0 (any free port) so tests never collide with each other or a
    user's cluster; the PATH line makes the hosts use this interpreter.
    ``death_timeout`` also bounds a worker's start (the nanny gives up after
    it): keep it well above the start time of a loaded machine. ``ports``
    maps a host index to the SSH port to use for it (e.g. a delaying proxy in
    front of its sshd); ``known_hosts`` replaces the testbed's. ``env`` and
    ``python`` replace the testbed's (this checkout first on the hosts'
    PYTHONPATH, this interpreter), e.g. for a venv of a packaging test.
    """
    host_extra, ports = host_extra or {}, ports or {}

    def own(i: int) -> str:
        return "\n".join(x for x in (f"port = {ports[i]}" if i in ports else "", host_extra.get(i, "")) if x)

    hosts = "\n".join(f'[[host]]\naddress = "{testbed.hosts[i].address}"\n{own(i)}\n' for i in workers)
    hosts += "".join(f'[[host]]\naddress = "{a}"\n' for a in extra_hosts)
    text = textwrap.dedent(f"""\
        [cluster]
        name = "{name}"
        env = '{env or testbed.env_line()}'
        python = "{python or testbed.python()}"
        protocol = "{protocol}"
        port = 0
        dashboard_port = 0
        death_timeout = {death_timeout:g}
        timeout = {timeout:g}
        {cluster_extra}

        [ssh]
        user = "{testbed.user}"
        port = {testbed.port}
        identity = "{testbed.identity}"
        known_hosts = "{known_hosts or testbed.known_hosts}"
        config = "{testbed.ssh_config}"
        {ssh_extra}

        [scheduler]
        address = "{testbed.hosts[scheduler].address}"
        {f"port = {ports[scheduler]}" if scheduler in ports else ""}
        {scheduler_extra}

        [workers]
        nworkers = {nworkers}
        nthreads = 1
        memory_limit = "{memory_limit}"
        {workers_extra}

        """) + hosts
    path.write_text(text)
    return path


def session_members(record) -> list[int]:
    """Live pids of every process tree the launch recorded (all hosts are this machine).

    ``record``: a :class:`launcher.records.ClusterRecord`, or a list of its host records.
    """
    from launcher.remote.agent import _members

    hosts = record if isinstance(record, list) else record.hosts
    return [pid for h in hosts for pid in _members(h.token)]


def cluster_processes(name: str) -> list[str]:
    """Command lines of this test's processes of cluster ``name`` still running here.

    A cluster's processes run in (or name files in) its run directory
    ``~/.pyku-launch/<name>/``; only processes carrying this test's mark
    are looked at (:mod:`launcher.testing.isolation`), never anyone else's.
    """
    marker = os.path.join(os.path.expanduser("~/.pyku-launch"), name) + "/"
    found = []
    for pid, cmd in isolation.marked_processes():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd") + "/"
        except OSError:
            cwd = ""
        if marker in cmd or cwd.startswith(marker):
            found.append(f"{pid} {cmd}")
    return found


def agent_processes() -> list[str]:
    """Command lines of this test's launcher agents still running (one per host and command)."""
    from launcher.remote.agent import BOOTSTRAP

    return [f"{pid} {cmd}" for pid, cmd in isolation.marked_processes() if BOOTSTRAP in cmd]


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


def slow_python(directory: Path, seconds: float) -> str:
    """An interpreter for a host whose workers take ``seconds`` longer to start (written in ``directory``)."""
    path = Path(directory) / "slow-python"
    path.write_text(f'#!/bin/sh\ncase "$*" in *--nworkers*) sleep {seconds:g};; esac\n'
                    f'exec {sys.executable} "$@"\n')
    path.chmod(0o755)
    return str(path)
