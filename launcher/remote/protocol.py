"""The agent's operations as types: one request and one reply dataclass per op.

``agent.py`` runs on the hosts with the standard library only, so it speaks
plain JSON; this module is the launcher's side of that contract (see
docs/architecture.md, "The agent protocol"). :meth:`Connection.request
<launcher.transport.Connection.request>` sends a request and returns its
typed reply. A reply that is only ``{"error": ...}`` (the operation itself
raised) never gets here: the connection raises it as a ``LaunchError``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar


def _from_json(cls, data: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class SpawnReply:
    """A process tree started. ``failure``: it exited, or did not write its wait file in time."""

    pid: int | None = None
    log: str | None = None
    wait_file: dict | None = None   # the JSON the process wrote (the scheduler's address)
    failure: str | None = None
    log_tail: list[str] = field(default_factory=list)
    local_directory: str | None = None  # the workers' spill space, as the host resolved it
    rundir: str | None = None       # the run directory, as the host resolved it (absolute)
    shipped: dict[str, str] = field(default_factory=dict)  # package -> fingerprint of the unpacked copy

    @classmethod
    def from_json(cls, data: dict) -> SpawnReply:
        return _from_json(cls, dict(data, failure=data.get("error")))


@dataclass
class Spawn:
    """Start one detached process tree carrying ``token`` (the payload: see remote.commands)."""

    token: str
    payload: dict
    op: ClassVar[str] = "spawn"
    Reply: ClassVar[type] = SpawnReply

    def to_json(self) -> dict:
        return dict(self.payload, token=self.token)


@dataclass
class StatusReply:
    alive: dict[str, int]           # token -> live processes carrying it


@dataclass
class Status:
    """How many processes of each token are alive."""

    tokens: list[str]
    op: ClassVar[str] = "status"
    Reply: ClassVar[type] = StatusReply

    def to_json(self) -> dict:
        return {"tokens": self.tokens}


@dataclass
class StopReply:
    found: int                      # processes found with the tokens
    killed: int                     # of which SIGKILL ended
    left: list[int]                 # survivors (pids); empty on success
    removed: list[str] = field(default_factory=list)
    kept: bool = False              # files kept: a namesake of another state directory runs (a sweep)


@dataclass
class Stop:
    """End every process carrying one of ``tokens`` (or a token starting with one of
    ``prefixes``) and their descendants, verify, then remove ``remove`` and empty ``prune``."""

    tokens: list[str]
    remove: list[str]
    prune: list[str]
    grace: float = 3.0              # seconds between SIGTERM and SIGKILL
    settle: float = 0.0             # look again after this long (a half-launched cluster)
    prefixes: list[str] = field(default_factory=list)  # a sweep: "<name>.<scope>."
    keep_if_running: str | None = None  # keep the files if a token with this prefix still runs
    empty: list[str] = field(default_factory=list)  # directories emptied but for what matches ``keep``
    keep: list[str] = field(default_factory=list)   # name patterns that stay in ``empty`` (the logs)
    op: ClassVar[str] = "stop"
    Reply: ClassVar[type] = StopReply

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class LogsReply:
    logs: dict[str, list[str]]      # file name -> its last lines


@dataclass
class Logs:
    """The last ``n`` lines of every ``*.log`` in a run directory."""

    rundir: str
    n: int = 20
    op: ClassVar[str] = "logs"
    Reply: ClassVar[type] = LogsReply

    def to_json(self) -> dict:
        return {"rundir": self.rundir, "n": self.n}


@dataclass
class PutReply:
    written: list[str]              # files written; empty if the run directory is gone


@dataclass
class Put:
    """Rewrite ``files`` (name -> text, 0600) in the existing run directory ``rundir``."""

    rundir: str
    files: dict[str, str]
    op: ClassVar[str] = "put"
    Reply: ClassVar[type] = PutReply

    def to_json(self) -> dict:
        return {"rundir": self.rundir, "files": self.files}


@dataclass
class RunReply:
    rc: int | None                  # the command's exit code; None: it timed out
    stdout: str
    stderr: str
    shipped: dict[str, str] = field(default_factory=dict)  # package -> fingerprint of the unpacked copy


@dataclass
class Run:
    """Run the shell ``command`` (in ``rundir`` after writing ``files`` there, 0600, and unpacking
    ``archives``, shipped packages, into its ``ship/``, if given)."""

    command: str
    rundir: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    archives: dict[str, str] = field(default_factory=dict)
    op: ClassVar[str] = "run"
    Reply: ClassVar[type] = RunReply

    def to_json(self) -> dict:
        out = {"command": self.command, "seconds": self.timeout}
        return out | ({"rundir": self.rundir, "files": self.files, "archives": self.archives} if self.rundir else {})


def parse_reply(request, data: dict):
    """The typed reply of ``request`` from the agent's JSON."""
    reply_type = request.Reply
    if hasattr(reply_type, "from_json"):
        return reply_type.from_json(data)
    return _from_json(reply_type, data)
