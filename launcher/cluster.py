"""``launcher.Cluster``: a dask ``Cluster`` attached to a cluster pyku-launch started.

What SSHCluster users expect (``scheduler_address``, ``dashboard_link``,
``get_client()``, the Jupyter widget, ``scale``, ``adapt``) for a cluster
that lives on its own: attaching starts nothing, and ``close()`` detaches,
leaving the cluster running, unless it was made with ``shutdown_on_close=True``.

``scale(n)`` spreads ``n`` workers over the inventory's hosts, round robin,
up to each host's ``nworkers``: ``<label>-0`` of every host first, then
``<label>-1``... A worker is started on its host through the same SSH path
as a launch (preflight, spawn with the cluster's TLS material, wait for it
at the scheduler: :mod:`launcher.trees`) and retired through the scheduler
before its processes are stopped. ``adapt()`` is distributed's
:class:`~distributed.deploy.adaptive.Adaptive` driving those two.
"""

from __future__ import annotations

import asyncio
import logging

from distributed.core import rpc
from distributed.deploy import Cluster as _DaskCluster

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


def slots(inv) -> list[str]:
    """Every worker name the inventory allows, in the order ``scale`` fills them."""
    hosts = registry.members(inv)
    deepest = max(s.nworkers for s in hosts)
    return [f"{s.label}-{i}" for i in range(deepest) for s in hosts if i < s.nworkers]


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

    def scale(self, n: int) -> None:
        """Aim at ``n`` workers over the inventory's hosts (see the module); the work runs in the background."""
        allowed = slots(recorded_inventory(self._record()))
        have = [s for s in allowed if s in self.requested]
        if n > len(allowed):
            self._log(f"scale({n}): the inventory allows {len(allowed)} workers; starting those")
        target = have[:n] if n <= len(have) else have + [s for s in allowed if s not in have][:n - len(have)]
        self._target = target
        self._schedule()

    def scale_down(self, workers) -> None:
        """Retire and stop these workers (names, as Adaptive passes them)."""
        names = {str(w) for w in workers}
        self._target = [w for w in (self._target if self._target is not None else sorted(self.requested))
                        if w not in names]
        self._schedule()

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
        to_close = sorted({n for ns in recorded.values() for n in ns} - target)
        to_start = [s for s in slots(inv) if s in target and all(s not in ns for ns in recorded.values())]
        labels = {n.rsplit("-", 1)[0] for n in to_close + to_start}
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

    async def _start_workers(self, trees: Trees, inv, names: list[str], failed: dict) -> None:
        specs = [s for s in registry.members(inv) if any(n.rsplit("-", 1)[0] == s.label for n in names)]
        for s in specs:
            if connection_key(s) in failed:
                raise failed[connection_key(s)]
        result = await preflight.run(inv, preflight.targets(trees.ctx, specs, trees.sources))
        await preflight.source_checks(trees.ctx, result, trees.sources)
        probes = {p.spec.label: p for p in result.probes}

        async def host(label: str) -> None:
            mine = [n for n in names if n.rsplit("-", 1)[0] == label]
            probe = probes[label]
            if not trees.trees(label) and len(mine) == probe.spec.nworkers:
                await trees.start(probe)  # the host's whole tree, as a launch starts it
            else:
                for name in mine:
                    await trees.start(probe, name)

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
