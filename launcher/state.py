"""The local record of launched clusters: one JSON file per cluster name.

The record itself is :class:`launcher.records.ClusterRecord`; this module
keeps it on disk.

Files live in ``$XDG_STATE_HOME/pyku-launch`` (``~/.local/state/pyku-launch``),
the directory mode 0700 and every file 0600, because a state file holds the
client's TLS key. Writes are atomic (temp file + rename), so a crash never
leaves half a record; a record that cannot be read is reported as corrupt,
not trusted. A lock file per name serialises launches and stops of the same
cluster (``fcntl.flock``: released by the kernel if the holder dies).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from .errors import LaunchError
from .records import ClusterRecord, RecordError


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    d = Path(base) / "pyku-launch"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    return d


def state_path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def known_names() -> list[str]:
    return sorted(p.stem for p in state_dir().glob("*.json"))


class CorruptState(LaunchError):
    pass


def read(name: str) -> ClusterRecord | None:
    """The record of ``name``, None if there is none; CorruptState if unreadable.

    An older record is migrated as it is read (:meth:`ClusterRecord.from_json`).
    """
    path = state_path(name)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            data = {"name": name} | data
        return ClusterRecord.from_json(data)
    except (ValueError, RecordError) as e:
        raise CorruptState(f"{path}: corrupt state file ({e})") from None


def write(record: ClusterRecord) -> Path:
    """Save ``record`` under its name, atomically, readable by this user only."""
    path = state_path(record.name)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(record.to_json(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # only left if the write failed: it holds the client key
    return path


def remove(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path(name).unlink()


@contextlib.contextmanager
def lock(name: str, what: str):
    """Hold the cluster's lock; another holder → LaunchError, not a wait."""
    path = state_dir() / f"{name}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 100).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LaunchError(
                f"cluster '{name}' is busy: {holder} is launching or stopping it; try again when it is done"
            ) from None
        # The previous holder may have unlinked the file after we opened it:
        # then our lock is on a dead inode and a newcomer could lock a new one.
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{what} (pid {os.getpid()})".encode())
        try:
            yield
        finally:
            # No cluster left under this name: drop the lock file too, still holding it.
            if not state_path(name).exists():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
    finally:
        os.close(fd)
