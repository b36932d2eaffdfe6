"""Worker trees of a running cluster: start one, retire workers, stop trees, through their sources.

What a reconcile (:mod:`launcher.verbs.reconcile`), a restart
(:mod:`launcher.verbs.restart`) and :class:`launcher.Cluster` do to a running
cluster, without touching its scheduler. Every change is written to the
state file as it happens: a tree is recorded *before* its spawn (its token
finds it again whatever happens) and forgotten only once its processes are
proven gone, so the record stays true after each step.

A member's workers are one tree at launch (``<label>-0`` … ``<label>-<n-1>``;
a pool: one per job). A worker started later by name (a partial repair,
``Cluster.scale``) is a tree of its unit: on an SSH host one worker named
``<label>-<i>``, its own run directory beside the host's, the spill directory
going with the host's last tree (:mod:`launcher.sources.ssh`); in a pool the
job of that worker's slot (:mod:`launcher.sources.slurm_jobs`).
"""

from __future__ import annotations

import asyncio
import functools

from launcher.remote import readiness, commands
from launcher.security import share
from launcher.verbs import ship
from launcher.store import state
from launcher.security import tls
from launcher.errors import LaunchError
from launcher.config.inventory import Inventory
from launcher.sources import registry
from launcher.sources.base import Context, Join
from launcher.verbs.preflight import Probe
from launcher.store.records import ClusterRecord, HostRecord
from launcher.verbs.stop import stop_role


def names_by_label(rec: ClusterRecord) -> dict[str, list[str]]:
    """The worker names the record expects, per host label."""
    out: dict[str, list[str]] = {}
    for h in rec.hosts:
        if h.role == "workers":
            out.setdefault(h.label, []).extend(h.worker_names())
    return out


async def live_names(rec: ClusterRecord, timeout: float = 10) -> set[str]:
    """Names of the workers the scheduler has now; LaunchError if it does not answer."""
    try:
        info = await readiness.identity(rec.scheduler, rec.security(), timeout)
    except Exception as e:  # unreachable, refused, timed out
        raise LaunchError(f"cluster '{rec.name}': the scheduler at {rec.scheduler} does not answer "
                          f"({type(e).__name__}); pyku-launch status --name {rec.name}") from None
    return {str(w.get("name", a)) for a, w in info.get("workers", {}).items()}


async def retire(rec: ClusterRecord, names: list[str], timeout: float = 120) -> None:
    """Retire workers by name through the scheduler: their data moves to the others first."""
    if not names:
        return
    from distributed.core import rpc

    sec = rec.security()
    r = rpc(rec.scheduler, connection_args=sec.get_connection_args("client") if sec else {}, timeout=timeout)
    try:
        await asyncio.wait_for(r.retire_workers(names=list(names), close_workers=True, remove=True), timeout)
    except (OSError, TimeoutError, asyncio.TimeoutError) as e:
        raise LaunchError(f"retiring {', '.join(names)} failed: {type(e).__name__} {e}") from None
    finally:
        await r.close_rpc()


