"""Ask the scheduler itself which workers it has: readiness is never read from logs.

Workers are named ``<host label>-<i>`` at launch, so the scheduler's own
list tells, per host, how many of the expected workers have registered.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

_SUFFIX = re.compile(r"-\d+$")


def label_of(worker_name) -> str:
    return _SUFFIX.sub("", str(worker_name))


def _rpc(address: str, security, timeout: float):
    """A ``distributed.core.rpc`` to the scheduler; it keeps its connection between calls."""
    from distributed.core import rpc

    # get_connection_args builds an SSL context (PEM text written out and
    # loaded): once per rpc, not once per call.
    args = security.get_connection_args("client") if security is not None else {}
    return rpc(address, connection_args=args, timeout=timeout)


async def _ask(r, timeout: float) -> dict:
    return await asyncio.wait_for(r.identity(n_workers=-1), timeout)


async def identity(address: str, security, timeout: float = 5.0) -> dict:
    """The scheduler's ``identity`` with every worker; raises OSError if unreachable."""
    r = _rpc(address, security, timeout)
    try:
        return await _ask(r, timeout)
    finally:
        await r.close_rpc()


def workers_by_label(info: dict) -> Counter:
    """How many workers the scheduler has per host label."""
    return Counter(label_of(w.get("name", addr)) for addr, w in info.get("workers", {}).items())


async def scheduler_alive(address: str, security, timeout: float = 3.0) -> bool:
    try:
        await identity(address, security, timeout)
        return True
    except Exception:  # unreachable, timed out, refused: not alive for our purpose
        return False


async def wait_for_workers(address: str, security, expected: dict[str, int], *, timeout: float,
                           on_progress=None, interval: float = 0.1, running=None,
                           check_every: float = 2.0) -> Counter:
    """Poll the scheduler until every host's expected workers are in, or ``timeout``.

    ``running(labels)``, if given, is asked every ``check_every`` seconds
    which of the hosts still short of workers still have processes; a host
    whose processes are all gone is waited for no longer, so a launch whose
    workers crashed fails in seconds, not after ``timeout``.

    The polls share one connection (one TLS handshake for the whole wait,
    not one per poll, on both sides).

    Returns the counts per host label reached at the end (complete or not).
    """
    r = _rpc(address, security, 5.0)
    try:
        return await _poll(r, expected, timeout, on_progress, interval, running, check_every)
    finally:
        await r.close_rpc()


async def _poll(r, expected, timeout, on_progress, interval, running, check_every) -> Counter:
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + check_every
    expected = dict(expected)
    counts: Counter = Counter()
    last = None
    while True:
        try:
            info = await _ask(r, max(1.0, min(5.0, deadline - time.monotonic())))
            counts = workers_by_label(info)
        except (OSError, asyncio.TimeoutError, TimeoutError):
            pass
        snapshot = tuple(sorted(counts.items()))
        if on_progress is not None and snapshot != last:
            on_progress(counts)
            last = snapshot
        short = {lab for lab, n in expected.items() if counts.get(lab, 0) < n}
        if not short or time.monotonic() >= deadline:
            return counts
        if running is not None and time.monotonic() >= next_check:
            alive = set(await running(short))
            for lab in short - alive:
                del expected[lab]
            if not short & alive:
                return counts
            next_check = time.monotonic() + check_every
        await asyncio.sleep(interval)
