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

from launcher.remote import commands
from launcher.store import state, stopped
from launcher.verbs import self_stop
from launcher.errors import LaunchError, by_cause
from launcher.config.inventory import Inventory
from launcher.ui.progress import Reporter
from launcher.remote.protocol import Stop, StopReply
from launcher.store.records import ClusterRecord, HostRecord
from launcher.remote.transport import Connection, StepHook, close_all, connection_key, open_connections


async def stop_trees(conn: Connection, records: list[HostRecord], timeout: float = 60.0, grace: float = 3.0,
                     settle: float = 0.0, keep_logs: bool = False) -> StopReply:
    """Stop the recorded process trees of one host (one round trip); ``left`` lists survivors.

    ``settle``: look again after that many seconds (a half-launched cluster:
    its dead launcher's agents may still be starting processes).
    ``keep_logs``: the run directories keep their logs (``pyku-launch stop``).
    """
    kept = {r.rundir for r in records} if keep_logs else set()
    request = Stop(tokens=[r.token for r in records], remove=[p for r in records for p in r.remove if p not in kept],
                   prune=list(dict.fromkeys(p for r in records for p in r.prune)), grace=grace, settle=settle,
                   empty=sorted(kept), keep=commands.KEPT_FILES if kept else [])
    return await conn.request(request, timeout + grace + settle)


async def stop_async(name: str, *, report: Reporter, locked: bool = False,
                     on_step: StepHook | None = None, purge: bool = False) -> dict:
    """Stop cluster ``name``. Returns a summary; raises if anything may still run.

    ``locked``: the caller already holds the cluster's lock (a launch
    cleaning up a dead cluster of the same name). The logs stay on the
    hosts (``pyku-launch logs`` reads them, launcher/store/stopped.py), unless ``purge``.
    """
    if not locked:
        with state.lock(name, "stop"):
            return await stop_async(name, report=report, locked=True, on_step=on_step, purge=purge)
    rec = state.read(name)  # CorruptState: kept, and the error says how to sweep
    if rec is None:
        if purge and stopped.hosts(name):
            return await purge_logs(name, report, on_step)
        report.info(f"cluster '{name}' is not running (nothing recorded): nothing to stop")
        return {"name": name, "stopped": 0, "killed": 0, "unreachable": {}}

    t0 = time.perf_counter()
    settle = 0.0 if rec.running else 2.0
    conns, failed = await open_connections([h.spec for h in rec.hosts], on_step)
    summary = {"name": name, "stopped": 0, "killed": 0, "unreachable": {}}
    survivors, unstopped_roles = {}, set()
    try:
        why = await self_stop.read(rec, conns) if not failed else None  # before its run files go
        for role in ("workers", "scheduler"):
            if not await _stop_role(rec, role, conns, failed, settle, summary, survivors, keep_logs=not purge):
                unstopped_roles.add(role)
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
    if purge:
        stopped.forget(name)
    else:
        stopped.keep(rec)
    state.remove(name)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    if why:
        summary["stopped_itself"] = why
    return summary


async def _stop_role(rec: ClusterRecord, role: str, conns, failed, settle: float, summary: dict,
                     survivors: dict, keep_logs: bool = False) -> bool:
    """Stop every tree of one role (one step per host, all at once); False if a host was unreachable.

    Counts go to ``summary``, unreachable hosts to ``summary["unreachable"]``,
    pids that survived SIGKILL to ``survivors`` (by address).
    """
    reached = True
    groups: dict[tuple, list[HostRecord]] = {}
    for r in rec.hosts:
        if r.role != role:
            continue
        key = connection_key(r.spec)
        if key in failed:
            summary["unreachable"][r.address] = str(failed[key])
            reached = False
        else:
            groups.setdefault(key, []).append(r)
    replies = await asyncio.gather(
        *(stop_trees(conns[k], recs, settle=settle, keep_logs=keep_logs) for k, recs in groups.items()),
        return_exceptions=True)
    for recs, reply in zip(groups.values(), replies):
        if isinstance(reply, LaunchError):
            summary["unreachable"][recs[0].address] = str(reply)
            reached = False
        elif isinstance(reply, BaseException):
            raise reply
        elif reply.left:
            survivors[recs[0].address] = reply.left
        else:
            summary["stopped"] += reply.found
            summary["killed"] += reply.killed
    return reached


