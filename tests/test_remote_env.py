"""The inventory's ``env`` runs before the agent however its author ended it."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from launcher.errors import LaunchError
from launcher.config.inventory import load_inventory
from launcher.remote.transport import close_all, open_connections
from launcher.testing.clusters import ROOT

MODULE_BLOCK = """\
module() { export LOADED="${LOADED:+$LOADED }$2"; }   # what `module load` does, in short
module load netcdf
module load cdo
"""


def _agent_environment(env: str) -> dict[str, str]:
    """The environment of an agent started with this ``env`` on the local transport."""
    spec = dataclasses.replace(load_inventory(ROOT / "hosts" / "localhost.toml").scheduler, env=env)

    async def go():
        conns, failed = await open_connections([spec])
        assert not failed
        conn = next(iter(conns.values()))
        try:
            await conn.agent("status", tokens=[], timeout=30)  # the agent runs and answers
            with open(f"/proc/{conn._proc.pid}/environ", "rb") as f:
                pairs = [p.decode().partition("=") for p in f.read().split(b"\0") if p]
            return {k: v for k, _, v in pairs}
        finally:
            await close_all(conns)

    return asyncio.run(go())


@pytest.mark.parametrize("env", [
    "export SITE=dwd  # site defaults",
    "export SITE=dwd;",
    "export SITE=dwd &",  # a background job, then nothing: the export is lost, the agent must still run
    "export SITE=dwd\n",
    "export SITE=dwd\nexport LATE=1 # comment\n\n",
], ids=["comment", "semicolon", "ampersand", "newline", "multi-line"])
def test_env_ending_in_a_comment_separator_or_newline_still_runs_the_agent(env):
    got = _agent_environment(env)
    if not env.rstrip().endswith("&"):
        assert got["SITE"] == "dwd"


def test_a_module_load_block_runs_line_by_line():
    assert _agent_environment(MODULE_BLOCK)["LOADED"] == "netcdf cdo"


def test_a_failing_env_still_stops_the_agent_and_is_named():
    with pytest.raises(LaunchError, match="source /nonexistent/env.src"):
        _agent_environment("source /nonexistent/env.src")
