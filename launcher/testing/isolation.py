"""Keep a test to itself: its own HOME and TMPDIR, and a mark on every process it starts.

A test of the launcher starts real clusters as the user running the tests,
on a machine where that user may run a cluster of their own (the README's
quickstart, named ``local``) and other people may run theirs. So each test
gets

- its own ``HOME`` (run directories ``~/.pyku-launch/<name>``, the default
  ``~/.ssh/known_hosts``, the state under ``~/.local/state``) and its own
  ``TMPDIR`` (spill directories, multiprocessing's sockets), exported on the
  test hosts too (:func:`exports`, used by ``SSHTestbed.env_line``);
- a mark, :data:`MARK_VAR` ``=<random>``, in the environment of the test
  process and therefore of everything it starts: local children inherit it,
  remote commands get it from the env line, and the launcher's agents pass
  their environment on to the scheduler, the nannies and the workers.

:func:`marked_processes` finds exactly the processes one test started
(never another test's or another user's), and :func:`end_marked` is what
the suite's autouse fixture runs after every test: whatever a test left
running is killed, and the test fails, naming it.
"""

from __future__ import annotations

import os
import shlex
import signal
import time
import uuid
from pathlib import Path

#: Environment variable carrying a test's mark.
MARK_VAR = "PYKU_LAUNCH_TEST_MARK"

#: What a test owns privately and the test hosts must see as well.
PRIVATE_VARS = ("HOME", "TMPDIR", MARK_VAR)


def new_mark() -> str:
    """A mark no other test (or test run) uses."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def exports() -> str:
    """Shell ``export`` commands giving a remote command this test's HOME, TMPDIR and mark.

    Empty outside a marked test (a benchmark keeps the user's own HOME).
    """
    if not os.environ.get(MARK_VAR):
        return ""
    return " && ".join(f"export {var}={shlex.quote(os.environ[var])}"
                       for var in PRIVATE_VARS if os.environ.get(var))


def marked_processes(mark: str | None = None) -> list[tuple[int, str]]:
    """(pid, command line) of every live process carrying ``mark`` (default: the current one).

    Reads ``/proc/<pid>/environ``, the environment a process started with:
    only processes of this user (or all, as root) can be read, and the
    calling process is left out.
    """
    mark = mark or os.environ.get(MARK_VAR)
    if not mark:
        return []
    needle, me, found = f"{MARK_VAR}={mark}".encode(), os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if needle not in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                continue
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours to read
        if state != b"Z":
            found.append((int(entry), cmd.strip()))
    return found


#: multiprocessing's per-interpreter helpers: started by the first test that
#: needs them, they live as long as the process that started them.
_OWN_HELPERS = ("from multiprocessing.resource_tracker import main", "from multiprocessing.forkserver import main")


def _own_helper(pid: int, cmd: str) -> bool:
    """A multiprocessing helper of this very process (pytest's), not something a test left."""
    try:
        ppid = int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return False
    return ppid == os.getpid() and any(h in cmd for h in _OWN_HELPERS)


def end_marked(mark: str, grace: float = 10.0) -> list[str]:
    """Wait up to ``grace`` s for ``mark``'s processes to end, SIGKILL the rest; their command lines.

    An empty list means the test left nothing running. The grace covers
    what ends by itself a moment after a test (an agent reading the EOF of
    its channel, a worker past its death timeout).
    """
    def leftovers():
        return [(pid, cmd) for pid, cmd in marked_processes(mark) if not _own_helper(pid, cmd)]

    deadline = time.monotonic() + grace
    left = leftovers()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = leftovers()
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return [f"{pid} {cmd[:200]}" for pid, cmd in left]
