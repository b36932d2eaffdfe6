"""``pyku-launch stop``: end every process of a cluster, prove it, forget it.

Workers go first (so the scheduler does not reschedule onto dying workers),
then the scheduler. On each host the agent ends the processes carrying the
launch's tokens, escalating from SIGTERM to SIGKILL, and returns only when
none is left; then run files go. A worker host that cannot be reached is
named: its workers exit by themselves once the scheduler is gone (their
death timeout). A scheduler host that cannot be reached keeps the state,
since nothing else would ever stop that scheduler. Stopping twice, or a
cluster that already died, is not an error.
"""

from __future__ import annotations

import asyncio
import time

from . import commands, state
from .errors import LaunchError, by_cause
from .inventory import Inventory
from .progress import Reporter
from .transport import Connection, close_all, connection_key, open_connections


async def stop_trees(conn: Connection, records: list[dict], timeout: float = 60.0, grace: float = 3.0,
                     settle: float = 0.0) -> dict:
    """Stop the recorded process trees of one host (one round trip); ``left`` lists survivors.

    ``settle``: look again after that many seconds (a half-launched cluster:
    its dead launcher's agents may still be starting processes).
    """
    return await conn.agent(
        "stop", timeout=timeout + grace + settle, tokens=[r["token"] for r in records], settle=settle,
        remove=[p for r in records for p in r["remove"]],
        prune=list(dict.fromkeys(p for r in records for p in r["prune"])), grace=grace)


async def stop_async(name: str, *, report: Reporter, locked: bool = False) -> dict:
    """Stop cluster ``name``. Returns a summary; raises if anything may still run.

    ``locked``: the caller already holds the cluster's lock (a launch
    cleaning up a dead cluster of the same name).
    """
    if not locked:
        with state.lock(name, "stop"):
            return await stop_async(name, report=report, locked=True)
    rec = state.read(name)  # CorruptState: kept, and the error says how to sweep
    if rec is None:
        report.info(f"cluster '{name}' is not running (nothing recorded): nothing to stop")
        return {"name": name, "stopped": 0, "killed": 0, "unreachable": {}}

    t0 = time.perf_counter()
    settle = 0.0 if rec.get("phase") == "running" else 2.0
    specs = state.host_specs(rec)
    conns, failed = await open_connections(specs)
    summary = {"name": name, "stopped": 0, "killed": 0, "unreachable": {}}
    survivors, unstopped_roles = {}, set()
    try:
        for role in ("workers", "scheduler"):
            groups: dict[tuple, list[dict]] = {}
            for r, spec in zip(rec["hosts"], specs):
                if r["role"] != role:
                    continue
                key = connection_key(spec)
                if key in failed:
                    summary["unreachable"][r["address"]] = failed[key]
                    unstopped_roles.add(role)
                else:
                    groups.setdefault(key, []).append(r)
            replies = await asyncio.gather(
                *(stop_trees(conns[k], recs, settle=settle) for k, recs in groups.items()),
                return_exceptions=True)
            for (k, recs), reply in zip(groups.items(), replies):
                if isinstance(reply, LaunchError):
                    summary["unreachable"][recs[0]["address"]] = str(reply)
                    unstopped_roles.add(role)
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
    if "scheduler" in unstopped_roles:
        raise LaunchError("the scheduler host could not be reached, state kept (run stop again when it "
                          "answers): " + by_cause(summary["unreachable"]))
    for why in summary["unreachable"].values():
        report.warn(f"{why} — its workers exit by their death timeout now that the scheduler is gone")
    state.remove(name)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


async def sweep_async(inv: Inventory, *, report: Reporter) -> dict:
    """End cluster ``inv.name`` on every host of the inventory, without its record.

    For a record that is lost or damaged (:class:`~launcher.state.CorruptState`):
    on each host the agent ends every process whose token starts with the
    cluster's name and this state directory's scope (see
    :func:`launcher.state.scope`), and their descendants, then removes the
    cluster's run and default spill directories. The record goes only when
    every host was reached and nothing is left.
    """
    with state.lock(inv.name, "stop"):
        t0 = time.perf_counter()
        specs = [inv.scheduler, *inv.hosts]
        conns, failed = await open_connections(specs)
        name = inv.name
        try:
            keys = list(conns)
            replies = await asyncio.gather(*(conns[k].agent(
                "stop", timeout=60 + 3, prefixes=[f"{name}.{state.scope()}."], grace=3.0,
                remove=[f"{commands.RUN_ROOT}/{name}", f"{commands.SPILL_ROOT}/{name}"],
                prune=[commands.RUN_ROOT, commands.SPILL_ROOT], keep_if_running=f"{name}.")
                for k in keys), return_exceptions=True)
        finally:
            await close_all(conns)
        address = {connection_key(s): s.address for s in reversed(specs)}
        unreachable = {address[k]: why for k, why in failed.items()}
        summary = {"name": name, "stopped": 0, "killed": 0, "unreachable": unreachable, "swept": True}
        survivors = {}
        for k, reply in zip(keys, replies):
            if isinstance(reply, LaunchError):
                unreachable[address[k]] = str(reply)
            elif isinstance(reply, BaseException):
                raise reply
            elif reply["left"]:
                survivors[address[k]] = reply["left"]
            else:
                summary["stopped"] += reply["found"]
                summary["killed"] += reply["killed"]
                if reply.get("kept"):
                    report.warn(f"{address[k]}: run files of '{name}' kept: a cluster of that name "
                                "launched from another state directory runs there")
        if survivors or unreachable:
            raise LaunchError(f"sweep of cluster '{name}' incomplete, state kept: " + by_cause(
                {**unreachable, **{a: f"processes {p} survived SIGKILL" for a, p in survivors.items()}}))
        state.remove(name)
        summary["seconds"] = round(time.perf_counter() - t0, 3)
        report.info(f"cluster '{name}' swept on {len(keys)} host(s) of {inv.path}")
        return summary
