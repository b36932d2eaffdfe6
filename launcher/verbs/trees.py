"""Worker trees of a running cluster: start one, retire workers, stop trees.

What a reconcile (:mod:`launcher.reconcile`), a restart
(:mod:`launcher.restart`) and :class:`launcher.Cluster` do to a running
cluster, without touching its scheduler. Every change is written to the
state file as it happens: a tree is recorded *before* its spawn (its token
finds it again whatever happens) and forgotten only once its processes are
proven gone, so the record stays true after each step.

A host's workers are one tree at launch (``<label>-0`` … ``<label>-<n-1>``).
A worker started later on its own (a partial repair, ``Cluster.scale``) is a
tree of one worker named ``<label>-<i>``, with its own run directory beside
the host's; the host's spill directory goes only with its last tree.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools

from launcher.remote import logtail, readiness, commands
from launcher.security import share
from launcher.verbs import ship
from launcher.store import state
from launcher.security import tls
from launcher.errors import LaunchError
from launcher.config.inventory import Inventory
from launcher.verbs.preflight import Probe
from launcher.remote.protocol import Spawn, Status
from launcher.store.records import ClusterRecord, HostRecord
from launcher.verbs.stop import stop_trees
from launcher.remote.transport import connection_key


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
    """A running cluster's record and the open connections that change its worker trees.

    ``conns`` (by :func:`~launcher.transport.connection_key`) must reach every
    host touched. ``started`` lists the trees started through this object,
    for a rollback.
    """

    def __init__(self, rec: ClusterRecord, inv: Inventory, conns: dict, step_timeout: float | None = None):
        self.rec, self.inv, self.conns = rec, inv, conns
        self.step_timeout = step_timeout or inv.step_timeout
        self.started: list[HostRecord] = []

    @functools.cached_property
    def shipped(self) -> list:
        """What the launch shipped, packed again for later trees (read from disk, never imported; once)."""
        return ship.pack(self.inv.ship) if self.inv.ship else []

    def save(self) -> None:
        state.write(self.rec)

    def trees(self, label: str) -> list[HostRecord]:
        return [h for h in self.rec.hosts if h.role == "workers" and h.label == label]

    async def start(self, probe: Probe, name: str | None = None) -> HostRecord:
        """Start a host's full tree (``name`` None) or one worker of that name; recorded first."""
        spec = probe.spec if name is None else dataclasses.replace(probe.spec, nworkers=1)
        rec = HostRecord.new(probe.spec, "workers", self.rec.name, spec.nworkers, probe.memory_limit,
                             scope=state.scope())
        if name is not None:  # its own run directory beside the host's (cleanup_paths lists that first)
            rec.rundir = f"{rec.rundir}.{name.rsplit('-', 1)[1]}"
            rec.remove, rec.names = [rec.rundir, *rec.remove[1:]], [name]
        self.rec.hosts.append(rec)
        self.started.append(rec)
        self.save()
        # Later trees carry the client's certificate, signed by the same CA
        # for the same uses, and the revocation check with today's list.
        files = {}
        if self.rec.tls:
            files = tls.files_for(self.rec.tls) | commands.revocation_files(share.revoked_text(self.rec))
        payload = commands.workers_payload(self.inv, spec, probe.listen, self.rec.scheduler,
                                                  probe.memory_limit, files, name=name, rundir=rec.rundir)
        if self.shipped:
            payload = dict(payload, archives=ship.archives(self.shipped))
        task = asyncio.ensure_future(self.conns[connection_key(spec)].request(
            Spawn(rec.token, payload), self.step_timeout))
        try:
            reply = await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait([task])  # the spawn's own timeout bounds this; then the rollback knows it
            raise
        rec.pid, rec.log = reply.pid, reply.log
        if reply.local_directory and not spec.local_directory:  # as the host resolved $TMPDIR
            remove, rec.prune = commands.cleanup_paths(self.rec.name, spec, "workers", reply.local_directory)
            rec.remove = [rec.rundir, *remove[1:]]
        self.save()
        if reply.failure:
            raise LaunchError(f"workers {reply.failure}: {logtail.summary(reply.log_tail)}", host=spec.address)
        ship.verify(self.shipped, reply.shipped, spec.address)
        return rec

    async def stop(self, recs: list[HostRecord]) -> None:
        """Stop these trees (one step per host, all at once), prove them gone, forget them.

        A host whose processes survive or that fails keeps its records and is
        named in the LaunchError raised after the others were handled.
        """
        by_host: dict[tuple, list[HostRecord]] = {}
        for r in recs:
            by_host.setdefault(connection_key(r.spec), []).append(r)
        results = await asyncio.gather(*(self._stop_host(k, rs) for k, rs in by_host.items()),
                                       return_exceptions=True)
        errors = [e for e in results if isinstance(e, BaseException)]
        self.save()
        for e in errors:
            if not isinstance(e, LaunchError):
                raise e
        if errors:
            raise LaunchError("; ".join(map(str, errors)))

    async def _stop_host(self, key: tuple, recs: list[HostRecord]) -> None:
        address = recs[0].address
        remaining = [h for h in self.trees(recs[0].label) if h not in recs]
        # The spill directory is shared by a host's trees: it goes with the last one.
        spill = sorted({p for h in self.trees(recs[0].label) for p in h.remove if p != h.rundir})
        cut = [dataclasses.replace(r, remove=[p for p in r.remove if p not in spill]) for r in recs]
        if not remaining:
            cut[0].remove = cut[0].remove + spill
        if key not in self.conns:
            raise LaunchError("not reachable to stop its workers", host=address)
        reply = await stop_trees(self.conns[key], cut, timeout=self.step_timeout)
        if reply.left:
            raise LaunchError(f"processes {reply.left} survived SIGKILL (still recorded)", host=address)
        for r in recs:
            self.rec.hosts.remove(r)

    async def alive(self, rec: HostRecord) -> bool:
        reply = await self.conns[connection_key(rec.spec)].request(Status([rec.token]), self.step_timeout)
        return reply.alive[rec.token] > 0

    async def await_registration(self, labels: set[str], timeout: float) -> dict[str, str]:
        """Wait until the scheduler has every recorded worker of these hosts; the late ones, and why."""
        expected = {lab: len(n) for lab, n in names_by_label(self.rec).items() if lab in labels}
        exited: set[str] = set()

        async def running(short: set[str]) -> set[str]:
            mine = [r for r in self.started if r.label in short and r in self.rec.hosts]
            answers = await asyncio.gather(*(self.alive(r) for r in mine), return_exceptions=True)
            gone = {r.label for r, a in zip(mine, answers) if a is False}
            gone -= {r.label for r, a in zip(mine, answers) if a is not False}
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

