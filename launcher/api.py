"""The Python API behind every command: plain functions, synchronous on the outside.

Each runs its asyncio work with SIGTERM (and Ctrl-C) turned into a
cancellation, so a launch that is interrupted rolls back like one that
failed, then raises :class:`Interrupted`.
"""

from __future__ import annotations

import asyncio
import signal
from os import PathLike

from . import preflight, remote_commands, state
from .client import resolve_name
from .errors import LaunchError
from .inventory import Inventory, load_inventory
from .progress import Reporter
from .protocol import Logs
from .records import ClusterRecord
from .launch import launch_async
from .status import status_async
from .stop import stop_async
from .transport import StepHook, close_all, connection_key, open_connections


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
           recreate: bool = False) -> ClusterRecord:
    """Launch the cluster an inventory describes; return its state record.

    A cluster of that name that already runs is converged to the inventory
    (:mod:`launcher.reconcile`): the record's ``applied`` lists the steps.
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
    reporter = reporter or Reporter(quiet=True)
    with state.lock(inv.name, "pyku-launch launch"):
        return run(launch_async(inv, report=reporter, allow_mismatch=allow_mismatch,
                                allow_partial=allow_partial, timeout=timeout, on_step=on_step,
                                recreate=recreate))


def stop(name: str | None = None, *, reporter: Reporter | None = None,
         on_step: StepHook | None = None) -> dict:
    """Stop a launched cluster on every host and forget it (``on_step``: as for :func:`launch`)."""
    return run(stop_async(resolve_name(name), report=reporter or Reporter(quiet=True), on_step=on_step))


def restart(hosts: list[str] | None = None, name: str | None = None, *, timeout: float | None = None,
            reporter: Reporter | None = None, on_step: StepHook | None = None) -> ClusterRecord:
    """Restart the workers of some hosts (addresses or labels; None: all), retiring them first.

    See :mod:`launcher.restart`; the scheduler and the other hosts keep running.
    """
    from .restart import restart_async

    name = resolve_name(name)
    with state.lock(name, "pyku-launch restart"):
        return run(restart_async(name, hosts, report=reporter or Reporter(quiet=True), timeout=timeout,
                                 on_step=on_step))


def status(name: str | None = None) -> dict:
    """The cluster's state as the scheduler reports it (see :mod:`launcher.status`)."""
    return run(status_async(resolve_name(name)))


def check(inventory: str | PathLike | Inventory, *, allow_mismatch: bool = False):
    """Validate and preflight an inventory, starting nothing.

    Returns a :class:`launcher.preflight.PreflightResult`; raises
    PreflightError on a refusal.
    """
    inv = _inventory(inventory)

    async def go():
        conns, failed = await open_connections([inv.scheduler, *inv.hosts])
        try:
            if failed:
                raise LaunchError("; ".join(dict.fromkeys(map(str, failed.values()))))
            targets = [(inv.scheduler, "scheduler", conns[connection_key(inv.scheduler)])]
            targets += [(s, "workers", conns[connection_key(s)]) for s in inv.hosts]
            return await preflight.run(inv, targets, allow_mismatch=allow_mismatch)
        finally:
            await close_all(conns)

    return run(go())


def logs(name: str | None = None, host: str | None = None, lines: int = 20) -> list[tuple[str, str, str]]:
    """The last ``lines`` of each remote log, as (host, file, line) in host order."""
    name = resolve_name(name)
    rec = state.read(name)
    if rec is None:
        raise LaunchError(f"cluster '{name}' is not launched")
    recs = [r for r in rec.hosts if host in (None, r.address, r.label)]
    if not recs:
        raise LaunchError(f"cluster '{name}' has no host {host!r} "
                          f"(hosts: {', '.join(dict.fromkeys(r.address for r in rec.hosts))})")

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
        return remote_commands.dry_run(inv)
    from .reconcile import plan_for

    try:
        steps = run(plan_for(inv, rec))
    except LaunchError as e:  # a launch would clean the dead cluster up, then launch anew
        return [f"{e}: a launch would stop what is left of it first, then:", *remote_commands.dry_run(inv)]
    head = f"cluster '{inv.name}' runs at {rec.scheduler}: "
    if not steps:
        return [head + "nothing to change"]
    return [head + "plan", *(f"  {s.text}" for s in steps)]


def _running(name: str) -> ClusterRecord | None:
    """The record of a running cluster of this name, else None (not launched, half-launched, corrupt)."""
    try:
        rec = state.read(name)
    except state.CorruptState:
        return None
    return rec if rec is not None and rec.running else None


__all__ = ["launch", "stop", "status", "check", "logs", "dry_run", "restart"]
