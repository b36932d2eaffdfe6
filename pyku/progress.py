"""Progress of :func:`pyku.compute.persistent_processing`: pieces and bytes, not only files.

The totals grow as inputs are planned (a big file adds many pieces).  On a
terminal a rich bar shows ``pieces done/known`` and ``MiB done/known`` of
input; forced on elsewhere (``progress=True``) it prints one line per
piece; otherwise it is silent.
"""

from __future__ import annotations

import sys
from pathlib import Path


class Progress:
    def __init__(self, enabled):
        self.enabled = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.pieces = self.pieces_done = 0
        self.nbytes = self.bytes_done = 0
        self._rich = None

    def __enter__(self):
        if self.enabled and sys.stderr.isatty():
            try:
                from rich.console import Console
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
            except ImportError:
                return self
            self._rich = Progress(TextColumn("{task.description}"), BarColumn(),
                                  TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
                                  console=Console(stderr=True), transient=False)
            self._rich.start()
            self._task = self._rich.add_task("persistent_processing", total=None, counts="")
        return self

    def planned(self, plan):
        """Count ``plan``'s pieces; those already on disk (or done while planning) are done."""
        self.pieces += len(plan.pieces)
        self.nbytes += sum(p.nbytes for p in plan.pieces)
        done = [p for p in plan.pieces if p.index not in plan.missing]
        self.pieces_done += len(done)
        self.bytes_done += sum(p.nbytes for p in done)
        self._show(f"{Path(plan.path).name}: {len(plan.pieces)} piece(s)")

    def piece_done(self, plan, index):
        self.pieces_done += 1
        self.bytes_done += plan.pieces[index].nbytes
        self._show(f"{Path(plan.path).name} piece {index}")

    def failed(self, name):
        self._show(f"{name}: failed")

    def _show(self, what):
        counts = (f"{self.pieces_done}/{self.pieces} pieces, "
                  f"{self.bytes_done / 2**20:.0f}/{self.nbytes / 2**20:.0f} MiB")
        if self._rich is not None:
            self._rich.update(self._task, total=max(self.nbytes, 1), completed=self.bytes_done,
                              description=what[:40], counts=counts)
        elif self.enabled:
            print(f"[{counts}] {what}", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._rich is not None:
            self._rich.stop()
        return False
