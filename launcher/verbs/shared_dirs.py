"""Prove that ``[cluster] shared`` directories are one file system on every host and here.

pyku's ``persistent_processing`` has the workers write their outputs into
``tmpdir`` and the client read them back: a ``tmpdir`` that is a different
directory on some host (a local ``/scratch`` instead of the NFS mount, a
mount that failed at boot) loses those results without an error. So the
preflight proves each shared directory, inside the probe round trip it
makes anyway (no step of its own):

1. this machine writes a file with a random token into each directory;
2. every host's probe (``agent._shared_dir``) checks that the directory
   exists, writes a file of its own there (so it is writable), reads the
   client's token back (so it is the same directory) and reports the free
   space;
3. this machine reads every host's file (so what the hosts write, it sees),
   then removes all of them.

A host's paths may differ from this machine's (``[[host]] shared``, in the
same order). A refusal names the host and the path (exit 3, like any
preflight refusal).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

from launcher.errors import PreflightError
from launcher.ui.tables import fmt_bytes

PREFIX = ".pyku-launch-shared-"


@dataclass
class SharedCheck:
    """One preflight's check of the shared directories: the token files it wrote."""

    paths: tuple[str, ...]                   # as this machine sees them
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    written: list[str] = field(default_factory=list)  # files to remove at the end

    @property
    def client_file(self) -> str:
        return PREFIX + self.token

    def host_file(self, spec, role: str) -> str:
        return f"{PREFIX}{self.token}-{spec.label}.{role}"

    def payload(self, spec, role: str) -> list[dict]:
        """The ``shared`` part of a host's probe request."""
        own = spec.shared or self.paths
        return [{"path": p, "read": self.client_file, "token": self.token, "write": self.host_file(spec, role)}
                for p in own]

    def assess(self, probe) -> None:
        """Add this host's problems with its shared directories to its probe."""
        if not self.paths or not probe.reply:
            return
        here = dict(zip(probe.spec.shared or self.paths, self.paths))
        for d in probe.reply.get("shared", []):
            path = d["path"]
            if d.get("error"):
                probe.problems.append(f"shared directory {path}: {d['error']}")
                continue
            if not d.get("seen"):
                probe.problems.append(
                    f"shared directory {path} is not the one this machine has at {here[path]} "
                    f"(a file written here is not there: mount the shared file system, or set this "
                    f"host's own path with shared = [...] under its [[host]])")
                continue
            mine = os.path.join(here[path], self.host_file(probe.spec, probe.role))
            self.written.append(mine)
            if not os.path.exists(mine):
                probe.problems.append(f"shared directory {path}: what this host writes there does not "
                                      f"appear in {here[path]} on this machine")


def prepare(inv) -> SharedCheck | None:
    """Write this machine's token file into every shared directory; None if there are none.

    Raises :class:`PreflightError` naming the directory if this machine
    cannot (the client reads the results there too).
    """
    if not inv.shared:
        return None
    check = SharedCheck(inv.shared)
    problems = []
    for path in inv.shared:
        target = os.path.join(path, check.client_file)
        try:
            if not os.path.isdir(path):
                raise FileNotFoundError(2, "does not exist" if not os.path.exists(path) else "is not a directory")
            with open(target, "w") as f:
                f.write(check.token)
            check.written.append(target)
        except OSError as e:
            problems.append(f"shared directory {path}: {e.strerror or e}")
    if problems:
        cleanup(check)
        raise PreflightError("refused: this machine: " + "; ".join(problems))
    return check


def cleanup(check: SharedCheck | None) -> None:
    """Remove every token file this check wrote or read (on a shared file system: all of them)."""
    for path in check.written if check else ():
        try:
            os.remove(path)
        except OSError:
            pass


def free_lines(probe) -> list[str]:
    """``shared <path>: <free> free`` for each of a host's shared directories (what ``check`` prints)."""
    return [f"shared {d['path']}: {fmt_bytes(d['free'])} free"
            for d in probe.reply.get("shared", []) if d.get("free") is not None]
