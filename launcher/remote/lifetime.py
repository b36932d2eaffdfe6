"""The scheduler preload that stops an idle or old cluster by itself (``idle_timeout``, ``max_lifetime``).

Not imported by the launcher: its source is written into the scheduler's
run directory (``pyku_lifetime.py``) and loaded by ``dask scheduler
--preload`` (launcher/remote/commands.py), so the cluster stops itself with
no client or launcher running. Standard library and distributed only.

What counts as activity is distributed's own idleness (``Scheduler.check_idle``,
run every 250 ms whatever ``idle-timeout`` says): a task changing state
(submitted, queued, processing, finished, released), a graph being
submitted, or a task queued or processing on a worker. A client that is
merely connected is *not* activity: the forgotten notebook holding a client
is the very cluster that blocks a shared machine. ``scheduler.idle_since``
is when the last such activity ended. A worker joining counts too (the idle
clock starts when a launch or a scale-up is complete, not while workers
are still arriving).

On either limit, the reason goes first into ``stopped.log`` in the run
directory (one line, kept on the host so ``pyku-launch status`` and
``stop`` can tell afterwards), then the scheduler closes, which closes the
workers and their nannies through their streams; every process tree's
leader then removes its run files but the logs (launcher/remote/leader.py).
"""

import logging
import os
import time

logger = logging.getLogger("distributed.pyku_lifetime")
STOPPED_LOG = "stopped.log"


def _limit(var):
    value = os.environ.get(var)
    return float(value) if value else None


def span(seconds: float) -> str:
    """``20 s``, ``15 min``, ``2 h``, ``3 d``: a duration as a person says it."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size or (unit != "min" and seconds >= size and seconds % size == 0):
            return f"{round(seconds / size, 1):g} {unit}"
    return f"{round(seconds):g} s"


def reason(scheduler, started: float, now: float, idle_timeout, max_lifetime, joined: float = 0.0):
    """Why the cluster should stop now (``(kind, text)``), or None; ``joined``: when a worker last joined."""
    idle_since = getattr(scheduler, "idle_since", None)
    if idle_timeout and idle_since and now - max(idle_since, joined) > idle_timeout:
        at = time.strftime("%H:%M", time.localtime(idle_since))
        last = f"last task {at}" if scheduler.transition_counter else f"no task since the start at {at}"
        return "idle", f"idle for {span(idle_timeout)} ({last})"
    if max_lifetime and now - started > max_lifetime:
        begun = time.strftime("%Y-%m-%d %H:%M", time.localtime(started))
        return "lifetime", f"max_lifetime {span(max_lifetime)} reached (started {begun})"
    return None


def _record(text: str) -> None:
    """``stopped.log``: one line, written whole (a reader never sees half of it)."""
    path = os.path.join(os.getcwd(), STOPPED_LOG)  # the run directory (the spawn's cwd)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} stopped: {text}\n")
    os.replace(tmp, path)


def dask_setup(scheduler):
    import asyncio

    from tornado.ioloop import PeriodicCallback

    from distributed.diagnostics.plugin import SchedulerPlugin

    idle_timeout, max_lifetime = _limit("PYKU_IDLE_TIMEOUT"), _limit("PYKU_MAX_LIFETIME")
    started = time.time()
    joined = [started]

    class Joined(SchedulerPlugin):
        name = "pyku-lifetime"

        def add_worker(self, scheduler=None, worker=None, **kwargs):
            joined[0] = time.time()

    scheduler.add_plugin(Joined())

    def check():
        if scheduler.status.name in ("closing", "closed", "closing_gracefully"):
            return
        why = reason(scheduler, started, time.time(), idle_timeout, max_lifetime, joined[0])
        if why is None:
            return
        pc.stop()
        logger.warning("stopping the cluster: %s", why[1])
        try:
            _record(why[1])
        except OSError as e:  # the stop matters more than its note
            logger.error("could not write %s: %s", STOPPED_LOG, e)
        asyncio.ensure_future(scheduler.close(reason=f"pyku-launch {why[0]}: {why[1]}"))

    pc = PeriodicCallback(check, 1000)
    scheduler.periodic_callbacks["pyku-lifetime"] = pc
    pc.start()
    logger.info("idle_timeout %s, max_lifetime %s", idle_timeout and span(idle_timeout),
                max_lifetime and span(max_lifetime))
