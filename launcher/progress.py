"""What a launch tells the user while it runs.

Numbered steps with their duration, per-host lines, workers registered out
of expected. On a terminal the lines are styled by rich; elsewhere (CI,
``nohup``) they are plain and timestamped, with no control characters.
``quiet`` keeps only the final summary or the error, which the CLI prints.
"""

from __future__ import annotations

import sys
import time

STEPS = ("connect", "preflight", "scheduler", "workers")


class Reporter:
    """Progress lines on stderr; the CLI's summary goes to stdout."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._console = None
        if self.tty and not quiet:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)
        self._last_workers = None

    def _emit(self, text: str, style: str = "") -> None:
        if self.quiet:
            return
        if self._console is not None:
            self._console.print(text, style=style, markup=False)
        else:
            stamp = time.strftime("%H:%M:%S")
            for line in text.splitlines() or [""]:
                print(f"{stamp} {line}", file=self.stream, flush=True)

    def step(self, name: str, detail: str = "") -> None:
        n = STEPS.index(name) + 1 if name in STEPS else 0
        self._emit(f"[{n}/{len(STEPS)}] {name}: {detail}", "bold")

    def done(self, name: str, seconds: float, detail: str = "") -> None:
        self._emit(f"      {name} done in {seconds:.2f} s{'  ' + detail if detail else ''}", "green")

    def host(self, address: str, message: str) -> None:
        self._emit(f"      {address}: {message}")

    def workers(self, counts, expected: dict[str, int]) -> None:
        have, want = sum(counts.get(k, 0) for k in expected), sum(expected.values())
        per = ", ".join(f"{k} {counts.get(k, 0)}/{n}" for k, n in expected.items())
        self._emit(f"      workers {have}/{want} registered ({per})")

    def warn(self, message: str) -> None:
        self._emit(f"warning: {message}", "yellow")

    def info(self, message: str) -> None:
        self._emit(message)
