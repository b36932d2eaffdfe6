"""The Python API behind every command: plain functions, synchronous on the outside.

Each runs its asyncio work with SIGTERM (and Ctrl-C) turned into a
cancellation, so a launch that is interrupted rolls back like one that
failed, then raises :class:`Interrupted`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from os import PathLike

from launcher.verbs import preflight
from launcher.remote import commands
from launcher.store import state, stopped
from launcher.config import validate as v
from launcher.reach.client import NothingLaunched, resolve_name
from launcher.errors import InventoryError, LaunchError, by_cause
from launcher.config.inventory import Inventory, load_inventory
from launcher.ui.progress import Reporter
from launcher.remote.protocol import Logs
from launcher.store.records import ClusterRecord
from launcher.verbs.launch import launch_async
from launcher.verbs.status import not_launched, status_async
from launcher.verbs.stop import stop_async, sweep_async
from launcher.remote.transport import StepHook, close_all, connection_key, open_connections
from launcher.sources import registry
from launcher.sources.base import Context


class Interrupted(LaunchError):
    """SIGTERM, SIGHUP or Ctrl-C: the work was cancelled (a launch rolled back)."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum


def run(coro):
    """``asyncio.run`` with SIGTERM/SIGINT/SIGHUP cancelling the work instead of killing us.

    Only the first signal cancels: later ones are ignored, so a second Ctrl-C
    cannot cut a rollback short (each of its steps has its own timeout).
    """
    async def main():
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        got: list[int] = []

        def on_signal(signum):
            if not got:
                task.cancel()
            got.append(signum)

        installed = []
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            try:
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)
            except (ValueError, RuntimeError, NotImplementedError):
                pass  # not the main thread: the caller handles signals
        try:
            return await coro
        except asyncio.CancelledError:
            if got:
                raise Interrupted(got[0]) from None
            raise
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    return asyncio.run(main())


def _inventory(inv: str | PathLike | Inventory) -> Inventory:
    return inv if isinstance(inv, Inventory) else load_inventory(inv)


def launch(inventory: str | PathLike | Inventory, *, allow_mismatch: bool = False,
           allow_partial: bool = False, timeout: float | None = None,
           reporter: Reporter | None = None, on_step: StepHook | None = None,
           ship: tuple[str, ...] = (), recreate: bool = False) -> ClusterRecord:
    """Launch the cluster an inventory describes; return its state record.

    A cluster of that name that already runs is converged to the inventory
    (:mod:`launcher.verbs.reconcile`): the record's ``applied`` lists the steps.
    A change only a new scheduler can follow raises
    :class:`~launcher.errors.NeedsRecreate` unless ``recreate`` (stop, then launch).

    ``reporter`` shows the progress; ``on_step(address, op, started, ended)``
    is called after every agent step (bench/ counts round trips with it).

    Raises :class:`~launcher.errors.InventoryError` (bad file, nothing
    contacted), :class:`~launcher.errors.PreflightError` (hosts differ,
    nothing started) or :class:`~launcher.errors.LaunchError` (a step
    failed; everything started was stopped again).
    """
    inv = _inventory(inventory)
    if ship:  # --ship adds to [cluster] ship (launcher/verbs/ship.py)
        inv = dataclasses.replace(inv, ship=tuple(dict.fromkeys(inv.ship + tuple(ship))))
    if timeout is not None:
        try:
            timeout = v.seconds(timeout)
        except v.Invalid as e:
            raise InventoryError(f"timeout: {e}") from None
    reporter = reporter or Reporter(quiet=True)
    with state.lock(inv.name, "launch"):
        return run(launch_async(inv, report=reporter, allow_mismatch=allow_mismatch,
                                allow_partial=allow_partial, timeout=timeout, on_step=on_step,
                                recreate=recreate))


def stop(name: str | None = None, *, inventory: str | PathLike | Inventory | None = None,
         reporter: Reporter | None = None, on_step: StepHook | None = None, purge: bool = False) -> dict:
    """Stop a launched cluster on every host and forget it (``on_step``: as for :func:`launch`).

    The scheduler's and workers' logs stay on their hosts (:func:`logs` reads
    them) until the cluster's next launch; ``purge`` removes them too (also
    of a cluster already stopped).

    With ``inventory``, sweep instead: end the processes of the inventory's
    cluster on every one of its hosts, found by the cluster's name in their
    tokens, without reading the record (lost, or damaged beyond repair).
    """
    report = reporter or Reporter(quiet=True)
    if inventory is not None:
        inv = _inventory(inventory)
        if name not in (None, inv.name):
            raise InventoryError(f"--name {name} but {inv.path} describes cluster '{inv.name}'"
                                 " (leave --name out, or give that cluster's inventory)")
        return run(sweep_async(inv, report=report, on_step=on_step))
    try:
        name = resolve_name(name)
    except NothingLaunched:  # stopping what is not running is not an error (nor is stopping twice)
        report.info("no launched cluster is known: nothing to stop")
        return {"name": None, "stopped": 0, "killed": 0, "unreachable": {}}
    return run(stop_async(name, report=report, on_step=on_step, purge=purge))


def restart(hosts: list[str] | None = None, name: str | None = None, *, timeout: float | None = None,
            reporter: Reporter | None = None, on_step: StepHook | None = None) -> ClusterRecord:
    """Restart the workers of some hosts (addresses or labels; None: all), retiring them first.

    See :mod:`launcher.verbs.restart`; the scheduler and the other hosts keep running.
    """
    from launcher.verbs.restart import restart_async

    name = resolve_name(name)
    with state.lock(name, "pyku-launch restart"):
        return run(restart_async(name, hosts, report=reporter or Reporter(quiet=True), timeout=timeout,
                                 on_step=on_step))


