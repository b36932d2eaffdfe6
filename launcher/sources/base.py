"""The worker-source interface: what launch, stop, status, reconcile and ``Cluster`` ask of a kind of workers.

A source is one kind of place workers come from: SSH hosts
(:mod:`launcher.sources.ssh`), later batch-scheduler pools. The verbs hold
the cluster-wide logic (locks, the record, the scheduler, preflight, the
wait at the scheduler, rollback); a source only starts worker *trees*, says
whether their processes still run, stops them and proves them gone, and
describes them for ``status``. The line is drawn where distributed's
``ProcessInterface`` (``start``/``close`` per worker), dask-jobqueue's
``Job`` (a submitted job per worker group, cancelled by its id) and Ray's
``NodeProvider`` (``create_node``/``terminate_node``/``non_terminated_nodes``,
nodes found again by their tags) draw it: per group of workers, found again
by a tag. Here the tag is :attr:`HostRecord.token`; every tree is recorded
(``HostRecord``, ``source`` naming its kind) *before* it starts, so stop and
status need the record only, never the inventory.

A source's *members* are what the inventory lists for it, one label each
(an SSH host; a pool). Each member is reached through a :class:`HostSpec`
(the host itself, or a login host), opened by the verb in one shared pool
(:class:`Context`), probed by the shared preflight, and its workers register
at the scheduler as ``<label>-<i>`` (what :mod:`launcher.remote.readiness`
counts).
"""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Protocol

from launcher.config.inventory import HostSpec, Inventory
from launcher.errors import LaunchError
from launcher.remote.transport import Connection, StepHook, close_all, connection_key, open_connections
from launcher.store.records import HostRecord


class Context:
    """What a verb lends the sources it drives: the cluster's name, one pool of connections, the step timeout.

    ``open(specs)`` connects to the hosts not yet connected (all at once);
    ``conn(spec)`` is the connection to a host, or the LaunchError of its
    failed connection. Use it as ``async with``: the pool is closed at the end.
    """

    def __init__(self, name: str, step_timeout: float = 60.0, on_step: StepHook | None = None):
        self.name, self.step_timeout, self.on_step = name, step_timeout, on_step
        self.conns: dict[tuple, Connection] = {}
        self.failed: dict[tuple, LaunchError] = {}

    async def open(self, specs, agents: bool = True) -> dict[tuple, LaunchError]:
        """Connect to every host of ``specs`` not yet tried; the failures so far, by connection key.

        ``agents=False``: a host's agent starts at its first step, not at once (a stop needs none).
        """
        new = [s for s in specs if connection_key(s) not in self.conns and connection_key(s) not in self.failed]
        if new:
            conns, failed = await open_connections(new, self.on_step, agents)
            self.conns.update(conns)
            self.failed.update(failed)
        return self.failed

    def reached(self, spec: HostSpec) -> bool:
        return connection_key(spec) in self.conns

    def conn(self, spec: HostSpec) -> Connection:
        key = connection_key(spec)
        if key in self.conns:
            return self.conns[key]
        raise self.failed.get(key) or LaunchError("not connected", host=spec.address)

    async def close(self) -> None:
        await close_all(self.conns)
        self.conns = {}

    async def __aenter__(self) -> Context:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


@dataclass(frozen=True)
class Join:
    """What a source's workers need to join the running scheduler."""

    scheduler: str                                   # the scheduler's address
    files: dict[str, str] = field(default_factory=dict)  # TLS material and revocation list, by file name
    archives: dict[str, str] = field(default_factory=dict)  # shipped packages (launcher/verbs/ship.py)
    verify: Callable[[dict, str], None] = lambda shipped, host: None  # checks a tree's unpacked packages


@dataclass
class Stopped:
    """What a stop did: counts, and every tree that is not proven gone (still recorded, by address)."""

    found: int = 0
    killed: int = 0
    gone: list[HostRecord] = field(default_factory=list)      # proven gone: forget them
    left: dict[str, list] = field(default_factory=dict)       # address -> what survived (pids, job ids)
    unreachable: dict[str, str] = field(default_factory=dict)  # address -> why it could not be asked
    kept: list[str] = field(default_factory=list)  # a sweep: where a namesake's files were left alone

    def add(self, other: Stopped) -> Stopped:
        self.found += other.found
        self.killed += other.killed
        self.gone += other.gone
        self.left |= other.left
        self.unreachable |= other.unreachable
        self.kept += other.kept
        return self


