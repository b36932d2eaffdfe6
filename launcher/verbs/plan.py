"""Plan: what it takes to turn a running cluster into what an inventory describes.

Pure (no I/O): the running cluster's record and the names of the workers its
scheduler has now, diffed with the inventory, give a list of :class:`Step`.
``--dry-run`` prints them; :mod:`launcher.verbs.reconcile` applies them. Like
``terraform plan`` or ``ray up``: re-running the same inventory on a healthy
cluster is an empty plan.

Kinds of step, in the order they are applied:

- ``remove``: a host left the inventory: retire its workers, stop its trees;
- ``change``: a host's workers are started differently (nworkers, nthreads,
  memory_limit, env, python, worker options...): retire, stop, start anew;
- ``add``: a host joined (or was left out at launch): preflight, start;
- ``repair``: workers the record expects are not at the scheduler: start them
  (a source that does not wait, a batch pool: the trees its queue no longer
  lists, ``ended``; a pending job's workers are not missing);
- ``refuse``: a key the scheduler was started with changed; only a new
  cluster (``--recreate``) can follow it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from launcher.config.inventory import HostSpec, Inventory
from launcher.sources import registry
from launcher.store.records import ClusterRecord, HostRecord
from launcher.remote.commands import scheduler_host_port, shared_dirs
from launcher.ui.tables import fmt_bytes

#: HostSpec fields that change how a host's workers are started.
WORKER_KEYS = ("nworkers", "nthreads", "memory_limit", "reserve", "env", "python", "shell",
               "local_directory", "listen")


@dataclass(frozen=True)
class Step:
    """One change: ``kind`` (see the module), the host's label (or a key), the line to print."""

    kind: str
    label: str
    text: str
    spec: HostSpec | None = None           # the inventory's host (add, change, repair)
    missing: tuple[str, ...] = field(default=())  # repair: the worker names not at the scheduler


def settings(inv: Inventory) -> dict:
    """The cluster-wide settings a record keeps, to notice their change later (JSON-able)."""
    return {"scheduler_options": [list(x) for x in inv.scheduler_options],
            "worker_options": [list(x) for x in inv.worker_options],
            "dask_config": [list(x) for x in inv.dask_config],
            "death_timeout": inv.death_timeout,
            "idle_timeout": inv.idle_timeout, "max_lifetime": inv.max_lifetime,
            # what the scheduler tells pyku's persistent_processing is shared (fixed at its start)
            "shared_dirs": shared_dirs(inv)}


def _show(key: str, value) -> str:
    if key == "memory_limit":
        return fmt_bytes(value) if value else "auto"
    return "-" if value is None else str(value)


def _scheduler_changes(rec: ClusterRecord, inv: Inventory) -> list[Step]:
    """Keys only a new scheduler can follow, each as a ``refuse`` step."""
    sched = rec.scheduler_host
    port = scheduler_host_port(rec.scheduler or "")[1]
    dash = (rec.dashboard or "").rsplit(":", 1)[-1].split("/", 1)[0]
    old = {"scheduler.address": sched.spec.address if sched else None, "cluster.protocol": rec.protocol,
           "cluster.port": int(port) if inv.port and port.isdigit() else inv.port,
           "cluster.dashboard_port": int(dash) if inv.dashboard_port and dash.isdigit() else inv.dashboard_port,
           "cluster.env": sched.spec.env if sched else None, "cluster.python": sched.spec.python if sched else None}
    new = {"scheduler.address": inv.scheduler.address, "cluster.protocol": inv.protocol, "cluster.port": inv.port,
           "cluster.dashboard_port": inv.dashboard_port, "cluster.env": inv.scheduler.env,
           "cluster.python": inv.scheduler.python}
    now = settings(inv)
    for key, setting in (("scheduler.options", "scheduler_options"), ("cluster.dask_config", "dask_config"),
                         ("cluster.idle_timeout", "idle_timeout"), ("cluster.max_lifetime", "max_lifetime"),
                         ("cluster.shared", "shared_dirs")):
        if setting in rec.settings:
            old[key], new[key] = rec.settings[setting], now[setting]
    return [Step("refuse", k, f"refuse {k}: {_show(k, old[k])} → {_show(k, new[k])} needs a new scheduler "
                              f"(pass --recreate to stop the cluster and launch it anew)")
            for k in old if old[k] != new[k]]


def _host_change(trees: list[HostRecord], spec: HostSpec, rec: ClusterRecord, inv: Inventory,
                 source=None) -> list[str]:
    old = trees[0].spec
    diffs = [f"{k} {_show(k, getattr(old, k))} → {_show(k, getattr(spec, k))}"
             for k in WORKER_KEYS if getattr(old, k) != getattr(spec, k)]
    # A source's own settings beyond the HostSpec (a pool's walltime, partition...), kept by its trees.
    if hasattr(source, "settings"):
        was, now_ = trees[0].extra.get("settings", {}), source.settings(spec.label)
        diffs += [f"{k} {was.get(k)} → {now_.get(k)}" for k in now_ if was.get(k) != now_.get(k)]
    now = settings(inv)
    for key, what in (("worker_options", "workers.options"), ("death_timeout", "cluster.death_timeout")):
        if key in rec.settings and rec.settings[key] != now[key]:
            diffs.append(f"{what} {rec.settings[key]} → {now[key]}")
    return diffs


def make(rec: ClusterRecord, inv: Inventory, live: set[str], ended: set[str] = frozenset()) -> list[Step]:
    """The steps that take the running cluster ``rec`` to ``inv``; ``live``: worker names at the scheduler,
    ``ended``: tokens of trees of sources that do not wait that their source says have ended."""
    refusals = _scheduler_changes(rec, inv)
    if refusals:
        return refusals
    trees: dict[str, list[HostRecord]] = {}
    for h in rec.hosts:
        if h.role == "workers":
            trees.setdefault(h.label, []).append(h)
    wanted = {s.label: s for s in registry.members(inv)}
    sources = registry.member_sources(registry.from_inventory(inv))
    steps = [Step("remove", lab, f"- {ts[0].address}: {sum(len(t.worker_names()) for t in ts)} workers retired")
             for lab, ts in trees.items() if lab not in wanted]
    for lab, spec in wanted.items():
        if lab not in trees:
            steps.append(Step("add", lab, f"+ {spec.address}: {spec.nworkers} workers", spec))
            continue
        diffs = _host_change(trees[lab], spec, rec, inv, sources[lab])
        names = [n for t in trees[lab] for n in t.worker_names()]
        # A source that does not wait (a batch pool) has workers that are not in yet: pending, not missing;
        # what its queue no longer lists (a chain whose jobs all ended) is missing.
        missing = tuple(n for n in names if n not in live) if sources[lab].wait else tuple(
            n for t in trees[lab] if t.token in ended for n in t.worker_names())
        if diffs:
            steps.append(Step("change", lab, f"~ {spec.address}: {', '.join(diffs)}", spec))
        elif missing:
            steps.append(Step("repair", lab, f"repair {spec.address}: {len(missing)} of {len(names)} "
                                             f"workers missing", spec, missing))
    order = ("remove", "change", "add", "repair")
    return sorted(steps, key=lambda s: order.index(s.kind))
