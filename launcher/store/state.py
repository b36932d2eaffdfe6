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
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

from launcher.errors import LaunchError
from launcher.store.records import ClusterRecord, RecordError


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
    """A state file that cannot be read, and no good copy of it: it is kept, never removed.

    ``inventory`` is the inventory path the damaged file still names, if any:
    ``pyku-launch stop --inventory`` ends the cluster without its record.
    """

    def __init__(self, name: str, path: Path, why: str, inventory: str | None = None):
        self.name, self.path, self.inventory = name, path, inventory
        super().__init__(f"{path}: corrupt state file ({why}); kept, nothing was stopped or started: "
                         f"pyku-launch stop --inventory {inventory or 'HOSTS.toml'} ends cluster '{name}'"
                         f" on every host of its inventory without it")


def scope() -> str:
    """A short digest of the state directory, part of every token a launch gives out.

    A sweep (``stop --inventory``) ends the processes whose token starts with
    ``<name>.<scope>.``: the cluster of that name launched from *this* state
    directory, not a namesake another user of the same account launched
    from another one.
    """
    return hashlib.sha256(str(state_dir().resolve()).encode()).hexdigest()[:8]


def _backup_path(name: str) -> Path:
    return state_dir() / f"{name}.json.bak"


def _parse(name: str, path: Path, text: str) -> ClusterRecord:
    """The record in ``text`` (migrated if older); CorruptState naming what the damaged text still says."""
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            data = {"name": name} | data
        return ClusterRecord.from_json(data)
    except (ValueError, RecordError) as e:
        named = re.search(r'"inventory":\s*("(?:[^"\\]|\\.)*")', text)
        try:
            inventory = json.loads(named[1]) if named else None
        except ValueError:
            inventory = None
        raise CorruptState(name, path, str(e), inventory) from None


def read(name: str) -> ClusterRecord | None:
    """The record of ``name``, None if there is none; CorruptState if unreadable.

    An older record is migrated as it is read (:meth:`ClusterRecord.from_json`).
    Every write leaves a copy (``<name>.json.bak``); if the record itself is
    damaged and the copy is good, the copy is restored (the damaged file is
    kept as ``<name>.json.corrupt``, and a warning logged). Nothing is ever
    removed because it could not be read.
    """
    path = state_path(name)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return _parse(name, path, text)
    except CorruptState as damaged:
        try:
            good = _parse(name, _backup_path(name), _backup_path(name).read_text())
        except (OSError, CorruptState):
            raise damaged from None
        kept = path.with_name(f"{name}.json.corrupt")
        os.replace(path, kept)
        write(good)
        logging.getLogger("launcher").warning(
            "%s; restored the last good copy (the damaged file is kept as %s)",
            str(damaged).split("; kept")[0], kept)
        return good


def write(record: ClusterRecord) -> Path:
    """Save ``record`` under its name, atomically and readable by this user only, then its
    copy (the last good one, for :func:`read`)."""
    text = json.dumps(record.to_json(), indent=1)
    for path in (state_path(record.name), _backup_path(record.name)):
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()  # only left if the write failed: it holds the client key
    return state_path(record.name)


def remove(name: str) -> None:
    """Forget the cluster: its record, the copy, a damaged file kept by :func:`read`, and the
    certificate files ``pyku-launch env`` wrote for it."""
    for path in (state_path(name), _backup_path(name), state_dir() / f"{name}.json.corrupt"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    shutil.rmtree(env_dir(name), ignore_errors=True)


def env_dir(key: str) -> Path:
    """Where ``pyku-launch env`` keeps client certificate files (:mod:`launcher.dask_env`):
    ``key`` is a cluster's name, or ``<name>.<serial>`` for a connection file."""
    return state_dir() / "env" / key


def _lock_path(name: str) -> Path:
    return state_dir() / f"{name}.lock"


def note(name: str, what: str) -> None:
    """Say in the lock file what its holder (this process) is doing now, for :func:`holder`."""
    try:
        fd = os.open(_lock_path(name), os.O_WRONLY)
    except FileNotFoundError:  # not holding the lock (a caller below the API)
        return
    try:
        os.ftruncate(fd, 0)
        os.write(fd, what.encode())
    finally:
        os.close(fd)


def holder(name: str) -> str | None:
    """What the holder of the cluster's lock is doing ("launch (pid 42, step workers)"), None if unheld.

    Read from the kernel's list of locks (``/proc/locks``), so that asking
    never takes the lock, not even for an instant a launch could run into.
    """
    path = _lock_path(name)
    try:
        st = path.stat()
        with open("/proc/locks") as f:
            held = [ln.split() for ln in f]
    except OSError:  # no lock file, or not Linux
        return None
    for fields in held:
        try:
            major, minor, inode = fields[5].split(":")
            ours = (int(major, 16), int(minor, 16), int(inode)) == (os.major(st.st_dev), os.minor(st.st_dev),
                                                                     st.st_ino)
        except (IndexError, ValueError):
            continue
        if fields[1] == "FLOCK" and ours:
            try:
                return path.read_text().strip() or f"pid {fields[4]}"
            except OSError:
                return f"pid {fields[4]}"
    return None


def busy_words(holder: str) -> str:
    """``"launch (pid 42, step workers)"`` → ``"launching (pid 42, step workers)"``."""
    verb, _, rest = holder.partition(" ")
    words = {"launch": "launching", "stop": "stopping", "share": "sharing", "revoke": "revoking"}
    return words.get(verb, verb) + (f" {rest}" if rest else "")


@contextlib.contextmanager
def lock(name: str, what: str):
    """Hold the cluster's lock; another holder → LaunchError, not a wait.

    ``what`` (``"launch"``, ``"stop"``) is written into the lock file with our
    pid, for the error another command gets and for :func:`holder`.
    """
    path = _lock_path(name)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = os.read(fd, 100).decode(errors="replace").strip()
            os.close(fd)
            raise LaunchError(
                f"cluster '{name}' is busy: {busy_words(busy) if busy else 'another pyku-launch works on it'};"
                f" try again when it is done") from None
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