class Trees:
    """A running cluster's record and the open connections (``ctx``) that change its worker trees.

    ``ctx`` (:class:`~launcher.sources.base.Context`) must reach every host
    touched. ``started`` lists the trees started through this object, for a
    rollback.
    """

    def __init__(self, rec: ClusterRecord, inv: Inventory, ctx: Context):
        self.rec, self.inv, self.ctx = rec, inv, ctx
        self.step_timeout = ctx.step_timeout
        self.started: list[HostRecord] = []
        self.sources = registry.member_sources(registry.from_inventory(inv))

    @functools.cached_property
    def shipped(self) -> list:
        """What the launch shipped, packed again for later trees (read from disk, never imported; once)."""
        return ship.pack(self.inv.ship) if self.inv.ship else []

    def save(self) -> None:
        state.write(self.rec)

    def trees(self, label: str) -> list[HostRecord]:
        return [h for h in self.rec.hosts if h.role == "workers" and h.label == label]

    def _join(self) -> Join:
        # Later trees carry the client's certificate, signed by the same CA
        # for the same uses, and the revocation check with today's list.
        files = {}
        if self.rec.tls:
            files = tls.files_for(self.rec.tls) | commands.revocation_files(share.revoked_text(self.rec))
        return Join(self.rec.scheduler, files, ship.archives(self.shipped) if self.shipped else {},
                    functools.partial(ship.verify, self.shipped))

    def _record(self, rec: HostRecord) -> None:
        self.rec.hosts.append(rec)
        self.started.append(rec)
        self.save()

    async def start(self, probe: Probe, name: str | None = None) -> list[HostRecord]:
        """Start a member's full tree (``name`` None) or one worker of that name, by its source; recorded first."""
        try:
            return await self.sources[probe.spec.label].start(self.ctx, probe, self._join(), self._record, name)
        finally:
            self.save()

    async def start_names(self, probe: Probe, names: list[str]) -> list[HostRecord]:
        """Start the workers of these names, each through its source with its unit.

        A source starts the unit a name belongs to (an SSH host: that one
        worker; a pool: the job whose workers include it), so a name that an
        earlier start of the call covered is not started again.
        """
        started: list[HostRecord] = []
        for name in names:
            if all(name not in r.worker_names() for r in started):
                started += await self.start(probe, name)
        return started

    async def stop(self, recs: list[HostRecord]) -> None:
        """Stop these trees (by their sources, all at once), prove them gone, forget them.

        A tree whose processes survive or whose host fails stays recorded and
        is named in the LaunchError raised after the others were handled.
        """
        done = await stop_role(self.ctx, recs, remaining=self.rec.hosts)
        for r in done.gone:
            self.rec.hosts.remove(r)
        self.save()
        errors = list(done.unreachable.values()) + [f"{a}: processes {p} survived SIGKILL (still recorded)"
                                                    for a, p in done.left.items()]
        if errors:
            raise LaunchError("; ".join(errors))

    async def alive(self, rec: HostRecord) -> bool:
        """Whether a process of this tree still runs; LaunchError if its host cannot tell."""
        answer = (await registry.source_of(rec.source, self.inv).alive(self.ctx, [rec]))[rec.token]
        if answer is None:
            raise LaunchError("could not ask whether its workers run", host=rec.address)
        return answer

    async def await_registration(self, labels: set[str], timeout: float) -> dict[str, str]:
        """Wait until the scheduler has every recorded worker of these members; the late ones, and why."""
        # Members of a source that does not wait (a batch queue) join when they do.
        expected = {lab: len(n) for lab, n in names_by_label(self.rec).items()
                    if lab in labels and (lab not in self.sources or self.sources[lab].wait)}
        exited: set[str] = set()

        async def running(short: set[str]) -> set[str]:
            mine = [r for r in self.started if r.label in short and r in self.rec.hosts]
            answers: dict[str, bool | None] = {}
            for source, group in registry.by_source(mine, self.inv):
                answers |= await source.alive(self.ctx, group)
            gone = {r.label for r in mine if answers.get(r.token) is False}
            gone -= {r.label for r in mine if answers.get(r.token) is not False}
            exited.update(gone)
            return short - gone

        counts = await readiness.wait_for_workers(self.rec.scheduler, self.rec.security(), expected,
                                                  timeout=timeout, running=running)
        return {lab: (f"{counts.get(lab, 0)} of {n} workers registered "
                      + ("when its processes exited" if lab in exited else f"within {timeout:g} s"))
                for lab, n in expected.items() if counts.get(lab, 0) < n}

    async def rollback(self) -> list[str]:
        """Stop every tree started through this object that is still recorded; what could not be."""
        mine = [r for r in self.started if r in self.rec.hosts]
        if not mine:
            return []
        try:
            await self.stop(mine)
        except LaunchError as e:
            return [str(e)]
        return []
