"""The preload that keeps a process tree's log bounded: rotated when it passes a size.

Not imported by the launcher: its source is written into every run
directory (``pyku_logcap.py``) and loaded by the scheduler (``--preload``)
and the workers' nanny process (``--preload-nanny``), one watcher per
process. The logs stay on the hosts after a stop or a crash (a
post-mortem), so on a machine a team shares they must not grow without end.

A tree's output goes to its log file, opened for appending by the agent
and inherited by everything the tree forks (nannies, workers, what tasks
print). Every ``PYKU_LOG_CHECK`` seconds the watcher looks at the size of
that file (the one behind this process's stderr): past ``PYKU_LOG_MAX_BYTES``
it is copied to ``<log>.1`` (the one rotated copy, replaced) and truncated
in place, the way logrotate's ``copytruncate`` does. Every writer appends,
so it goes on at the new end; what is written between the copy and the
truncation (milliseconds) is lost. Bound per tree: twice the size.
"""

import logging
import os
import shutil
import threading

logger = logging.getLogger("distributed.pyku_logcap")
_started = []


def rotate(fd: int, limit: int) -> bool:
    """Copy the file behind ``fd`` to ``<name>.1`` and truncate it if it is past ``limit``; True if rotated."""
    st = os.fstat(fd)
    if st.st_size <= limit:
        return False
    path = os.readlink(f"/proc/self/fd/{fd}")
    if not os.path.isfile(path) or os.stat(path).st_ino != st.st_ino:
        return False  # not a file, or no longer the one at that name
    shutil.copyfile(path, path + ".1")
    os.ftruncate(fd, 0)
    return True


def _watch(fd: int, limit: int, every: float) -> None:
    stop = threading.Event()
    while not stop.wait(every):
        try:
            if rotate(fd, limit):
                logger.info("log rotated (past %d bytes): the earlier part is in its .1 copy", limit)
        except OSError:
            return  # no /proc, the file went: nothing to bound


def dask_setup(server):
    if _started:  # several nannies of one process share its stderr: one watcher
        return
    limit = int(os.environ.get("PYKU_LOG_MAX_BYTES") or 0)
    if limit <= 0:
        return
    _started.append(True)
    every = float(os.environ.get("PYKU_LOG_CHECK") or 10)
    threading.Thread(target=_watch, args=(2, limit, every), daemon=True, name="pyku-logcap").start()
