"""``pyku-launch stop``: end every process of a cluster, prove it, forget it.

Every tree is ended at once, the scheduler's with the workers'. (Workers
used to go first, so that the scheduler would not reschedule onto dying
workers: but a scheduler that gets SIGTERM closes, and tells every worker
to close, so nothing is rescheduled; waiting for the workers' hosts first
only made a stop take two host round trips and two shutdowns one after the
other.) On each host the processes carrying the launch's tokens are ended,
escalating from SIGTERM to SIGKILL, and the step returns only when none is
left; then run files go. That is a POSIX sh script run in the SSH session
directly (launcher/remote/quickstop.py), and the agent's ``stop`` only on a
host where the script leaves it (a survivor of SIGTERM, a process without
the token, a host the script cannot work on). A worker host that cannot be
reached is named: its workers exit by themselves once the scheduler is gone
(their death timeout). A scheduler host that cannot be reached keeps the state,
since nothing else would ever stop that scheduler. Stopping twice, or a
cluster that already died, is not an error.
"""

from __future__ import annotations

import asyncio
import time

from launcher.store import state, stopped
from launcher.verbs import self_stop
from launcher.errors import LaunchError, by_cause
from launcher.config.inventory import Inventory
from launcher.ui.progress import Reporter
from launcher.sources import registry
from launcher.sources.base import Context, Stopped
from launcher.sources.registry import by_source
from launcher.sources.ssh import sweep_hosts
from launcher.store.records import HostRecord
from launcher.remote.transport import StepHook


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
    summary = {"name": name, "stopped": 0, "killed": 0, "unreachable": {}}
    async with Context(name, on_step=on_step) as ctx:
        # Most hosts need no agent (quickstop), and a tree the scheduler can have its nannies stop
        # (launcher/remote/relay.py) no connection: its host is connected only if the relay fails.
        await ctx.open([h.spec for h in rec.hosts if not _relayed(h)], agents=False)
        why = await self_stop.read(rec, ctx.conns) if not ctx.failed else None  # before its run files go
        # Every tree at once, the scheduler's too: see the module's docstring.
        done = await stop_role(ctx, rec.hosts, settle=settle, keep_logs=not purge)
    summary["stopped"], summary["killed"], summary["unreachable"] = done.found, done.killed, done.unreachable
    if done.left:
        raise LaunchError("processes survived SIGKILL, state kept: " + "; ".join(
            f"{a}: pids {p}" for a, p in done.left.items()))
    gone = {h.token for h in done.gone}  # by tree: a pool's login host or a worker host may share its address
    if any(h.token not in gone for h in rec.hosts if h.role == "scheduler"):
        raise LaunchError("the scheduler host could not be reached, state kept (run stop again when it "
                          "answers): " + by_cause(summary["unreachable"]))
    for lost in summary["unreachable"].values():
        report.warn(f"{lost} — its workers exit by their death timeout now that the scheduler is gone")
    if purge:
        stopped.forget(name)
    else:
        stopped.keep(rec)
    state.remove(name)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    if why:
        summary["stopped_itself"] = why
    return summary


def _relayed(h: HostRecord) -> bool:
    return h.role == "workers" and h.source == "ssh" and bool(h.extra.get("relay"))


async def stop_role(ctx: Context, recs: list[HostRecord], *, remaining: list[HostRecord] = (),
                    settle: float = 0.0, keep_logs: bool = False) -> Stopped:
    """Stop these trees, each through its source, all at once; what was proven gone and what was not.

    ``keep_logs``: their run directories keep the logs (``pyku-launch stop``; a rollback keeps nothing).
    """
    groups = by_source(recs)
    results = await asyncio.gather(*(source.stop(ctx, group, remaining=remaining, settle=settle,
                                                 keep_logs=keep_logs) for source, group in groups))
    done = Stopped()
    for r in results:
        done.add(r)
    return done


async def purge_logs(name: str, report: Reporter, on_step: StepHook | None = None) -> dict:
    """``stop --purge`` of a stopped cluster: remove the logs its last stop left on every host."""
    recs = stopped.hosts(name) or []
    async with Context(name, on_step=on_step) as ctx:
        await ctx.open([h.spec for h in recs], agents=False)
        reached = len(ctx.conns)
        done = await stop_role(ctx, recs)  # nothing runs any more: the trees' run directories go
    if done.unreachable:
        raise LaunchError("logs kept on hosts not reached (run stop --purge again): " + by_cause(done.unreachable))
    stopped.forget(name)
    report.info(f"cluster '{name}' was stopped: its logs removed from {reached} host(s)")
    return {"name": name, "stopped": 0, "killed": 0, "unreachable": {}, "purged": True}


async def sweep_async(inv: Inventory, *, report: Reporter, on_step: StepHook | None = None) -> dict:
    """End cluster ``inv.name`` on every host of the inventory, without its record.

    For a record that is lost or damaged (:class:`~launcher.store.state.CorruptState`):
    each worker source sweeps its members (:meth:`WorkerSource.sweep`), then
    the scheduler's host is swept (:func:`launcher.sources.ssh.sweep_hosts`:
    the agent ends every process whose token starts with the cluster's name
    and this state directory's scope, and their descendants, then removes
    the cluster's run and default spill directories, unless a namesake
    launched from another state directory runs there). The record goes only
    when every host was reached and nothing is left.
    """
    name = inv.name
    with state.lock(name, "stop"):
        t0 = time.perf_counter()
        sources = registry.from_inventory(inv)
        async with Context(name, inv.step_timeout, on_step) as ctx:
            await ctx.open([inv.scheduler, *registry.members(inv)])
            done = Stopped()
            for r in await asyncio.gather(*(source.sweep(ctx) for source in sources)):  # workers first
                done.add(r)
            done.add(await sweep_hosts(ctx, [inv.scheduler]))  # its host's workers are gone by now
            reached = len(ctx.conns)
        problems = dict(done.unreachable) | {a: f"processes {p} survived SIGKILL" for a, p in done.left.items()}
        summary = {"name": name, "stopped": done.found, "killed": done.killed,
                   "unreachable": dict(done.unreachable), "swept": True}
        for address in dict.fromkeys(done.kept):
            report.warn(f"{address}: run files of '{name}' kept: a cluster of that name "
                        "launched from another state directory runs there")
        if problems:
            raise LaunchError(f"sweep of cluster '{name}' incomplete, state kept: " + by_cause(problems))
        state.remove(name)
        summary["seconds"] = round(time.perf_counter() - t0, 3)
        report.info(f"cluster '{name}' swept on {reached} host(s) of {inv.path}")
        return summary
