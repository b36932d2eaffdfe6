"""JupyterLab's dask extension drives a launched cluster through launcher.Cluster (README, "From Python").

dask-labextension 7's server side is ``DaskClusterManager``: the lab's
buttons (new cluster, scale, adaptive, shut down) and its cluster list are
HTTP calls onto it, and it makes clusters from the ``labextension.factory``
setting with ``asynchronous=True`` in the server's event loop.  The README
tells users to point that factory at ``launcher.Cluster``; here the
extension's own manager, not a stand-in, runs every call the lab makes
against a cluster launched on the sshd test hosts.
"""

from __future__ import annotations

import asyncio
import time

import dask

import launcher
from launcher.testing import missing
from launcher.testing.clusters import cluster_processes, ssh_inventory

FACTORY = {"module": "launcher", "class": "Cluster", "args": [], "kwargs": {"name": "lab"}}


async def _until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.2)
    return predicate()


async def _drive_as_the_lab_does(scheduler: str) -> dict:
    """Start (attach), list, scale, adapt and close through the extension's manager; what each step showed."""
    try:  # imported here: in the test's HOME (it writes ~/.config/dask/labextension.yaml) and running loop
        from dask_labextension.manager import DaskClusterManager
    except ImportError as exc:
        missing(f"dask-labextension is not installed (the test extra has it): {exc}")
    seen = {}
    async with DaskClusterManager() as manager:
        model = await manager.start_cluster(configuration={"name": "launched"})
        cid = model["id"]
        seen["started"] = model
        seen["listed"] = manager.list_clusters()
        seen["all four"] = await _until(lambda: manager.get_cluster(cid)["workers"] == 4, 60)
        seen["scaled"] = await manager.scale_cluster(cid, 2)
        seen["two"] = await _until(lambda: manager.get_cluster(cid)["workers"] == 2, 90)
        seen["adapting"] = manager.adapt_cluster(cid, 1, 3)
        seen["one"] = await _until(lambda: manager.get_cluster(cid)["workers"] == 1, 120)  # idle: down to minimum
        seen["closed"] = await manager.close_cluster(cid)
        seen["after close"] = manager.list_clusters()
    return seen


def test_the_dask_labextension_manages_a_launched_cluster(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="lab", workers=(1, 2), nworkers=2)
    rec = launcher.launch(inv)
    try:
        with dask.config.set({"labextension.factory": FACTORY, "labextension.initial": [],
                              "labextension.default": {"workers": None, "adapt": None}}):
            seen = asyncio.run(_drive_as_the_lab_does(rec.scheduler))
        assert launcher.status("lab")["state"] in ("running", "degraded")  # close() detached: it lives on
    finally:
        launcher.stop("lab")
    started = seen["started"]
    assert started["name"] == "launched" and started["scheduler_address"] == rec.scheduler
    assert started["dashboard_link"].endswith("/status")
    assert [m["id"] for m in seen["listed"]] == [started["id"]]
    assert seen["all four"], "the lab's model never showed the 4 launched workers"
    assert seen["two"] and seen["scaled"]["workers"] in (2, 3, 4)
    assert seen["adapting"]["adapt"] == {"minimum": 1, "maximum": 3}
    assert seen["one"], "adaptive did not retire the idle workers down to its minimum"
    assert seen["closed"]["id"] == started["id"] and seen["after close"] == []
    assert cluster_processes("lab") == []
