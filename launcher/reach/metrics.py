"""The scheduler's Prometheus metrics: where they are, and a ``file_sd`` target file for a site's Prometheus.

distributed serves ``/metrics`` on the dashboard's HTTP server when
``prometheus_client`` is installed on the scheduler's host, so the metrics
are reached like the dashboard: directly on an open dashboard, through
``pyku-launch dashboard``'s tunnel on a closed one (TLS clusters bind it to
the host's loopback). ``pyku-launch status --prometheus FILE`` writes the
cluster as a Prometheus ``file_sd_configs`` target: a site's existing
Prometheus that reads the file picks the cluster up (and drops it when the
file is rewritten without it).
"""

from __future__ import annotations

import json
import os

from launcher.reach.dashboard import LOOPBACK
from launcher.remote.commands import host_port, scheduler_host_port
from launcher.store.records import ClusterRecord

PATH = "/metrics"


def target(rec: ClusterRecord) -> tuple[str, bool] | None:
    """(``host:port`` of the metrics, whether only the scheduler host itself reaches it); None: no dashboard."""
    if not rec.dashboard:
        return None
    host, port = scheduler_host_port(rec.dashboard.split("/status")[0])
    return host_port(host, port), host in LOOPBACK


def file_sd(rec: ClusterRecord) -> list[dict]:
    """The cluster as one Prometheus ``file_sd`` target group."""
    where = target(rec)
    if where is None:
        return []
    srec = rec.scheduler_host
    return [{"targets": [where[0]],
             "labels": {"__metrics_path__": PATH, "job": "pyku-launch", "cluster": rec.name,
                        "scheduler": rec.scheduler or "", "scheduler_host": srec.address if srec else ""}}]


def write(path: str | os.PathLike, rec: ClusterRecord | None) -> list[dict]:
    """Write the target file atomically (Prometheus re-reads it on change); its content.

    ``rec`` None (the cluster does not run): no target, so Prometheus drops it.
    """
    groups = file_sd(rec) if rec is not None else []
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(groups, f, indent=1)
    os.replace(tmp, path)
    return groups
