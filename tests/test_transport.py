"""The agent channel itself, on the local transport (the SSH one differs only in how the process starts)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
import uuid

import pytest

from launcher.remote.agent import _members
from launcher.errors import LaunchError
from launcher.config.inventory import HostSpec, load_inventory
from launcher.remote.transport import close_all, open_connections
from launcher.testing.clusters import ROOT, agent_processes, wait_until


def _local(**changes) -> HostSpec:
    """The shipped localhost inventory's host (transport = "local"), with changes."""
    return dataclasses.replace(load_inventory(ROOT / "hosts" / "localhost.toml").scheduler, **changes)


def _sleeper(tmp_path, token: str, seconds: float) -> dict:
    """A spawn step that waits ``seconds`` for a file that never comes."""
    return {"rundir": str(tmp_path / "run"), "argv": ["sleep", "30"], "env": {}, "log": "sleep.log",
            "token": token, "wait_file": "never", "wait_timeout": seconds}


async def _spawned(token: str, timeout: float = 30) -> None:
    """Until the spawn step has started its process (found by its token)."""
    deadline = time.monotonic() + timeout
    while not _members(token):
        assert time.monotonic() < deadline, "the spawn step did not start its process"
        await asyncio.sleep(0.05)


async def _stop(token: str) -> None:
    conns, _ = await open_connections([_local()])
    try:
        reply = await next(iter(conns.values())).agent("stop", tokens=[token], grace=1)
        assert reply["left"] == []
    finally:
        await close_all(conns)


def test_a_slow_step_does_not_hold_up_the_next(tmp_path):
    token = uuid.uuid4().hex

    async def main():
        conns, failed = await open_connections([_local()])
        assert not failed
        conn = next(iter(conns.values()))
        try:
            slow = asyncio.ensure_future(conn.agent("spawn", **_sleeper(tmp_path, token, 3)))
            await _spawned(token)  # the spawn is waiting for its file now
            t0 = time.monotonic()
            status = await conn.agent("status", tokens=[token])
            quick = time.monotonic() - t0
            reply = await slow
            return status, quick, reply
        finally:
            await close_all(conns)
            await _stop(token)

    status, quick, reply = asyncio.run(main())
    assert status["alive"][token] == 1
    assert quick < 1.5, f"status waited {quick:.1f} s behind the slow spawn"
    assert "did not write never" in reply["error"]
    assert wait_until(lambda: not agent_processes(), 10), agent_processes()


def test_an_agent_that_dies_fails_its_waiting_step_at_once(tmp_path):
    token = uuid.uuid4().hex

    async def main():
        conns, _ = await open_connections([_local()])
        conn = next(iter(conns.values()))
        try:
            slow = asyncio.ensure_future(conn.agent("spawn", timeout=60, **_sleeper(tmp_path, token, 30)))
            await _spawned(token)  # the agent said hello and is in the spawn step
            [agent] = agent_processes()
            os.kill(int(agent.split()[0]), signal.SIGKILL)
            t0 = time.monotonic()
            with pytest.raises(LaunchError) as e:
                await slow
            took = time.monotonic() - t0
            with pytest.raises(LaunchError):  # and so does any later step, at once
                await conn.agent("status", tokens=[token])
            return str(e.value), took
        finally:
            await close_all(conns)
            await _stop(token)  # the sleeper it had started is found by its token

    message, took = asyncio.run(main())
    assert message.startswith("127.0.0.1: ") and "agent there ended" in message, message
    assert "fix env" not in message  # it had started: not an environment problem
    assert took < 5, f"the step noticed its agent's death after {took:.1f} s"


def test_a_broken_env_names_the_host_and_what_to_fix():
    async def main():
        conns, _ = await open_connections([_local(env="source /nonexistent/env.src")])
        try:
            with pytest.raises(LaunchError) as e:
                await next(iter(conns.values())).agent("status", tokens=[], timeout=30)
            return str(e.value)
        finally:
            await close_all(conns)

    message = asyncio.run(main())
    assert message.startswith("127.0.0.1: ") and "/nonexistent/env.src" in message
    assert "fix env/python for this host in the inventory" in message


def test_without_a_login_shell_the_login_files_are_not_read(tmp_path, monkeypatch):
    # login_shell = false: the agent starts in `bash -c` after env, as `ssh host cmd` would;
    # a login shell (the default) reads ~/.profile, where HPC sites define `module`.
    (tmp_path / ".profile").write_text("export PYKU_TEST_LOGIN=read\n")
    monkeypatch.setenv("HOME", str(tmp_path))

    async def seen(spec):
        conns, _ = await open_connections([spec])
        try:
            token = f"login-{uuid.uuid4().hex}"
            run = tmp_path / "run"
            await next(iter(conns.values())).agent(
                "spawn", rundir=str(run), log="env.log", token=token, env={},
                argv=["sh", "-c", "echo ${PYKU_TEST_LOGIN:-unread} > seen.txt"], wait_file="seen.txt",
                wait_timeout=30)
            return (run / "seen.txt").read_text().strip()
        finally:
            await close_all(conns)

    assert asyncio.run(seen(_local())) == "read"
    assert asyncio.run(seen(_local(login_shell=False))) == "unread"
