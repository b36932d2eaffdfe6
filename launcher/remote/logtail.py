"""One line out of a process log's tail, for an error message.

A worker or scheduler that fails at start usually ends its log with a
chained traceback whose last line ("Nanny failed to start.") says less than
its first exception line (the cause). The summary keeps the exception lines:
the first (the root cause) and the last, each shortened; without any, the
last few lines.
"""

from __future__ import annotations

import re

_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b")
_MAX = 240


def _short(line: str) -> str:
    line = line.strip()
    return line if len(line) <= _MAX else line[:_MAX - 1] + "…"


def summary(lines: list[str], n: int = 3) -> str:
    """``"cause | last"`` from a log tail, or its last ``n`` lines; "" for none."""
    found = [ln for ln in lines if _EXCEPTION.match(ln)]
    if found:
        picked = [found[0]] if found[0] == found[-1] else [found[0], found[-1]]
    else:
        picked = [ln for ln in lines if ln.strip()][-n:]
    return " | ".join(_short(ln) for ln in picked)
