"""The last memory figure of every worker, to name a worker that died while processing a piece.

A worker killed for exceeding its memory limit is gone from the scheduler
by the time its task fails (and the ``KilledWorker`` the client receives
carries no memory figure), so the figures are polled while pieces run.
"""

from __future__ import annotations

import contextlib
import threading

from pyku.errors import WorkerDiedError


class WorkerMemory:
    """Polls ``client`` for every worker's memory every ``interval`` s in a thread, while in a ``with``."""

    def __init__(self, client, interval=1.0):
        self.client, self.interval = client, interval
        self.last: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="pyku-worker-memory", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False

    def _poll(self):
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a client closing under us: nothing to record
                for address, info in self.client.scheduler_info(n_workers=-1)["workers"].items():
                    memory = info.get("metrics", {}).get("memory")
                    if memory is not None:
                        self.last[address] = memory
            self._stop.wait(self.interval)

    def died(self, exc, path, index):
        """A :class:`WorkerDiedError` for the ``KilledWorker`` of ``path`` piece ``index``."""
        worker = exc.last_worker
        limit = getattr(worker, "memory_limit", 0) or 0
        memory = self.last.get(worker.address)
        figure = ("no memory figure was received from it" if memory is None else
                  f"its last memory figure: {memory / 2**20:.0f} MiB"
                  + (f" ({memory / limit:.0%} of its limit)" if limit else ""))
        where = f"piece {index}" if index is not None else "(planning, or its only piece)"
        err = WorkerDiedError(f"worker died (memory limit {limit / 2**30:.2f} GiB?) while processing {path} "
                              f"{where}; {figure}; {exc.allowed_failures + 1} worker(s) died running it. "
                              "Give workers more memory (memory_limit) or run fewer per host")
        err.__cause__ = exc
        return err