class WorkerSource(Protocol):
    """One kind of workers (see the module). ``inv`` is None when built from records (stop, status)."""

    #: The registry key (:mod:`launcher.sources.registry`) and :attr:`HostRecord.source` of its trees.
    kind: ClassVar[str]
    #: Readiness policy: True, a launch waits until every worker registered (a late member is
    #: named and dropped); False, it reports what is still pending (``describe``) and returns.
    wait: ClassVar[bool]
    #: How the shared preflight (launcher/verbs/preflight.py) probes a member's host: "workers",
    #: the workers run there (versions, memory and CPUs checked); "login", it is only where they
    #: are started from (versions checked; the source's own ``preflight`` checks the rest).
    probe_role: ClassVar[str]

    def __init__(self, inv: Inventory | None = None) -> None: ...

    def members(self) -> list[HostSpec]:
        """The inventory's members, one label each: what is connected to, probed and started."""

    async def preflight(self, ctx: Context, probes: list) -> dict[str, str]:
        """The source's own checks of its probed members, after the shared probe; label -> why refused."""

    async def start(self, ctx: Context, probe, join: Join, record: Callable[[HostRecord], None],
                    name: str | None = None) -> list[HostRecord]:
        """Start a probed member's worker trees (``probe``: :class:`~launcher.verbs.preflight.Probe`).

        ``name`` None: the member's full set of workers (an SSH host: one
        tree; a pool: one per job); else the unit that worker of that name
        belongs to, a tree of its own (an SSH host: that one worker; a pool:
        the job of that worker's slot, all its workers). ``record(rec)`` must be called for each tree before it starts
        (it persists the record; where it returns an awaitable, :func:`recorded` awaits that before the start:
        a launch saves the records of many hosts in one write); records are updated in place as the start
        goes. Raises LaunchError naming the host if a start failed (what was
        recorded stays: stop it). Returns the trees started.
        """

    async def alive(self, ctx: Context, recs: list[HostRecord]) -> dict[str, bool | None]:
        """Per token: does a process (or job) of the tree still exist; None: could not tell."""

    async def stop(self, ctx: Context, recs: list[HostRecord], *, remaining: list[HostRecord] = (),
                   settle: float = 0.0, keep_logs: bool = False) -> Stopped:
        """End these trees and prove it (survivors and unreachable hosts are reported, not raised).

        ``remaining``: the cluster's trees of this source that keep running
        (what they share, such as a host's spill directory, stays). ``settle``:
        look again after that long (a half-launched cluster's processes may
        still be starting). ``keep_logs``: leave the trees' logs where
        ``pyku-launch logs`` reads them after the stop (launcher/store/stopped.py).
        """

    async def sweep(self, ctx: Context) -> Stopped:
        """End every tree of cluster ``ctx.name`` launched from this state directory on the members, without
        a record (``stop --inventory``): found by the start of their tokens (:func:`launcher.store.state.scope`)."""

    # Optional (looked up with hasattr; see docs/architecture.md): settings(label) -> dict, a member's
    # settings beyond its HostSpec that a reconcile compares; dry_run() -> list[str]; slots(label) ->
    # list[tuple[str, ...]], a member's units of workers started and stopped as one, in the order
    # launcher.Cluster's scale fills them (default: each worker <label>-<i> is a unit).

    async def why_late(self, ctx: Context, recs: list[HostRecord]) -> dict[str, str]:
        """Per label, a short reason its workers did not all register (a log's last words), or nothing."""

    async def describe(self, ctx: Context, recs: list[HostRecord], live: Counter) -> list[dict]:
        """``status`` rows for these trees (``live``: workers at the scheduler per label).

        Every row has ``address``, ``role``, ``expected``, ``live``,
        ``memory_limit`` (the stable ``--json`` keys); a source may add its
        own (``source``, a job's state...), and ``detail``, a line saying what a
        pending tree waits for.
        """


async def recorded(result) -> None:
    """Wait until what a ``record`` callback returned is done (the record is on disk), if anything."""
    if inspect.isawaitable(result):
        await result
