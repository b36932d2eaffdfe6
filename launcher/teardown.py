"""``pyku-launch stop``: end every process of a cluster, prove it, forget it.

Workers go first (so the scheduler does not reschedule onto dying workers),
then the scheduler. On each host the agent ends the process sessions the
launch recorded, escalating from SIGTERM to SIGKILL, and returns only when
none of their processes is left; then run files go. A host that cannot be
reached is named; its workers exit by themselves once the scheduler is gone
(their death timeout). Stopping twice, or a cluster that already died, is
not an error.
"""

from __future__ import annotations

import asyncio
import time

from . import state
from .errors import LaunchError
from .inventory import HostSpec
from .progress import Reporter
from .transport import Connection, close_all, connection_key, open_connections


async def stop_sessions(conn: Connection, records: list[dict], grace: float = 3.0) -> dict:
    """Stop the recorded sessions of one host (one round trip); ``left`` lists survivors."""
    sessions = [{"pid": r["pid"], "start": r["start"]} for r in records if r.get("pid")]
    remove = [p for r in records for p in r["remove"]]
    prune = [p for r in records for p in r["prune"]]
    reply = await conn.agent("stop", timeout=grace + 30, sessions=sessions, remove=remove,
                             prune=list(dict.fromkeys(prune)), grace=grace)
    return reply


async def stop_async(name: str, *, report: Reporter, locked: bool = False) -> dict:
    """Stop cluster ``name``. Returns a summary; raises only if a process survives.

    ``locked``: the caller already holds the cluster's lock (a launch
    cleaning up a dead cluster of the same name).
    """
    if not locked:
        with state.lock(name, "pyku-launch stop"):
            return await stop_async(name, report=report, locked=True)
    try:
        rec = state.read(name)
    except state.CorruptState as e:
        report.warn(f"{e}: removed; processes it described exit by their death timeout")
        state.remove(name)
        return {"name": name, "stopped": 0, "unreachable": {}, "corrupt": True}
    if rec is None:
        report.info(f"cluster '{name}' is not running (nothing recorded): nothing to stop")
        return {"name": name, "stopped": 0, "unreachable": {}}

    t0 = time.perf_counter()
    specs = [HostSpec(**r["spec"]) for r in rec["hosts"]]
    conns, failed = await open_connections(specs)
    summary = {"name": name, "stopped": 0, "killed": 0, "unreachable": dict(failed)}
    survivors = {}
    try:
        for role in ("workers", "scheduler"):
            groups: dict[tuple, list[dict]] = {}
            for r, spec in zip(rec["hosts"], specs):
                if r["role"] == role and connection_key(spec) in conns:
                    groups.setdefault(connection_key(spec), []).append(r)
            replies = await asyncio.gather(
                *(stop_sessions(conns[k], recs) for k, recs in groups.items()), return_exceptions=True)
            for (k, recs), reply in zip(groups.items(), replies):
                if isinstance(reply, LaunchError):
                    summary["unreachable"][recs[0]["address"]] = str(reply)
                elif isinstance(reply, BaseException):
                    raise reply
                elif reply["left"]:
                    survivors[recs[0]["address"]] = reply["left"]
                else:
                    summary["stopped"] += reply["found"]
                    summary["killed"] += reply["killed"]
    finally:
        await close_all(conns)
    if survivors:
        raise LaunchError("processes survived SIGKILL, state kept: " + "; ".join(
            f"{a}: pids {p}" for a, p in survivors.items()))
    for addr, why in summary["unreachable"].items():
        report.warn(f"{why} — its processes exit by their death timeout once the scheduler is gone")
    state.remove(name)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary
