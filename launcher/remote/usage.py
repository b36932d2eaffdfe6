"""The scheduler preload that tells who uses the cluster: connected clients and the tasks in flight.

Not imported by the launcher: its source is written into the scheduler's
run directory (``pyku_usage.py``) and loaded by ``dask scheduler
--preload`` (launcher/remote/commands.py). It adds one handler,
``pyku_usage``, that ``pyku-launch status`` calls (launcher/verbs/usage.py),
so a colleague sees whether a cluster is in use before asking to stop it.

Who a client is: the name ``launcher.connect()`` gives its Client
(``user@host`` of the machine it runs on; distributed puts it in the
client's id), else the label of the shared certificate it connected with
(``pyku-launch share --for LABEL``), else its address. Since when: the
scheduler's ``add_client`` (a plugin hook).
"""

import re
import time

_ID = re.compile(r"^Client-(.+)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SHARE = re.compile(r"^pyku-launch \S+ share (.+)$")


def _subject(comm) -> str | None:
    cert = (getattr(comm, "extra_info", None) or {}).get("peercert") or {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def who(client_id: str, comm) -> str:
    """``user@host``, ``share LABEL``, ``owner`` or the peer address."""
    named = _ID.match(client_id)
    if named:
        return named[1]
    subject = _subject(comm) or ""
    share = _SHARE.match(subject)
    if share:
        return f"share {share[1]}"
    if subject.endswith(" client"):
        return "owner"
    return getattr(comm, "peer_address", None) or client_id


def report(scheduler, since: dict) -> dict:
    """What the ``pyku_usage`` handler answers (JSON-able)."""
    clients = []
    for key, cs in list(scheduler.clients.items()):
        if key == "fire-and-forget":
            continue
        bcomm = scheduler.client_comms.get(key)
        comm = getattr(bcomm, "comm", None)
        clients.append({"client": key, "who": who(key, comm), "since": since.get(key, cs.last_seen),
                        "address": getattr(comm, "peer_address", None), "tasks": len(cs.wants_what)})
    return {"clients": sorted(clients, key=lambda c: c["since"]),
            "processing": sum(len(ws.processing) for ws in scheduler.workers.values()),
            "queued": len(scheduler.queued) + len(scheduler.unrunnable)}


def dask_setup(scheduler):
    from distributed.diagnostics.plugin import SchedulerPlugin

    since = {}

    class Since(SchedulerPlugin):
        name = "pyku-usage"

        def add_client(self, scheduler=None, client=None, **kwargs):
            since[client] = time.time()

        def remove_client(self, scheduler=None, client=None, **kwargs):
            since.pop(client, None)

    scheduler.add_plugin(Since())
    scheduler.handlers["pyku_usage"] = lambda comm=None: report(scheduler, since)
