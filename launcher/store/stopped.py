"""Where a stopped cluster's logs are: the hosts of its last record, kept after ``stop``.

``stop`` leaves the scheduler's and workers' logs on their hosts (a
post-mortem: launcher/verbs/stop.py) and forgets the cluster's record, which
holds its TLS key. This file keeps only what ``pyku-launch logs`` and
``stop --purge`` need to find those logs again: each tree's host (how to
reach it), run directory and what to remove. It lives beside the records
as ``<name>.stopped`` (0600; not ``*.json``, so the cluster is not taken
for a known one), and goes when the logs go: on ``stop --purge`` or the
cluster's next launch (whose spawns start from empty run directories).
"""

from __future__ import annotations

import contextlib
import json
import os

from launcher.store import state
from launcher.store.records import ClusterRecord, HostRecord


def _path(name: str):
    return state.state_dir() / f"{name}.stopped"


def keep(rec: ClusterRecord) -> None:
    """Remember where ``rec``'s logs stay (no keys, no certificates)."""
    text = json.dumps({"name": rec.name, "hosts": [h.to_json() for h in rec.hosts]}, indent=1)
    tmp = _path(rec.name).with_name(f"{rec.name}.stopped.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, _path(rec.name))


def hosts(name: str) -> list[HostRecord] | None:
    """The trees of the stopped cluster ``name`` whose logs may still be on their hosts; None if none."""
    try:
        data = json.loads(_path(name).read_text())
        return [HostRecord.from_json(h) for h in data["hosts"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def forget(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _path(name).unlink()
