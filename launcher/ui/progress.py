"""What a launch tells the user while it runs.

The steps of a launch (connect, preflight, scheduler, workers) with their
duration, and per host the workers registered out of expected. On a terminal
this is one live rich display: a spinner per running step that turns into a
check mark and its duration, and a progress bar per host. Elsewhere (CI,
``nohup``, a pipe) the same events are plain timestamped lines with no
control characters. ``quiet`` keeps only the final summary or the error,
which the CLI prints.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field

STEPS = ("connect", "preflight", "scheduler", "workers")


@dataclass
class _Step:
    name: str
    detail: str
    started: float = field(default_factory=time.monotonic)
    seconds: float | None = None  # set when done
    result: str = ""
    failed: bool = False


@dataclass
class _Host:
    label: str  # the host's label (launcher.inventory): unique, unlike its address
    expected: int | None = None
    live: int = 0
    message: str = ""
    left_out: bool = False


class Reporter:
    """Progress on stderr; the CLI's summary goes to stdout.

    Parameters
    ----------
    quiet
        Print nothing (the CLI prints the summary or the error).
    stream
        Where progress goes (default ``sys.stderr``); rich only if it is a terminal.
    console
        A ``rich.console.Console`` to draw on regardless of ``stream`` (tests,
        and ``Console(record=True)`` for the README's screenshot).

    Use it as a context manager, or call :meth:`close`, so that the live
    display ends (marking a step cut short by an error as failed) before
    anything else is printed.
    """

    def __init__(self, quiet: bool = False, stream=None, console=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self._console = None
        if console is not None:
            self._console = console
        elif not quiet and getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)
        self.tty = self._console is not None
        self._steps: list[_Step] = []
        self._hosts: dict[str, _Host] = {}
        self._live = None
        self._closed = False  # after close, messages are lines again, never a new display
        self._lock = threading.Lock()  # the live display renders from its own thread

    # -- the callbacks a launch calls ------------------------------------------

    def step(self, name: str, detail: str = "") -> None:
        """A step starts."""
        if self.tty:
            with self._lock:
                self._steps.append(_Step(name, detail))
            self._start_live()
        else:
            n = STEPS.index(name) + 1 if name in STEPS else 0
            self._plain(f"[{n}/{len(STEPS)}] {name}: {detail}")

    def done(self, name: str, seconds: float, detail: str = "") -> None:
        """A step ended after ``seconds``; ``detail`` is its result (e.g. the scheduler's address)."""
        if self.tty:
            with self._lock:
                s = self._find(name)
                s.seconds, s.result = seconds, detail
            if name == STEPS[-1]:
                self.close()
        else:
            self._plain(f"      {name} done in {seconds:.2f} s{'  ' + detail if detail else ''}")

    def host(self, label: str, message: str) -> None:
        """Something about one host, by its label (connected, probed, left out and why)."""
        if self.tty:
            if self._closed:
                self._print(f"  {label}: {message}", "red" if message.startswith("left out") else "")
                return
            with self._lock:
                h = self._host_row(label)
                h.message = message
                h.left_out = h.left_out or message.startswith("left out")
            self._refresh()
        else:
            self._plain(f"      {label}: {message}")

    def expect(self, expected: dict[str, int]) -> None:
        """The workers each host (by label) will start, before any has registered."""
        if self.tty:
            with self._lock:
                for label, n in expected.items():
                    self._host_row(label).expected = n
            self._refresh()
        else:
            per = ", ".join(f"{k} {n}" for k, n in expected.items())
            self._plain(f"      starting {sum(expected.values())} workers ({per})")

    def workers(self, counts, expected: dict[str, int]) -> None:
        """Workers registered so far per host label, out of ``expected``."""
        if self.tty:
            with self._lock:
                for label, n in expected.items():
                    h = self._host_row(label)
                    h.expected, h.live = n, counts.get(label, 0)
            self._refresh()
        else:
            have, want = sum(counts.get(k, 0) for k in expected), sum(expected.values())
            per = ", ".join(f"{k} {counts.get(k, 0)}/{n}" for k, n in expected.items())
            self._plain(f"      workers {have}/{want} registered ({per})")

    def warn(self, message: str) -> None:
        if self.tty:
            self._print(f"warning: {message}", "yellow")
        else:
            self._plain(f"warning: {message}")

    def info(self, message: str) -> None:
        if self.tty:
            self._print(message, "")
        else:
            self._plain(message)

    # -- lifecycle ---------------------------------------------------------------

    def close(self, failed: bool = True) -> None:
        """End the live display; a step still running is marked failed (or done if not ``failed``)."""
        with self._lock:
            for s in self._steps:
                if s.seconds is None:
                    s.seconds, s.failed = time.monotonic() - s.started, failed
            live, self._live = self._live, None
            self._closed = True
        if live is not None:
            live.refresh()
            live.stop()

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    # -- output ------------------------------------------------------------------

    def _plain(self, text: str) -> None:
        if self.quiet:
            return
        stamp = time.strftime("%H:%M:%S")
        for line in text.splitlines() or [""]:
            # No control characters off a terminal: logs and CI keep plain text.
            line = line.replace("\r", "").replace("\x1b", "")
            self._write(lambda: print(f"{stamp} {line}", file=self.stream, flush=True))

    def _print(self, text: str, style: str) -> None:
        if self.quiet:
            return
        # Above the live display while it runs, else straight to the console.
        self._write(lambda: self._console.print(text, style=style, markup=False, highlight=False))

    def _write(self, write) -> None:
        """Write, or go quiet for good if nobody reads any more (``| head -1``,
        a closed terminal): progress is for the user, and its loss must never
        abort, and so roll back, the launch it describes."""
        try:
            write()
        except (OSError, ValueError):  # BrokenPipeError, EIO; ValueError: the stream was closed
            self.quiet = True

    def _find(self, name: str) -> _Step:
        for s in reversed(self._steps):
            if s.name == name:
                return s
        s = _Step(name, "")
        self._steps.append(s)
        return s

    def _host_row(self, label: str) -> _Host:
        if label not in self._hosts:
            self._hosts[label] = _Host(label)
        return self._hosts[label]

    def _start_live(self) -> None:
        if self.quiet or self._live is not None or self._closed:
            return
        from rich.live import Live

        self._live = Live(_View(self), console=self._console, refresh_per_second=10, transient=False)
        self._live.start()

    def _refresh(self) -> None:
        if self._live is None:
            self._start_live()
        if self._live is not None:
            self._live.refresh()

    def renderable(self):
        """The current display (also for rendering it once, without a live display)."""
        return _View(self)


class _View:
    """Renders the reporter's state anew at every refresh of the live display."""

    def __init__(self, reporter: Reporter):
        self.r = reporter

    def __rich__(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        with self.r._lock:
            steps = list(self.r._steps)
            hosts = list(self.r._hosts.values())
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=1)
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, style="bold", min_width=max(map(len, STEPS)))
        grid.add_column(overflow="fold")
        grid.add_column(justify="right", no_wrap=True, style="dim")
        now = time.monotonic()
        for s in steps:
            n = f"{STEPS.index(s.name) + 1}/{len(STEPS)}" if s.name in STEPS else "-"
            if s.seconds is None:
                mark, seconds = Spinner("dots", style="cyan"), now - s.started
            elif s.failed:
                mark, seconds = Text("✗", style="bold red"), s.seconds
            else:
                mark, seconds = Text("✓", style="bold green"), s.seconds
            detail = Text(s.detail)
            if s.result:
                detail.append(f"  → {s.result}", style="green")
            grid.add_row(mark, Text(n, style="dim"), s.name, detail, f"{seconds:.1f} s")

        rows = Table.grid(padding=(0, 1))
        rows.add_column(width=3)
        rows.add_column(no_wrap=True)
        rows.add_column(no_wrap=True)
        rows.add_column(no_wrap=True)
        rows.add_column(overflow="fold")
        for h in hosts:
            if h.left_out:
                rows.add_row("", Text("✗", style="red"), Text(h.label, style="red"), "",
                             Text(h.message, style="red"))
                continue
            if h.expected:
                complete = h.live >= h.expected
                bar = ProgressBar(total=h.expected, completed=min(h.live, h.expected), width=24,
                                  complete_style="green" if complete else "cyan",
                                  finished_style="green")
                count = Text(f"{h.live}/{h.expected} workers", style="green" if complete else "")
            else:
                bar, count = Text(""), Text("")
            mark = Text("✓", style="green") if h.expected and h.live >= h.expected else Text("•", style="dim")
            rows.add_row("", mark, Text(h.label, style="bold"), bar, Text.assemble(count, " ", h.message))
        return Group(grid, rows) if hosts else grid
