"""Did the cluster stop itself (``idle_timeout``, ``max_lifetime``), and why: for ``status`` and ``stop``.

The scheduler's preload (launcher/remote/lifetime.py) writes the reason to
``stopped.log`` in its run directory before it closes; its tree's leader
keeps the logs (launcher/remote/leader.py), so the reason survives on the
scheduler's host until ``stop`` (or the next launch) removes the run
directory. It is read with the agent's ``logs`` step, only for a cluster
launched with one of the limits and, in ``status``, only when the scheduler
does not answer.
"""

from __future__ import annotations

import re

from launcher.errors import LaunchError
from launcher.remote.lifetime import STOPPED_LOG
from launcher.remote.protocol import Logs
from launcher.remote.transport import close_all, connection_key, open_connections
from launcher.store.records import ClusterRecord

_LINE = re.compile(r"^(\S+ \S+) stopped: (.*)$")


def possible(rec: ClusterRecord) -> bool:
    """Whether the cluster was launched to stop itself."""
    return bool(rec.settings.get("idle_timeout") or rec.settings.get("max_lifetime"))


def parse(lines: list[str]) -> dict | None:
    """``{"reason": ..., "at": ...}`` from the lines of ``stopped.log``, None if it says nothing."""
    for line in reversed(lines):
        m = _LINE.match(line.strip())
        if m:
            return {"at": m[1], "reason": m[2]}
    return None


async def read(rec: ClusterRecord, conns=None, timeout: float = 30) -> dict | None:
    """The reason the cluster stopped itself, from its scheduler's host (None: it did not, or unknown).

    ``conns``: open connections to use (those of a ``stop``); else one is opened.
    """
    srec = rec.scheduler_host
    if srec is None or not possible(rec):
        return None
    own = conns is None
    if own:
        conns, failed = await open_connections([srec.spec])
        if failed:
            return None
    try:
        conn = conns.get(connection_key(srec.spec))
        if conn is None:
            return None
        reply = await conn.request(Logs(srec.rundir, 5), timeout)
        return parse(reply.logs.get(STOPPED_LOG, []))
    except LaunchError:
        return None
    finally:
        if own:
            await close_all(conns)


def words(why: dict) -> str:
    """``stopped: idle for 2 h (last task 14:02)``."""
    return f"stopped: {why['reason']}"
