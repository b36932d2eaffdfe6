"""``pyku-launch status``: what the scheduler itself says about a cluster's health."""

from __future__ import annotations

from collections import Counter

from launcher.reach import dashboard, tunnel
from launcher.remote import readiness
from launcher.security import share
from launcher.sources.base import Context
from launcher.sources.registry import by_source
from launcher.store import state
from launcher.verbs import self_stop, usage

#: ``pyku-launch status`` exits with the code of the state it reports: one
#: rule for scripts, with or without ``--json`` (README, "Commands and exit
#: codes"). 1 and 2 keep their meaning for every command (runtime failure,
#: usage error); 3 is the preflight's.
EXIT_CODES = {"running": 0, "degraded": 4, "launching": 5, "stopping": 5, "down": 6, "half-launched": 6,
              "stopped": 6, "not launched": 7, "corrupt": 1}


def not_launched(name: str | None) -> dict:
    """The status of a cluster with no record (``name`` None: none is known)."""
    return {"name": name, "state": "not launched", "scheduler": None, "dashboard": None,
            "hosts": [], "missing": {}}


async def status_async(name: str) -> dict:
    """Per host expected and live workers and memory limit; ``state`` says up or down.

    The keys are stable (``--json``): name, scheduler, dashboard, state,
    hosts[{address, role, expected, live, memory_limit}], missing, clients[{who, since, address,
    tasks, client}] and tasks{processing, queued} (None if the scheduler cannot tell), and, for a
    cluster that stopped itself, stopped{reason, at}.
    """
    busy = state.holder(name)
    try:
        rec = state.read(name)
    except state.CorruptState as e:
        return {"name": name, "state": "corrupt", "error": str(e), "scheduler": None,
                "dashboard": None, "hosts": [], "missing": {}}
    if busy and (busy.startswith("stop") or rec is None or not rec.running):
        # A launch (or stop) at work, not one killed half-way: say what it is doing.
        words = state.busy_words(busy)
        return {**not_launched(name), "state": words.split()[0], "detail": words,
                "missing": rec.missing if rec else {}}
    if rec is None:
        return not_launched(name)
    if not rec.running:
        return {"name": name, "state": "half-launched", "scheduler": None, "dashboard": None,
                "hosts": [], "missing": rec.missing,
                "error": f"a launch of '{name}' was killed half-way: pyku-launch stop --name {name} cleans up"}
    try:
        async with tunnel.recorded_scheduler(rec) as address:
            info = await readiness.identity(address, rec.security(), timeout=5)
            use = await usage.read(address, rec.security())
        counts = readiness.workers_by_label(info)
        up = True
    except Exception:  # whatever the reason, the scheduler does not answer
        counts, up, use = Counter(), False, None
    if not up and (why := await self_stop.read(rec)):  # it stopped itself: say why, not just "down"
        return {**not_launched(name), "state": "stopped", "stopped": why, "detail": self_stop.words(why),
                "inventory": rec.inventory, "missing": rec.missing}
    async with Context(name) as ctx:  # a source that asks its hosts (a batch queue) opens what it needs
        rows = {id(r): row for source, group in by_source(rec.hosts)
                for r, row in zip(group, await source.describe(ctx, group, counts))}
    hosts = [rows[id(r)] for r in rec.hosts]
    if not up:
        st = "down"
    elif all(h["live"] >= h["expected"] for h in hosts if h["role"] == "workers"):
        st = "running"
    else:
        st = "degraded"
    return {"name": name, "state": st, "scheduler": rec.scheduler, "dashboard": rec.dashboard,
            "protocol": rec.protocol, "inventory": rec.inventory, "hosts": hosts, "missing": rec.missing,
            "shares": share.listed(rec), "dashboard_reach": dashboard.reach(rec), "shipped": rec.shipped,
            "clients": use["clients"] if use else None,
            "tasks": {"processing": use["processing"], "queued": use["queued"]} if use else None}