async def purge_logs(name: str, report: Reporter, on_step: StepHook | None = None) -> dict:
    """``stop --purge`` of a stopped cluster: remove the logs its last stop left on every host."""
    recs = stopped.hosts(name) or []
    conns, failed = await open_connections([h.spec for h in recs], on_step)
    try:
        groups: dict[tuple, list[HostRecord]] = {}
        for r in recs:
            groups.setdefault(connection_key(r.spec), []).append(r)
        keys = [k for k in groups if k in conns]
        await asyncio.gather(*(stop_trees(conns[k], groups[k]) for k in keys))
    finally:
        await close_all(conns)
    if failed:
        raise LaunchError("logs kept on hosts not reached (run stop --purge again): "
                          + by_cause({groups[k][0].address: e.message for k, e in failed.items()}))
    stopped.forget(name)
    report.info(f"cluster '{name}' was stopped: its logs removed from {len(keys)} host(s)")
    return {"name": name, "stopped": 0, "killed": 0, "unreachable": {}, "purged": True}


async def sweep_async(inv: Inventory, *, report: Reporter, on_step: StepHook | None = None) -> dict:
    """End cluster ``inv.name`` on every host of the inventory, without its record.

    For a record that is lost or damaged (:class:`~launcher.state.CorruptState`):
    on each host the agent ends every process whose token starts with the
    cluster's name and this state directory's scope (see
    :func:`launcher.state.scope`), and their descendants, then removes the
    cluster's run and default spill directories (unless a namesake launched
    from another state directory runs there). The record goes only when
    every host was reached and nothing is left.
    """
    name = inv.name
    request = Stop(tokens=[], prefixes=[f"{name}.{state.scope()}."], keep_if_running=f"{name}.",
                   remove=[f"{commands.RUN_ROOT}/{name}", f"{commands.SPILL_ROOT}/{name}"],
                   prune=[commands.RUN_ROOT, commands.SPILL_ROOT])
    with state.lock(name, "stop"):
        t0 = time.perf_counter()
        specs = [inv.scheduler, *inv.hosts]
        conns, failed = await open_connections(specs, on_step)
        keys = list(conns)
        try:
            replies = await asyncio.gather(*(conns[k].request(request, inv.step_timeout + request.grace)
                                             for k in keys), return_exceptions=True)
        finally:
            await close_all(conns)
        address = {connection_key(s): s.address for s in reversed(specs)}
        problems = {address[k]: e.message for k, e in failed.items()}
        summary = {"name": name, "stopped": 0, "killed": 0, "unreachable": dict(problems), "swept": True}
        for k, reply in zip(keys, replies):
            if isinstance(reply, LaunchError):
                problems[address[k]] = summary["unreachable"][address[k]] = reply.message
            elif isinstance(reply, BaseException):
                raise reply
            elif reply.left:
                problems[address[k]] = f"processes {reply.left} survived SIGKILL"
            else:
                summary["stopped"] += reply.found
                summary["killed"] += reply.killed
                if reply.kept:
                    report.warn(f"{address[k]}: run files of '{name}' kept: a cluster of that name "
                                "launched from another state directory runs there")
        if problems:
            raise LaunchError(f"sweep of cluster '{name}' incomplete, state kept: " + by_cause(problems))
        state.remove(name)
        summary["seconds"] = round(time.perf_counter() - t0, 3)
        report.info(f"cluster '{name}' swept on {len(keys)} host(s) of {inv.path}")
        return summary
