"""Slurm pools after the launch: launcher.Cluster's scale and adapt submit and cancel whole jobs, and a
relaunch tops up a pool whose chains ended; on the real one-node Slurm of this machine, beside real sshd.

Jobs ask for one CPU each (``job_cpu = 1``), so the node's 2 CPUs run two at once.
"""

from __future__ import annotations

import os
import time

import launcher
from launcher.store import state
from launcher.testing.clusters import cluster_processes, session_members, wait_until
from launcher.testing.slurm import pool_inventory


def _workers(client) -> set[str]:
    return {str(w["name"]) for w in client.scheduler_info(n_workers=-1)["workers"].values()}


def _chains(name: str) -> list:
    return [h for h in state.read(name).hosts if h.source == "slurm"]


def _running(slurm, name: str) -> list[str]:
    """The cluster's running jobs (policy keep: each also has its replacement pending in squeue)."""
    return [i for i, s in slurm.cluster_jobs(name) if s == "RUNNING"]


def _nothing_left(slurm, name: str, rec) -> None:
    assert slurm.cluster_jobs(name) == [], "jobs left in squeue"
    assert session_members(rec) == [] and cluster_processes(name) == [], "processes of the cluster left"


def test_scale_submits_and_cancels_whole_jobs_beside_an_ssh_host(sshd, slurm, state_dir, tmp_path):
    """A mixed cluster: the SSH host's worker first, then jobs of 2 workers, rounded up; a scale down
    retires a job's workers (their data moves) before it cancels the job."""
    inv = pool_inventory(tmp_path / "hosts.toml", sshd, name="grow", workers=(1,), nworkers=1,
                         memory_limit="400MiB", jobs=1,
                         pool='nworkers = 2\nmax_jobs = 2\njob_cpu = 1\nmemory_limit = "400MiB"\njob_mem = "1GiB"')
    rec = launcher.launch(inv)
    try:
        (first,) = _chains("grow")
        label = first.label
        job0 = [f"{label}-0-0", f"{label}-0-1"]
        job1 = [f"{label}-1-0", f"{label}-1-1"]
        with launcher.Cluster("grow") as cluster, cluster.get_client() as client:
            assert cluster.requested == {"127.0.0.3-0", *job0}  # a pending job's workers count as requested
            cluster.scale(4)  # the host's 1 + 3 rounds up to two whole jobs
            assert wait_until(lambda: len(_running(slurm, "grow")) == 2, 90), slurm.cluster_jobs("grow")
            assert wait_until(lambda: _workers(client) == {"127.0.0.3-0", *job0, *job1}, 120), _workers(client)
            assert cluster.requested == {"127.0.0.3-0", *job0, *job1}
            second = next(h for h in _chains("grow") if h.extra["slot"] == 1)
            assert session_members([second])

            on_job1 = [a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if w["name"] in job1]
            data = client.scatter(list(range(20)), workers=on_job1)
            cluster.scale(3)  # the host's worker and one job: the job added last goes
            assert wait_until(lambda: slurm.cluster_jobs("grow", prefix=second.token) == [], 90)
            assert _running(slurm, "grow") == first.extra["jobs"], slurm.cluster_jobs("grow")
            assert wait_until(lambda: _workers(client) == {"127.0.0.3-0", *job0}, 60), _workers(client)
            assert client.gather(data) == list(range(20))  # retired, not lost
            assert session_members([second]) == []
            assert wait_until(lambda: [h.extra["slot"] for h in _chains("grow")] == [0], 60)  # forgotten once gone
        assert launcher.status("grow")["state"] == "running"
    finally:
        launcher.stop("grow")
        slurm.cancel_cluster_jobs("grow")
    _nothing_left(slurm, "grow", rec)


def test_adapt_adds_and_cancels_jobs_of_a_pool(sshd, slurm, state_dir, tmp_path):
    """A pool only: adapt asks for whole jobs while tasks queue, and cancels a job once idle."""
    inv = pool_inventory(tmp_path / "hosts.toml", sshd, name="tide", workers=(), jobs=1,
                         pool='nworkers = 2\nmax_jobs = 2\njob_cpu = 1\nmemory_limit = "400MiB"\njob_mem = "1GiB"')
    rec = launcher.launch(inv)
    try:
        with launcher.Cluster("tide") as cluster, cluster.get_client() as client:
            assert wait_until(lambda: len(_workers(client)) == 2, 90), _workers(client)
            cluster.adapt(minimum=2, maximum=4, interval="500ms", wait_count=4)

            def slow(i):
                time.sleep(0.5)
                return i

            futures = client.map(slow, range(80), pure=False)
            assert wait_until(lambda: len(_running(slurm, "tide")) == 2, 90), slurm.cluster_jobs("tide")
            assert client.gather(futures) == list(range(80))
            # Idle: back to the minimum, one job, its two workers.
            assert wait_until(lambda: len(_running(slurm, "tide")) == 1, 90), slurm.cluster_jobs("tide")
            assert wait_until(lambda: len(_workers(client)) == 2, 60), _workers(client)
            assert wait_until(lambda: len(_chains("tide")) == 1, 60)  # forgotten once gone
    finally:
        launcher.stop("tide")
        slurm.cancel_cluster_jobs("tide")
    _nothing_left(slurm, "tide", rec)


def test_a_relaunch_tops_up_a_pool_whose_chain_ended(sshd, slurm, state_dir, tmp_path):
    """Policy once: a job cancelled by hand leaves its chain empty; the same inventory again submits
    its slot anew, so the pool is back at jobs, under the same worker names."""
    inv = pool_inventory(tmp_path / "hosts.toml", sshd, name="topup", workers=(), jobs=2,
                         pool='replace = "once"\njob_cpu = 1')
    rec = launcher.launch(inv)
    try:
        assert wait_until(lambda: [s for _, s in slurm.cluster_jobs("topup")] == ["RUNNING"] * 2, 60)
        gone = _chains("topup")[1]
        slurm._run("scancel", gone.extra["jobs"][0])  # this test's own job, by its id
        assert wait_until(lambda: len(slurm.cluster_jobs("topup")) == 1, 60)

        again = launcher.launch(inv)
        assert any(line.startswith("repair") for line in again.applied), again.applied
        jobs = [i for i, _ in slurm.cluster_jobs("topup")]
        assert len(jobs) == 2 and gone.extra["jobs"][0] not in jobs, jobs
        chains = _chains("topup")
        assert sorted(h.extra["slot"] for h in chains) == [0, 1] and gone.token not in {h.token for h in chains}
        with launcher.connect("topup") as client:
            assert wait_until(lambda: gone.worker_names()[0] in _workers(client), 90), _workers(client)
            pool_job = client.run(lambda: os.environ.get("SLURM_JOB_ID"), workers=[
                a for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
                if w["name"] == gone.worker_names()[0]])
            assert set(pool_job.values()) <= set(jobs) - {gone.extra["jobs"][0]}
        assert launcher.launch(inv).already_running  # topped up: nothing more to do
    finally:
        launcher.stop("topup")
        slurm.cancel_cluster_jobs("topup")
    _nothing_left(slurm, "topup", rec)
