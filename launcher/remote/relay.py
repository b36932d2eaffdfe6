"""The scheduler's half of a stop relayed to the nannies (a scheduler preload).

Not imported by the launcher: its source is written into the scheduler's
run directory (``pyku_relay.py``) and loaded by ``dask scheduler
--preload``. It needs only the standard library and distributed.

``pyku-launch stop`` ends a cluster's worker trees without an SSH session
on their hosts when it can: on the scheduler's host its stop script
(launcher/remote/quickstop.py) first writes ``stop-relay.json`` here, then
sends the scheduler SIGTERM. While the scheduler closes (its preloads'
teardown, before it closes its comms), this module asks every nanny it
knows, all at once, to stop its own tree (``pyku_stop_tree``,
launcher/remote/treestop.py) with the request the launcher wrote for that
tree's token, and waits for each answer and then for the end of that
connection: the nanny's process exits right after it answered, so the
end of the connection is its end. What it learnt goes to
``stop-relay.out.json`` (token -> the agent's stop reply, ``exited``),
which the stop script prints before it removes the run files. A tree not
proven gone there (no answer within the budget, survivors, an older
launch without the nanny's half) is stopped by its own host's script
afterwards, as before.

The request: ``{"nonce": str, "budget": seconds, "trees": {token: stop payload}}``; a payload's
``names`` are the tree's workers, whose nannies are asked (no others: a batch pool's).
"""

import asyncio
import json
import logging
import os
import time

logger = logging.getLogger("distributed.pyku_relay")
_HERE = os.path.dirname(os.path.abspath(__file__))
REQUEST = "stop-relay.json"
OUT = "stop-relay.out.json"


async def dask_teardown(scheduler):
    try:
        with open(os.path.join(_HERE, REQUEST)) as f:
            request = json.load(f)
        trees, budget = request["trees"], float(request.get("budget", 2.0))
    except (OSError, ValueError, KeyError, TypeError):
        return  # a stop that does not relay (or an idle timeout): nothing to do
    deadline = time.monotonic() + budget
    token_of = {str(n): t for t, tree in trees.items() for n in tree.get("names") or ()}  # no batch pool's
    nannies = {ws.nanny: token_of[str(ws.name)] for ws in scheduler.workers.values()
               if ws.nanny and str(ws.name) in token_of}
    # each nanny gets its own tree's request only (not every tree's: that would grow with hosts squared)
    answers = await asyncio.gather(*(_stop_one(scheduler, a, {t: trees[t]}, deadline) for a, t in nannies.items()))
    out = {}
    for answer in answers:
        token = (answer or {}).get("token")
        if token in trees and not (out.get(token) or {}).get("exited"):
            out[token] = answer
    logger.info("relayed the stop to %d nannies: %d of %d trees proven gone", len(nannies),
                sum(1 for a in out.values() if a.get("exited") and not a.get("left")), len(trees))
    tmp = os.path.join(_HERE, f".{OUT}.tmp")
    with open(tmp, "w") as f:
        json.dump({"nonce": request.get("nonce"), "trees": out}, f)
    os.replace(tmp, os.path.join(_HERE, OUT))


async def _stop_one(scheduler, address, trees, deadline):
    """The nanny's answer, with ``exited``: its connection ended after it (None: no answer)."""
    from distributed.comm import connect

    comms = []

    async def ask():
        comm = await connect(address, **scheduler.connection_args)
        comms.append(comm)
        await comm.write({"op": "pyku_stop_tree", "requests": trees, "reply": True})
        answer = await comm.read()
        if not isinstance(answer, dict) or answer.get("skipped") or "left" not in answer:
            return None
        answer["exited"] = False
        if not answer["left"]:
            try:
                await comm.read()  # nothing more is sent: this returns when the process is gone
            except Exception:  # CommClosedError: the end of the connection
                answer["exited"] = True
        return answer

    try:  # wait_for, not asyncio.timeout: the host's Python may be older than the launcher's
        return await asyncio.wait_for(ask(), max(0.0, deadline - time.monotonic()))
    except Exception as e:  # TimeoutError, OSError, no such handler (an older launch): not proven here
        logger.info("no relayed stop from the nanny at %s: %s", address, type(e).__name__)
        return None
    finally:
        for comm in comms:
            if not comm.closed():
                comm.abort()
