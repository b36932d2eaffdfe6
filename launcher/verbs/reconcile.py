"""Apply a plan (:mod:`launcher.verbs.plan`) to a running cluster: ``pyku-launch HOSTS.toml`` again.

The scheduler and the healthy workers keep running. In order: retire the
workers of removed and changed hosts through the scheduler (their data moves
to the others first) and stop their trees; preflight the hosts that get
workers (against this machine, as the launch did); start their trees with
the cluster's TLS material; wait until the scheduler has them. Every step
is written to the state file as it happens (:class:`launcher.verbs.trees.Trees`).

A host that fails is named, what the reconcile started there is stopped and
it is recorded as missing; the other hosts go on, and the reconcile ends
with a LaunchError naming the failures. An interruption (Ctrl-C, SIGTERM)
stops what this reconcile started, and nothing else. The caller holds the
cluster's lock, so a second reconcile at the same time is told "busy".
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from launcher.verbs import plan, preflight
from launcher.store import state
from launcher.errors import LaunchError, NeedsRecreate
from launcher.config.inventory import Inventory
from launcher.ui.progress import Reporter
from launcher.store.records import ClusterRecord
from launcher.verbs.stop import stop_async
from launcher.remote.transport import StepHook, connection_key
from launcher.sources import registry
from launcher.sources.base import Context
from launcher.verbs.trees import Trees, live_names


async def plan_for(inv: Inventory, rec: ClusterRecord) -> list[plan.Step]:
    """The plan for a running cluster: its record, its scheduler's workers and the ended trees, against ``inv``."""
    return plan.make(rec, inv, await live_names(rec), await ended_trees(inv, rec))


async def ended_trees(inv: Inventory, rec: ClusterRecord) -> set[str]:
    """Tokens of the trees of sources that do not wait (a batch pool's chains) that have ended.

    For them the scheduler cannot tell: a pending job's workers are not there
    either. Their source's ``alive`` (a pool: its jobs in ``squeue``) can; a
    tree it cannot tell about (login host unreachable) is not counted as ended.
    """
    sources = registry.member_sources(registry.from_inventory(inv))
    recs = [h for h in rec.hosts if h.role == "workers" and h.label in sources and not sources[h.label].wait]
    if not recs:
        return set()
    answers: dict[str, bool | None] = {}
    async with Context(rec.name, inv.step_timeout) as ctx:
        await ctx.open([h.spec for h in recs])
        for source, group in registry.by_source(recs, inv):
            answers |= await source.alive(ctx, group)
    return {token for token, alive in answers.items() if alive is False}


async def reconcile_async(inv: Inventory, rec: ClusterRecord, *, report: Reporter, recreate: bool = False,
                          allow_mismatch: bool = False, timeout: float | None = None,
                          on_step: StepHook | None = None) -> ClusterRecord | None:
    """Converge the running cluster ``rec`` to ``inv``; its new record.

    Returns None after stopping the cluster when the plan needs a new
    scheduler and ``recreate`` is set (the caller launches anew); raises
    :class:`~launcher.errors.NeedsRecreate` when it is not.
    """
    steps = await plan_for(inv, rec)
    refused = [s for s in steps if s.kind == "refuse"]
    if refused:
        if not recreate:
            raise NeedsRecreate("; ".join(s.text for s in refused))
        report.warn(f"--recreate: stopping cluster '{rec.name}' to launch it anew ("
                    + ", ".join(s.label for s in refused) + " changed)")
        await stop_async(rec.name, report=report, locked=True, on_step=on_step)
        return None
    if not steps:
        _converged(rec, inv)
        state.write(rec)
        return dataclasses.replace(rec, already_running=True)
    run = _Reconcile(inv, rec, report, allow_mismatch, inv.timeout if timeout is None else timeout, on_step)
    return await run.go(steps)


def _converged(rec: ClusterRecord, inv: Inventory) -> None:
    """The record now describes this inventory."""
    rec.inventory, rec.inventory_sha256, rec.settings = inv.path, inv.sha256, plan.settings(inv)
    labels = {s.label for s in registry.members(inv)}
    rec.missing = {k: why for k, why in rec.missing.items() if k in labels}  # removed hosts are not missing


