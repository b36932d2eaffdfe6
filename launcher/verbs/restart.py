"""``pyku-launch restart [HOST...]``: new worker processes, same cluster.

For a leaking worker or a new pyku build: the hosts' workers are retired
through the scheduler (their results move to the other workers first), their
trees stopped, the hosts preflighted again (a new build must still match
this machine) and fresh trees started. The scheduler keeps running, and so
do clients. It is a reconcile whose every step is "replace this host".
"""

from __future__ import annotations

from launcher.verbs import plan
from launcher.store import state
from launcher.errors import InventoryError, LaunchError
from launcher.config.inventory import Inventory, load_inventory
from launcher.ui.progress import Reporter
from launcher.sources import registry
from launcher.store.records import ClusterRecord
from launcher.verbs.reconcile import _Reconcile
from launcher.remote.transport import StepHook


def running_record(name: str) -> ClusterRecord:
    """The record of the running cluster ``name``, or a LaunchError saying why there is none."""
    rec = state.read(name)
    if rec is None:
        raise LaunchError(f"cluster '{name}' is not launched")
    if not rec.running:
        raise LaunchError(f"cluster '{name}' was left half-launched: pyku-launch stop --name {name}")
    return rec


def recorded_inventory(rec: ClusterRecord) -> Inventory:
    """The inventory the cluster converged to, as long as its file still says that."""
    inv = load_inventory(rec.inventory)
    if inv.sha256 != rec.inventory_sha256:
        raise LaunchError(f"{rec.inventory} changed since cluster '{rec.name}' was converged to it: "
                          f"run pyku-launch {rec.inventory} first (--dry-run shows what it would change)")
    return inv


async def restart_async(name: str, hosts: list[str] | None = None, *, report: Reporter,
                        timeout: float | None = None, on_step: StepHook | None = None) -> ClusterRecord:
    """Restart the worker trees of ``hosts`` (addresses or labels; None: every host).

    The caller holds the cluster's lock. Returns the record, ``applied``
    listing one line per host restarted.
    """
    rec = running_record(name)
    inv = recorded_inventory(rec)
    recorded = {h.label for h in rec.hosts if h.role == "workers"}
    specs = [s for s in registry.members(inv) if s.label in recorded]
    if hosts:
        known = {s.address for s in specs} | {s.label for s in specs}
        unknown = [h for h in hosts if h not in known]
        if unknown:
            raise InventoryError(f"cluster '{name}' has no worker host {', '.join(unknown)} "
                                 f"(hosts: {', '.join(s.address for s in specs)})")
        specs = [s for s in specs if s.address in hosts or s.label in hosts]
    steps = [plan.Step("change", s.label, f"restart {s.address}: {s.nworkers} workers", s) for s in specs]
    run = _Reconcile(inv, rec, report, False, inv.timeout if timeout is None else timeout, on_step)
    return await run.go(steps)
