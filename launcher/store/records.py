"""What the state file keeps of a cluster: typed records with one JSON form.

A :class:`ClusterRecord` is written by a launch (first while it is
starting, so a launch killed outright can be cleaned up, then when the
cluster runs) and read by ``status``, ``stop``, ``logs``, ``connect()`` and
the next launch. Each process tree the launch started is a
:class:`HostRecord`: its token (the only way back to its processes, see
docs/architecture.md) and the paths to remove when it is stopped.

The JSON carries a ``version``. :func:`ClusterRecord.from_json` migrates an
older record step by step (:data:`_MIGRATIONS`) before reading it, and
refuses a record of a newer pyku-launch rather than guess at it.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field

from launcher.remote import commands
from launcher.config.inventory import HostSpec
from launcher.security.tls import Material, security

VERSION = 4


class RecordError(ValueError):
    """A JSON value that is not a record this pyku-launch can read; the message says why."""


@dataclass
class HostRecord:
    """One process tree the launch started (or is starting) on one host."""

    address: str
    label: str
    role: str                   # "scheduler" | "workers"
    spec: HostSpec              # how to reach the host again (for stop, status, logs)
    token: str                  # carried by every process of the tree: how stop finds them
    rundir: str                 # remote run directory (logs, certificates, wait file)
    remove: list[str]           # paths removed when the tree is stopped
    prune: list[str]            # directories removed when empty
    expected: int = 0           # workers the scheduler should have from this tree
    memory_limit: int | None = None  # per worker, bytes
    pid: int | None = None      # the tree's leader, once the spawn replied
    log: str | None = None      # its log file, once the spawn replied
    names: list[str] | None = None  # its workers' names; None: <label>-0 ... <label>-<expected - 1>
    source: str = "ssh"         # the worker source that started it and stops it (launcher/sources/)
    extra: dict = field(default_factory=dict)  # what that source keeps of it besides (a batch job's id...)
    home: str | None = None     # ``~`` on the host as its agent resolved it (from the spawn's reply): stop
                                # resolves the paths without the agent (launcher/remote/quickstop.py)

    def worker_names(self) -> list[str]:
        """The names its workers register with at the scheduler."""
        if self.names is not None:
            return list(self.names)
        return [f"{self.label}-{i}" for i in range(self.expected)] if self.role == "workers" else []

    @classmethod
    def new(cls, spec: HostSpec, role: str, name: str, expected: int = 0,
            memory_limit: int | None = None, scope: str = "", source: str = "ssh") -> HostRecord:
        """The record of a tree about to start: a fresh token, its paths on the host.

        The token is ``<name>.<scope>.<random>.<label>.<role>``: unique, and
        still naming its cluster and the state directory it was launched
        from (``scope``, see :func:`launcher.state.scope`) when the record
        is lost, so that ``stop --inventory`` can find it.
        """
        remove, prune = commands.cleanup_paths(name, spec, role)
        return cls(address=spec.address, label=spec.label, role=role, spec=spec,
                   token=f"{name}.{scope}.{uuid.uuid4().hex}.{spec.label}.{role}",
                   rundir=commands.run_dir(name, spec, role), remove=remove, prune=prune,
                   expected=expected, memory_limit=memory_limit, source=source)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> HostRecord:
        spec = dict(data["spec"])
        spec["shared"] = tuple(spec.get("shared", ()))  # a JSON list; HostSpec is hashable
        return cls(**dict(data, spec=HostSpec(**spec)))


@dataclass
class ClusterRecord:
    """A launched (or half-launched) cluster: the whole content of its state file."""

    name: str
    phase: str                          # "starting" until every worker is in, then "running"
    launcher_pid: int                   # the launch that wrote it
    inventory: str                      # path of the inventory file
    inventory_sha256: str
    protocol: str                       # "tls" | "tcp"
    hosts: list[HostRecord] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # hosts left out (by label) and why
    scheduler: str | None = None        # its address, once running
    dashboard: str | None = None
    tls: Material | None = None         # the client's certificate and key (why the file is 0600)
    started: float | None = None        # time.time() when it ran
    launch_seconds: float | None = None
    ca_key: str | None = None           # the cluster CA's key: signs shares (launcher/share.py)
    shares: list[dict] = field(default_factory=list)  # issued shares: label, serial, expires, revoked
    shipped: dict[str, str] = field(default_factory=dict)  # package -> fingerprint shipped (launcher/ship.py)
    #: Cluster-wide settings it converged to (options, dask_config), compared by a reconcile.
    settings: dict = field(default_factory=dict)
    version: int = VERSION
    #: Set on the record a launch returns when the cluster was already running (never saved).
    already_running: bool = field(default=False, compare=False)
    #: The plan a reconcile applied to a running cluster, one line per step (never saved).
    applied: list[str] = field(default_factory=list, compare=False)

    @property
    def scheduler_host(self) -> HostRecord | None:
        """The scheduler's host record (None in a record written before it was spawned)."""
        return next((h for h in self.hosts if h.role == "scheduler"), None)

    @property
    def running(self) -> bool:
        return self.phase == "running"

    def security(self):
        """The client's ``distributed.Security`` (None for tcp)."""
        return security(self.tls) if self.tls is not None else None

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) 
               if f.name not in ("already_running", "applied")}
        out["hosts"] = [h.to_json() for h in self.hosts]
        out["tls"] = dataclasses.asdict(self.tls) if self.tls is not None else None
        out["version"] = VERSION
        return out

    @classmethod
    def from_json(cls, data) -> ClusterRecord:
        """Read (and migrate) a record; :class:`RecordError` if it is none."""
        if not isinstance(data, dict) or "hosts" not in data:
            raise RecordError("not a pyku-launch state record")
        version = data.get("version", 0)
        if not isinstance(version, int) or version > VERSION:
            raise RecordError(f"written by a newer pyku-launch (record version {version}, this one reads "
                              f"up to {VERSION}): use that version to stop it")
        for v in range(version, VERSION):
            data = _MIGRATIONS[v](data)
        try:
            fields = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in fields} | {
                "hosts": [HostRecord.from_json(h) for h in data["hosts"]],
                "tls": Material(**data["tls"]) if data.get("tls") else None})
        except (KeyError, TypeError) as e:
            raise RecordError(f"host record: {e}") from None