class _Reconcile:
    """One reconcile: its connections, its trees, the hosts that failed."""

    def __init__(self, inv, rec, report, allow_mismatch, timeout, on_step):
        self.inv, self.rec, self.report = inv, rec, report
        self.allow_mismatch, self.timeout, self.on_step = allow_mismatch, timeout, on_step
        self.failed: dict[str, str] = {}  # address -> why

    async def go(self, steps: list[plan.Step]) -> ClusterRecord:
        t0 = time.perf_counter()
        self.report.step("reconcile", f"{len(steps)} change{'s' if len(steps) != 1 else ''}")
        for s in steps:
            self.report.info(s.text)
        labels = {s.label for s in steps}  # only the hosts a step touches: a repair of one connects one
        specs = [h.spec for h in self.rec.hosts if h.role == "workers" and h.label in labels]
        specs += [s.spec for s in steps if s.spec]
        self.report.step("connect", f"{len({connection_key(s) for s in specs})} hosts")
        async with Context(self.inv.name, self.inv.step_timeout, self.on_step) as ctx:
            failed = await ctx.open(specs)
            trees = Trees(self.rec, self.inv, ctx)
            try:
                await self._apply(trees, steps, failed)
            except BaseException:
                self.report.warn("reconcile failed or interrupted: stopping what it started")
                for why in await trees.rollback():
                    self.report.warn(why)
                raise
        _converged(self.rec, self.inv)
        state.write(self.rec)
        if self.failed:
            raise LaunchError("reconcile incomplete (the rest of the cluster runs; state updated): " + "; ".join(
                f"{a}: {w}" for a, w in self.failed.items()))
        self.report.done("reconcile", time.perf_counter() - t0)
        return dataclasses.replace(self.rec, applied=[s.text for s in steps])

    def _fail(self, spec, why: str) -> None:
        self.failed[spec.address] = why
        self.rec.missing[spec.label] = why
        self.report.host(spec.label, f"failed: {why}")

    async def _apply(self, trees: Trees, steps: list[plan.Step], failed: dict) -> None:
        by_kind = {k: [s for s in steps if s.kind == k] for k in ("remove", "change", "add", "repair")}
        # Retire first: removed hosts, and changed hosts' old trees.
        old = [t for s in by_kind["remove"] + by_kind["change"] for t in trees.trees(s.label)]
        if old:
            self.report.step("retire", f"{sum(len(t.worker_names()) for t in old)} workers")
            await trees_retire_and_stop(trees, old)
        starting = [s for s in by_kind["change"] + by_kind["add"] + by_kind["repair"]]
        for s in list(starting):
            if connection_key(s.spec) in failed:
                self._fail(s.spec, failed[connection_key(s.spec)].message)
                starting.remove(s)
        if not starting:
            return
        self.report.step("preflight", f"{len(starting)} hosts")
        targets = preflight.targets(trees.ctx, [s.spec for s in starting], trees.sources)
        result = await preflight.run(self.inv, targets, allow_mismatch=self.allow_mismatch, drop_failed=True)
        await preflight.source_checks(trees.ctx, result, trees.sources, drop_failed=True)
        for spec, why in result.dropped:
            self._fail(spec, f"preflight: {why}")
        probes = {p.spec.label: p for p in result.probes}
        starting = [s for s in starting if s.label in probes]
        self.report.step("workers", f"on {len(starting)} hosts")
        results = await asyncio.gather(*(self._start(trees, s, probes[s.label]) for s in starting),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, LaunchError):
                raise r
        ok = [s for s, r in zip(starting, results) if r is None]
        late = await trees.await_registration({s.label for s in ok}, self.timeout)
        for s in ok:
            if s.label in late:
                await self._undo(trees, s, late[s.label])
            else:
                self.rec.missing.pop(s.label, None)
                self.report.host(s.label, "ok")

    async def _start(self, trees: Trees, step: plan.Step, probe) -> None:
        """Start what one step needs on its host; on failure stop what it started there and name it."""
        try:
            if step.kind == "repair":
                await _repair(trees, step, probe)
            else:
                await trees.start(probe)
        except LaunchError as e:
            await self._undo(trees, step, e.message)

    async def _undo(self, trees: Trees, step: plan.Step, why: str) -> None:
        mine = [t for t in trees.started if t.label == step.label and t in self.rec.hosts]
        try:
            await trees.stop(mine)
        except LaunchError as e:
            why += f" (and stopping what was started failed: {e})"
        self._fail(step.spec, why)


async def trees_retire_and_stop(trees: Trees, old) -> None:
    """Retire the workers of these trees through the scheduler, then stop the trees."""
    from launcher.verbs.trees import retire

    await retire(trees.rec, [n for t in old for n in t.worker_names()], timeout=trees.step_timeout * 2)
    await trees.stop(old)


async def _repair(trees: Trees, step: plan.Step, probe) -> None:
    """Start the missing workers of a host: a dead tree anew, single workers beside a live one.

    A tree is dead when no process carries its token, whatever the scheduler
    still lists (it may not have noticed every worker of a killed tree yet).
    """
    for tree in trees.trees(step.label):
        names = tree.worker_names()
        gone = [n for n in names if n in step.missing]
        if not gone:
            continue
        if len(gone) == len(names) or not await trees.alive(tree):
            await trees.stop([tree])  # whatever is left of it, and its run directory
            await _wait_unlisted(trees.rec, names, trees.step_timeout)
            if tree.names is None:
                await trees.start(probe)
                continue
            gone = names
        else:
            tree.names = [n for n in names if n not in gone]
            tree.expected = len(tree.names)
        await trees.start_names(probe, gone)


async def _wait_unlisted(rec, names: list[str], timeout: float) -> None:
    """Wait until the scheduler lists none of these names: it refuses a worker whose name it still has."""
    deadline = time.monotonic() + timeout
    while set(names) & await live_names(rec) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
