"""The nanny's half of a stop relayed by the scheduler (a nanny preload).

Not imported by the launcher. Written into each SSH worker tree's run
directory (``pyku_treestop.py``), beside a copy of the agent's source
(``pyku_agent.py``, launcher/remote/agent.py) whose ``op_stop`` it runs, and
loaded by ``dask worker --preload-nanny``: every nanny of the tree's process
registers the handler below. The agent's source is compiled only when a
stop comes (distributed compiles a preload anew for every nanny of a
process: 30 times on a host of 30 workers).

Why: ``pyku-launch stop`` would otherwise open an SSH session on every
worker host (the account's rc files, a sh script: ~0.2 CPU-s per host,
measured in bench/README.md section 10). The nanny's process is already
on the host, holds a connection the scheduler can use, and is the tree's
leader (a child subreaper): it can end and prove its own tree exactly as
the agent would. The scheduler's half is launcher/remote/relay.py.

``pyku_stop_tree(requests)``: ``requests`` maps tokens to the agent's
``stop`` payloads (absolute paths); the nanny takes its own tree's
(``$PYKU_LAUNCH_TOKEN``), or answers ``skipped``. It marks every nanny of
its process closing (a worker that ends now is no crash to restart), then
runs ``op_stop`` in a thread: SIGTERM to every process of the token but
itself (worker, forkserver, what tasks started), SIGKILL after the grace,
two empty scans, the run files removed. It answers with ``op_stop``'s
reply and, if nothing was left, exits at once (``os._exit``, the log
flushed): the scheduler takes the end of that connection as the proof
that the process itself is gone. Several nannies of one process share
one stop.
"""

import asyncio
import logging
import os
import sys

TOKEN_VAR = "PYKU_LAUNCH_TOKEN"  # launcher/remote/agent.py
AGENT_FILE = "pyku_agent.py"
logger = logging.getLogger("distributed.pyku_treestop")

_treestop = {"task": None}


def dask_setup(nanny):
    nanny.handlers["pyku_stop_tree"] = _stop_tree_handler


async def _stop_tree_handler(requests=None):
    token = os.environ.get(TOKEN_VAR, "")
    request = (requests or {}).get(token) if token else None
    if not isinstance(request, dict):
        return {"token": token, "skipped": True}
    if _treestop["task"] is None:
        _treestop["task"] = asyncio.ensure_future(_stop_own_tree(request))
    reply = await asyncio.shield(_treestop["task"])
    return dict(reply, token=token, pid=os.getpid())


def _op_stop(request):
    """The agent's ``op_stop`` (its source beside this file), run in a thread."""
    # $PYKU_AGENT_FILE: distributed runs a nanny's preload from a copy in the spill directory
    path = os.environ.get("PYKU_AGENT_FILE") or os.path.join(os.path.dirname(os.path.abspath(__file__)), AGENT_FILE)
    agent = {"__name__": "pyku_agent"}
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), agent)
    return agent["op_stop"](dict(request, own=True))  # this process's children are the tree's, token or not


async def _stop_own_tree(request):
    from distributed import Nanny
    from distributed.core import Status

    for nanny in list(Nanny._instances):
        nanny.status = Status.closing  # its worker's end is not a crash: no restart
    _release_resource_tracker()
    loop = asyncio.get_running_loop()
    reply = await loop.run_in_executor(None, _op_stop, request)
    logger.info(
        "stopped its tree for the scheduler: %d processes, %d after SIGKILL, %d left",
        reply.get("found", 0), reply.get("killed", 0), len(reply.get("left", [])))
    if not reply.get("left"):
        loop.call_later(0.05, _treestop_exit)  # after the reply has been written
    return reply


def _release_resource_tracker():
    """Close this process's end of multiprocessing's resource tracker pipe.

    The tracker (a process of the tree) ignores SIGTERM and exits, after
    cleaning up what the workers leaked (semaphores, shared memory), when
    the last end closes: once the workers are gone, that is this process's.
    Without this it would live until SIGKILL (no clean-up) after the whole
    grace. This process stops talking to a tracker first: the finalizers of
    its own semaphores (they unlink them themselves) would otherwise start a
    new one, which would hold on as well.
    """
    try:
        from multiprocessing import resource_tracker

        tracker = resource_tracker._resource_tracker
        tracker._send = lambda *args, **kwargs: None
        tracker.ensure_running = lambda *args, **kwargs: None
        fd = getattr(tracker, "_fd", None)
        if fd is not None:
            tracker._fd = None
            os.close(fd)
        return fd
    except Exception:  # another Python's internals: the grace and SIGKILL still end it
        return None


def _treestop_exit():
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)
