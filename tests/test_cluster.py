"""launcher.Cluster: a dask Cluster attached to a launched cluster; scale and adapt over real sshd."""

from __future__ import annotations

import os
import time

import launcher
from launcher.store import state
from launcher.testing.clusters import cluster_processes, session_members, ssh_inventory, wait_until


def _workers(name):
    return sorted(n for h in launcher.status(name)["hosts"] for n in [h["address"]] * h["live"])


def test_scale_up_and_down_over_the_inventorys_hosts(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="scaled", workers=(1, 2))
    launcher.launch(inv)
    try:
        cluster = launcher.Cluster("scaled")
        assert cluster.scheduler_address == state.read("scaled").scheduler
        assert cluster.dashboard_link.endswith("/status")
        assert "scaled" in cluster._repr_html_()
        with cluster.get_client() as client:
            cluster.scale(2)  # one per host: the highest-numbered workers go
            assert wait_until(lambda: len(client.scheduler_info(n_workers=-1)["workers"]) == 2, 60)
            assert wait_until(lambda: cluster.requested == {"127.0.0.3-0", "127.0.0.4-0"}, 30)
            gone = [h for h in state.read("scaled").hosts if h.role == "workers"]
            assert _workers("scaled") == ["127.0.0.3", "127.0.0.4"]

            future = client.submit(lambda: 42)
            assert future.result() == 42
            cluster.scale(4)
            client.wait_for_workers(4, timeout=60)
            assert {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()} == {
                "127.0.0.3-0", "127.0.0.3-1", "127.0.0.4-0", "127.0.0.4-1"}
            assert future.result() == 42
            assert launcher.status("scaled")["state"] == "running"
            assert session_members(gone)  # the first workers kept running throughout
        cluster.close()  # detaches: the cluster lives on
        assert launcher.status("scaled")["state"] == "running"
    finally:
        launcher.stop("scaled")
    assert cluster_processes("scaled") == []


def test_adapt_retires_idle_workers_and_brings_them_back(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="adapt", workers=(1, 2))
    launcher.launch(inv)
    try:
        with launcher.Cluster("adapt") as cluster, cluster.get_client() as client:
            cluster.adapt(minimum=1, maximum=4, interval="500ms", wait_count=2)
            assert wait_until(lambda: len(client.scheduler_info(n_workers=-1)["workers"]) == 1, 60)
            assert wait_until(lambda: len(cluster.requested) == 1, 30)
            survivor = client.run(os.getpid)  # {address: pid} of the one worker left

            def slow(i):
                time.sleep(0.5)
                return i
            futures = client.map(slow, range(60))
            assert wait_until(lambda: len(client.scheduler_info(n_workers=-1)["workers"]) >= 3, 60)
            assert client.gather(futures) == list(range(60))
            (address, pid), = survivor.items()
            assert client.run(os.getpid, workers=[address]) == survivor  # the one left was not disturbed
        assert launcher.status("adapt")["state"] in ("running", "degraded")
    finally:
        launcher.stop("adapt")
    assert cluster_processes("adapt") == []


def test_shutdown_on_close_stops_the_cluster(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="owned", workers=(1,))
    rec = launcher.launch(inv)
    cluster = launcher.Cluster("owned", shutdown_on_close=True)
    cluster.close()
    assert session_members(rec) == []
    assert not state.state_path("owned").exists()