def status(name: str | None = None, prometheus: str | PathLike | None = None) -> dict:
    """The cluster's state as the scheduler reports it (see :mod:`launcher.verbs.status`).

    ``prometheus``: also write the cluster's Prometheus ``file_sd`` target file there
    (no target if it does not run; :mod:`launcher.reach.metrics`), listed under ``prometheus``.
    """
    try:
        name = resolve_name(name)
    except NothingLaunched:
        st = not_launched(None)
    else:
        st = run(status_async(name))
    if prometheus is not None:
        from launcher.reach import metrics

        rec = _running(name) if st["state"] in ("running", "degraded") else None
        where = metrics.target(rec) if rec is not None else None
        st["prometheus"] = {"file": str(prometheus), "targets": metrics.write(prometheus, rec),
                            "loopback_only": bool(where and where[1])}
    return st


def check(inventory: str | PathLike | Inventory, *, allow_mismatch: bool = False):
    """Validate and preflight an inventory, starting nothing.

    Returns a :class:`launcher.verbs.preflight.PreflightResult`; raises
    PreflightError on a refusal.
    """
    inv = _inventory(inventory)

    async def go():
        sources = registry.member_sources(registry.from_inventory(inv))
        members = registry.members(inv)
        async with Context(inv.name, inv.step_timeout) as ctx:
            failed = await ctx.open([inv.scheduler, *members])
            if failed:
                raise LaunchError(by_cause({s.address: failed[connection_key(s)].message
                                            for s in (inv.scheduler, *members) if connection_key(s) in failed}))
            targets = [(inv.scheduler, "scheduler", ctx.conn(inv.scheduler))]
            targets += preflight.targets(ctx, members, sources)
            result = await preflight.run(inv, targets, allow_mismatch=allow_mismatch)
            await preflight.source_checks(ctx, result, sources)
            return result

    return run(go())


def logs(name: str | None = None, host: str | None = None, lines: int = 20) -> list[tuple[str, str, str]]:
    """The last ``lines`` of each remote log, as (host, file, line) in host order.

    Of a running cluster, one that stopped itself or crashed (its record),
    or one that was stopped (the logs its stop left, launcher/store/stopped.py).
    """
    if isinstance(lines, bool) or not isinstance(lines, int) or lines < 1:
        raise InventoryError(f"lines: must be a positive integer, got {lines!r}")
    name = resolve_name(name)
    rec = state.read(name)
    trees = rec.hosts if rec is not None else stopped.hosts(name)
    if trees is None:
        raise LaunchError(f"cluster '{name}' is not launched")
    recs = [r for r in trees if host in (None, r.address, r.label)]
    if not recs:
        raise LaunchError(f"cluster '{name}' has no host {host!r} "
                          f"(hosts: {', '.join(dict.fromkeys(r.address for r in trees))})")

    async def go():
        conns, failed = await open_connections([r.spec for r in recs])
        try:
            out = []
            reached = [r for r in recs if connection_key(r.spec) in conns]
            replies = await asyncio.gather(*(
                conns[connection_key(r.spec)].request(Logs(r.rundir, lines), 30)
                for r in reached))
            for r, reply in zip(reached, replies):
                for fname, flines in reply.logs.items():
                    out += [(r.address, fname, ln) for ln in flines]
            for r in recs:
                if connection_key(r.spec) in failed:
                    out.append((r.address, "-", f"unreachable: {failed[connection_key(r.spec)]}"))
            return out
        finally:
            await close_all(conns)

    return run(go())


def dry_run(inventory: str | PathLike | Inventory) -> list[str]:
    """Every remote step a launch would run, per host; touches nothing.

    If a cluster of that name runs, the plan that would converge it instead
    (``+ host``, ``- host``, ``~ host: key a → b``, ``repair host: ...``).
    """
    inv = _inventory(inventory)
    rec = _running(inv.name)
    if rec is None:
        return _launch_steps(inv)
    from launcher.verbs.reconcile import plan_for

    try:
        steps = run(plan_for(inv, rec))
    except LaunchError as e:  # a launch would clean the dead cluster up, then launch anew
        return [f"{e}: a launch would stop what is left of it first, then:", *_launch_steps(inv)]
    head = f"cluster '{inv.name}' runs at {rec.scheduler}: "
    if not steps:
        return [head + "nothing to change"]
    return [head + "plan", *(f"  {s.text}" for s in steps)]


def _launch_steps(inv: Inventory) -> list[str]:
    """What a launch runs: the SSH steps, then each other worker source's (a pool's job script)."""
    from launcher.sources import registry

    return commands.dry_run(inv) + [line for source in registry.from_inventory(inv)
                                    for line in getattr(source, "dry_run", list)()]


def share(name: str | None, label: str, path: str | PathLike, days: float = 7):
    """Write a connection file for ``label`` (see :mod:`launcher.security.share`); returns its content."""
    from launcher.security import share as _share

    return _share.share(resolve_name(name), label, path, days)


def revoke(name: str | None, label: str) -> dict:
    """Revoke ``label``'s certificates on every host (see :mod:`launcher.security.share`)."""
    from launcher.security import share as _share

    return run(_share.revoke_async(resolve_name(name), label))


def _running(name: str) -> ClusterRecord | None:
    """The record of a running cluster of this name, else None (not launched, half-launched, corrupt)."""
    try:
        rec = state.read(name)
    except state.CorruptState:
        return None
    return rec if rec is not None and rec.running else None


__all__ = ["launch", "stop", "status", "check", "logs", "dry_run", "restart", "share", "revoke"]
