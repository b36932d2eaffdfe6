"""``launcher.Cluster``: a dask ``Cluster`` attached to a cluster pyku-launch started.

What SSHCluster users expect (``scheduler_address``, ``dashboard_link``,
``get_client()``, the Jupyter widget, ``scale``, ``adapt``) for a cluster
that lives on its own: attaching starts nothing, and ``close()`` detaches,
leaving the cluster running, unless it was made with ``shutdown_on_close=True``.

``scale(n)`` fills *slots*, units of workers started and stopped as one
(:func:`slots`): the SSH hosts' workers first, round robin up to each host's
``nworkers`` (``<label>-0`` of every host first, then ``<label>-1``...),
then the Slurm pools' jobs, round robin over the pools up to each pool's
``max_jobs``, a whole job of ``nworkers`` workers at a time (``n`` is
rounded up to whole jobs, as dask-jobqueue's ``scale`` does). Hosts come
first because their workers start in seconds at no cost; a pool's jobs
wait in a queue and use an allocation, so they are what is added last and
retired first. A worker is started through the same path as a launch
(preflight, its source's start with the cluster's TLS material, the wait at
the scheduler for sources that wait: :mod:`launcher.verbs.trees`); a pool's
job is submitted and counted as requested while it is pending. Scaling
down retires the workers through the scheduler (their data moves first),
then stops their trees (a pool's jobs: scancelled until ``squeue`` lists
none). ``adapt()`` is distributed's
:class:`~distributed.deploy.adaptive.Adaptive` driving those two, with
workers grouped by slot and targets rounded to whole slots.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple

from distributed.core import rpc
from distributed.deploy import Adaptive, Cluster as _DaskCluster

from launcher.verbs import preflight
from launcher.store import state
from launcher.reach.client import resolve_name
from launcher.errors import LaunchError
from launcher.store.records import ClusterRecord
from launcher.verbs.restart import recorded_inventory, running_record
from launcher.remote.transport import connection_key
from launcher.sources import registry
from launcher.sources.base import Context
from launcher.verbs.trees import Trees, names_by_label, retire

logger = logging.getLogger(__name__)


class Slot(NamedTuple):
    """Workers started and stopped as one: one worker of an SSH host, one job of a pool."""

    label: str               # the member that runs them
    names: tuple[str, ...]   # the names they register with


def slots(inv) -> list[Slot]:
    """Every slot the inventory allows, in the order ``scale`` fills them.

    Source by source in :data:`registry.KINDS` order (SSH hosts, then pools),
    round robin over a source's members. A source lists a member's slots with
    its optional ``slots(label)`` (a pool: its jobs); without it, each worker
    ``<label>-<i>`` (``i < nworkers``) is a slot of its own.
    """
    out: list[Slot] = []
    for source in registry.from_inventory(inv):
        per = [[Slot(m.label, tuple(names)) for names in source.slots(m.label)] if hasattr(source, "slots")
               else [Slot(m.label, (f"{m.label}-{i}",)) for i in range(m.nworkers)] for m in source.members()]
        out += [p[i] for i in range(max(map(len, per), default=0)) for p in per if i < len(p)]
    return out


def fill(allowed: list[Slot], have: list[Slot], n: int, up: bool = True) -> list[str]:
    """The worker names of ``n`` workers in whole slots: those in ``have`` first, then the rest in order.

    ``up``: round up to the slot boundary past ``n`` (as dask-jobqueue rounds
    to whole jobs); else down to the one before it.
    """
    out: list[str] = []
    for slot in have + [s for s in allowed if s not in have]:
        if len(out) >= n:
            break
        if not up and len(out) + len(slot.names) > n:
            continue  # too big to fit below n: a smaller slot further on may
        out += slot.names
    return out


class _WholeSlots(Adaptive):
    """distributed's Adaptive over slots: targets rounded to whole slots, a slot's workers closed together.

    Without the rounding a pool's job of 2 workers asked for by a target of 1
    would be one worker too many at the next step, scaled down, and asked for
    again. ``worker_key`` (set by :meth:`Cluster.adapt`) makes the scheduler
    pick a slot's workers together when it chooses whom to close.
    """

    async def safe_target(self) -> int:
        n = await super().safe_target()
        up = len(self.cluster._targeted(n))
        if up <= self.maximum:
            return up
        down = len(self.cluster._targeted(n, up=False))
        return down if down >= self.minimum else up  # the minimum wins over the maximum

    async def recommendations(self, target: int) -> dict:
        advice = await super().recommendations(target)
        if advice["status"] == "down":  # whole slots, no more of them than it takes
            advice["workers"] = self.cluster._slots_to_close(advice["workers"], len(self.plan) - target)
        return advice


def _slot_key(names: dict[str, str]):
    """A ``worker_key`` for Adaptive: worker -> the first name of its slot (sent to the scheduler by value)."""
    def key(ws):
        return names.get(str(ws.name), str(ws.name))
    return key


class Cluster(_DaskCluster):
    """A launched cluster as a :class:`distributed.deploy.Cluster`.

    Parameters
    ----------
    name
        The cluster's name; optional when ``PYKU_CLUSTER`` is set or one cluster is known.
    shutdown_on_close
        ``close()`` stops the whole cluster (``pyku-launch stop``) instead of detaching.
    asynchronous, loop
        As for every dask Cluster.
    """

    def __init__(self, name: str | None = None, *, shutdown_on_close: bool = False,
                 asynchronous: bool = False, loop=None, quiet: bool = True):
        self.launch_name = resolve_name(name)
        rec = running_record(self.launch_name)
        self.shutdown_on_close = shutdown_on_close
        self._target: list[str] | None = None  # the worker names scale() asked for
        self._correcting: asyncio.Task | None = None
        super().__init__(asynchronous=asynchronous, loop=loop, name=self.launch_name, quiet=quiet)
        self.security = sec = rec.security()  # get_client()'s Client reads it
        self.scheduler_comm = rpc(rec.scheduler, connection_args=sec.get_connection_args("client") if sec else {})
        if not self.called_from_running_loop:
            self._loop_runner.start()
            self.sync(self._start)

    def __await__(self):
        async def _():
            if self.status.name == "created":
                await self._start()
            if self._correcting is not None:
                await asyncio.shield(self._correcting)
            return self
        return _().__await__()

    def _record(self) -> ClusterRecord:
        return running_record(self.launch_name)

    @property
    def requested(self) -> set[str]:
        """The worker names the state file records (started, or being started)."""
        return {n for names in names_by_label(self._record()).values() for n in names}

    @property
    def plan(self) -> set[str]:
        return set(self._target) if self._target is not None else self.requested

    def _slots(self) -> list[Slot]:
        return slots(recorded_inventory(self._record()))

    def _targeted(self, n: int, up: bool = True) -> list[str]:
        """The names ``scale(n)`` aims at: slots that have workers first (those that arrived before
        those pending, so a scale down drops pending jobs first), then new ones, in whole slots."""
        allowed, requested, observed = self._slots(), self.requested, set(map(str, self.observed))
        have = [s for s in allowed if set(s.names) & requested]
        have.sort(key=lambda s: not set(s.names) & observed)
        return fill(allowed, have, n, up)

    def scale(self, n: int) -> None:
        """Aim at ``n`` workers in whole slots (see the module); the work runs in the background."""
        target = self._targeted(n)
        if len(target) < n:
            self._log(f"scale({n}): the inventory allows {len(target)} workers; starting those")
        self._target = target
        self._schedule()

    def _slots_to_close(self, workers, at_least: int) -> list[str]:
        """The names of the slots of these workers, slot by slot until ``at_least`` workers go."""
        slot_of = {n: s.names for s in self._slots() for n in s.names}
        out: list[str] = []
        for w in map(str, workers):
            if w not in out and len(out) < at_least:
                out += slot_of.get(w, (w,))
        return out

    def scale_down(self, workers) -> None:
        """Retire and stop these workers (names, as Adaptive passes them) and the rest of their slots."""
        names = set(self._slots_to_close(workers, len(self.plan)))
        self._target = [w for w in (self._target if self._target is not None else sorted(self.requested))
                        if w not in names]
        self._schedule()

    def adapt(self, Adaptive: type[Adaptive] = _WholeSlots, **kwargs) -> Adaptive:
        """distributed's ``adapt`` over whole slots (see :class:`_WholeSlots`): a pool's job is one."""
        units = {n: s.names[0] for s in self._slots() if len(s.names) > 1 for n in s.names}
        kwargs.setdefault("worker_key", _slot_key(units))
        return super().adapt(Adaptive=Adaptive, **kwargs)

    def _schedule(self) -> None:
        def go():
            if self._correcting is None or self._correcting.done():
                self._correcting = asyncio.ensure_future(self._correct_state())
            else:  # one more pass after the running one
                previous = self._correcting

                async def after():
                    await asyncio.gather(previous, return_exceptions=True)
                    await self._correct_state()
                self._correcting = asyncio.ensure_future(after())
        self.loop.add_callback(go)

    async def _correct_state(self) -> None:
        """Start and stop workers until the record matches the target; failures are logged."""
        try:
            with state.lock(self.launch_name, "launcher.Cluster.scale"):
                await self._converge()
        except LaunchError as e:
            self._log(f"scaling failed: {e}")
            logger.warning("launcher.Cluster %s: scaling failed: %s", self.launch_name, e)
            self._target = None  # back to what is recorded

    async def _converge(self) -> None:
        if self._target is None:
            return
        rec = self._record()
        inv = recorded_inventory(rec)
        target = set(self._target)
        recorded = names_by_label(rec)
        have = {n for ns in recorded.values() for n in ns}
        to_close = sorted(have - target)
        to_start = [s for s in slots(inv) if set(s.names) & target and not set(s.names) & have]
        labels = {lab for lab, ns in recorded.items() if set(ns) & set(to_close)} | {s.label for s in to_start}
        specs = [s for s in registry.members(inv) if s.label in labels]
        async with Context(rec.name, inv.step_timeout) as ctx:
            failed = await ctx.open(specs)
            trees = Trees(rec, inv, ctx)
            try:
                if to_close:
                    await _close_workers(trees, to_close)
                if to_start:
                    await self._start_workers(trees, inv, to_start, failed)
            except BaseException:
                await trees.rollback()
                raise

    async def _start_workers(self, trees: Trees, inv, new: list[Slot], failed: dict) -> None:
        specs = [s for s in registry.members(inv) if any(slot.label == s.label for slot in new)]
        for s in specs:
            if connection_key(s) in failed:
                raise failed[connection_key(s)]
        result = await preflight.run(inv, preflight.targets(trees.ctx, specs, trees.sources))
        await preflight.source_checks(trees.ctx, result, trees.sources)
        probes = {p.spec.label: p for p in result.probes}

        async def host(label: str) -> None:
            mine = [n for slot in new if slot.label == label for n in slot.names]
            probe = probes[label]
            launched = [n for slot in slots(inv) if slot.label == label for n in slot.names][:probe.spec.nworkers]
            if not trees.trees(label) and mine == launched:
                await trees.start(probe)  # the member's whole set, as a launch starts it
            else:
                await trees.start_names(probe, mine)

        await asyncio.gather(*(host(label) for label in probes))
        late = await trees.await_registration(set(probes), inv.timeout)
        if late:
            raise LaunchError("; ".join(f"{lab}: {why}" for lab, why in late.items()))

    async def _close(self) -> None:
        if self._correcting is not None:
            await asyncio.gather(self._correcting, return_exceptions=True)
        await super()._close()
        if self.shutdown_on_close:
            from launcher.ui.progress import Reporter
            from launcher.verbs.stop import stop_async

            await stop_async(self.launch_name, report=Reporter(quiet=True))


async def _close_workers(trees: Trees, names: list[str]) -> None:
    """Retire workers by name, then stop the trees left without workers (others keep theirs)."""
    await retire(trees.rec, names, timeout=trees.step_timeout * 2)
    empty = []
    for tree in [h for h in trees.rec.hosts if h.role == "workers"]:
        keep = [n for n in tree.worker_names() if n not in names]
        if not keep:
            empty.append(tree)
        elif len(keep) < len(tree.worker_names()):
            tree.names, tree.expected = keep, len(keep)
    trees.save()
    await trees.stop(empty)