def _from_unversioned(data: dict) -> dict:
    """Records before the version field: same keys, some of them optional."""
    defaults = {"phase": "starting", "launcher_pid": 0, "inventory": "", "inventory_sha256": "",
                "protocol": "tls", "missing": {}}
    return defaults | data | {"version": 1}


def _single_trees(data: dict) -> dict:
    """Version 2 (reconcile, launcher.Cluster): a host may have several trees, each naming its
    workers (``names``; None: the launch's), and the record keeps the cluster-wide ``settings``.
    A version-1 reader would take such a record for corrupt; the version makes it refuse it instead."""
    hosts = [dict(h, names=h.get("names")) for h in data.get("hosts", [])]
    return data | {"hosts": hosts, "settings": data.get("settings", {}), "version": 2}


def _sourced(data: dict) -> dict:
    """Version 3 (worker sources, launcher/sources/): every tree names the ``source`` that stops it
    and keeps that source's ``extra`` fields; every tree before was an SSH host's. A version-2
    reader would take a batch job's tree for one on an SSH host; the version makes it refuse it."""
    hosts = [dict(h, source=h.get("source", "ssh"), extra=h.get("extra", {})) for h in data.get("hosts", [])]
    return data | {"hosts": hosts, "version": 3}


def _homed(data: dict) -> dict:
    """Version 4 (issue 26, a stop without the agent): a tree keeps the ``home`` its host resolved
    ``~`` to; unknown (None) for older trees, whose stop asks the agent. A version-3 reader would
    refuse the unknown key as a corrupt record; the version makes it say why."""
    hosts = [dict(h, home=h.get("home")) for h in data.get("hosts", [])]
    return data | {"hosts": hosts, "version": 4}


#: ``_MIGRATIONS[v]`` turns a record of version ``v`` into one of version ``v + 1``.
_MIGRATIONS = {0: _from_unversioned, 1: _single_trees, 2: _sourced, 3: _homed}
