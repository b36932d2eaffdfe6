"""Slurm pools on the real one-node Slurm of this machine, beside real sshd hosts.

The login host of every pool is a test host (127.0.0.4, this machine), so
``sbatch`` there submits to the local slurmctld and the jobs run here:
their worker processes are found in /proc by the tokens the launcher gave
them, as a host's are. Jobs are small (one worker of 500 MiB in 1 GiB) so
that two run at once on the node's 2 CPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import launcher
from launcher.errors import PreflightError
from launcher.testing.clusters import cli, cluster_processes, session_members, wait_until
from launcher.testing.slurm import pool_inventory


def _pool_workers(client, label: str) -> list[str]:
    return [w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()
            if str(w["name"]).startswith(label + "-")]


def _pool_jobs(client, label: str) -> list:
    """The Slurm job ids the pool's workers run in, as they say themselves."""
    addresses = [a for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
                 if str(w["name"]).startswith(label + "-")]
    return list(client.run(lambda: os.environ.get("SLURM_JOB_ID"), workers=addresses).values()) if addresses else []


def _names_of_workers(client) -> set[str]:
    """Which workers ran a batch of tasks (defined here: cloudpickle sends it by value)."""
    def where(i):
        import time

        from distributed import get_worker

        time.sleep(0.05)
        return get_worker().name

    return set(client.gather(client.map(where, range(60), pure=False)))


def _assert_nothing_left(slurm, name: str, rec) -> None:
    assert slurm.cluster_jobs(name) == [], "jobs left in squeue"
    assert session_members(rec) == [], "processes of the cluster left"
    assert cluster_processes(name) == []
    # Only logs may stay, for a post-mortem (pyku-launch logs; stop --purge or the next launch removes them).
    left = [os.path.join(d, f) for d, _, fs in os.walk(os.path.expanduser(f"~/.pyku-launch/{name}")) for f in fs]
    assert all(f.endswith((".log", ".log.1")) for f in left), left


def test_host_and_pool_launch_compute_status_stop(sshd, slurm, state_dir, tmp_path):
    """The issue's "done when": one SSH host and a pool of 2 jobs, one inventory, one command each."""
    inv = pool_inventory(tmp_path / "hosts.toml", sshd, name="mixed", jobs=2, nworkers=1, memory_limit="500MiB")
    try:
        rec = launcher.launch(inv)
        chains = [h for h in rec.hosts if h.source == "slurm"]
        assert len(chains) == 2 and all(h.extra["jobs"] for h in chains)
        label = chains[0].label
        with launcher.connect("mixed") as client:
            assert wait_until(lambda: len(_pool_workers(client, label)) == 2, 90), _pool_workers(client, label)
            names = _names_of_workers(client)
            assert "127.0.0.3-0" in names and {n for n in names if n.startswith(label)}, names

        st = launcher.status("mixed")
        pool_rows = [h for h in st["hosts"] if h.get("source") == "slurm"]
        assert [(r["state"], r["node"], r["live"], r["expected"]) for r in pool_rows] == [
            ("RUNNING", "localhost", 1, 1)] * 2
        assert {r["job"] for r in pool_rows} == {h.extra["jobs"][0] for h in chains}
        assert all(0 < r["time_left"] <= 600 for r in pool_rows)
        assert st["state"] == "running"
        shown = cli("status", "--name", "mixed", "--json")
        assert shown.returncode == 0, shown.stderr
        assert [h["job"] for h in json.loads(shown.stdout)["hosts"] if h.get("source") == "slurm"] == \
            [r["job"] for r in pool_rows]
        table = cli("status", "--name", "mixed")
        assert all(r["job"] in table.stdout for r in pool_rows), table.stdout
    finally:
        stopped = cli("stop", "--name", "mixed")
        slurm.cancel_cluster_jobs("mixed")
    assert stopped.returncode == 0, stopped.stderr
    _assert_nothing_left(slurm, "mixed", rec)


def test_dry_run_prints_the_job_script_and_submits_nothing(sshd, slurm, tmp_path):
    inv = pool_inventory(tmp_path / "hosts.toml", sshd, name="dry")
    out = cli("launch", "--dry-run", str(inv))
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --job-name=pyku-launch.dry" in out.stdout and "#SBATCH --partition=debug" in out.stdout
    assert "distributed.cli.dask_worker" in out.stdout and "PRIVATE KEY" not in out.stdout
    assert slurm.cluster_jobs("dry") == []


def test_a_partition_slurm_refuses_is_refused_before_anything_starts(sshd, slurm, tmp_path):
    """sbatch --test-only in the preflight: Slurm's own one-line message, exit 3, nothing submitted."""
    inv = pool_inventory(tmp_path / "hosts.toml", sshd, name="refused", pool='partition = "nope"')
    out = cli("launch", str(inv))
    assert out.returncode == 3, out.stderr
    line = out.stderr.strip().splitlines()[-1]  # after the progress lines
    assert line.startswith("pyku-launch: error: refused: 127.0.0.4: sbatch refuses the pool's job: invalid"
                           " partition specified: nope"), out.stderr
    assert slurm.cluster_jobs("refused", prefix="refused") == []
    assert cluster_processes("refused") == []


def test_a_login_host_without_sbatch_is_refused(sshd, slurm, tmp_path):
    # The pool's env leaves only the interpreter's directory on PATH: no Slurm tools there.
    env = f"{sshd.env_line()} && export PATH={os.path.dirname(sys.executable)}"
    inv = pool_inventory(tmp_path / "hosts.toml", sshd, name="nosbatch", pool=f"env = '{env}'")
    with pytest.raises(PreflightError) as refused:
        launcher.launch(inv)
    assert refused.value.exit_code == 3
    assert "no sbatch, squeue, scancel on the login host 127.0.0.4" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert slurm.cluster_jobs("nosbatch", prefix="nosbatch") == []


def test_a_pending_pool_is_reported_and_the_launch_returns(sshd, slurm, state_dir, tmp_path):
    """A held job stands for a queue that does not move: named with Slurm's reason and a hint. Then a
    relaunch changes nothing, an edited pool is reconciled, and stop --inventory sweeps its jobs."""
    inv = pool_inventory(tmp_path / "hosts.toml", sshd, name="queued", workers=(), jobs=1,
                         pool='job_extra = ["--hold"]')
    try:
        out = cli("launch", str(inv))
        assert out.returncode == 0, out.stderr
        assert "pending (JobHeldUser: held by you" in out.stdout + out.stderr
        st = launcher.status("queued")
        (row,) = [h for h in st["hosts"] if h.get("source") == "slurm"]
        assert (row["state"], row["reason"], row["live"]) == ("PENDING", "JobHeldUser", 0)
        (first,) = slurm.cluster_jobs("queued")
        rec = launcher.launch(inv)  # unchanged: a pending job is not a missing one, nothing is resubmitted
        assert slurm.cluster_jobs("queued") == [first]
        # An edited pool is reconciled: two jobs now, the old one cancelled.
        inv.write_text(inv.read_text().replace("jobs = 1", "jobs = 2"))
        rec = launcher.launch(inv)
        assert any("jobs 1 → 2" in line for line in rec.applied), rec.applied
        now = slurm.cluster_jobs("queued")
        assert len(now) == 2 and first not in now, now
        assert len([h for h in rec.hosts if h.source == "slurm"]) == 2
    finally:
        # Without the record (stop --inventory): the pool's jobs are found by the cluster's tag.
        stopped = launcher.stop(inventory=inv)
        slurm.cancel_cluster_jobs("queued")
    assert stopped["swept"] and stopped["stopped"] >= 2 and not stopped["unreachable"], stopped
    _assert_nothing_left(slurm, "queued", rec)


def test_workers_retire_before_the_job_ends_and_a_replacement_joins(sshd, slurm, state_dir, tmp_path):
    """Policy keep: a worker past its lifetime hands its data over, its job ends, the queued replacement
    starts and joins; every task of a computation spanning the change completes."""
    inv = pool_inventory(tmp_path / "hosts.toml", sshd, name="relay", jobs=1, nworkers=1, pool="lifetime = 15")
    try:
        rec = launcher.launch(inv)
        (chain,) = [h for h in rec.hosts if h.source == "slurm"]
        first = chain.extra["jobs"][0]
        with launcher.connect("relay") as client:
            assert wait_until(lambda: _pool_workers(client, chain.label), 60)

            def slow(i):
                import time
                time.sleep(0.5)
                return i

            results = client.gather(client.map(slow, range(80), pure=False))
            assert results == list(range(80))
            # The replacement's workers take the names of those that retired (named after the chain's slot).
            assert wait_until(lambda: set(_pool_jobs(client, chain.label)) - {first, None}, 60)
            assert _pool_workers(client, chain.label) == chain.worker_names()
        jobs = slurm.cluster_jobs("relay")
        assert jobs and all(i != first for i, _ in jobs), jobs
    finally:
        stopped = cli("stop", "--name", "relay")
        slurm.cancel_cluster_jobs("relay")
    assert stopped.returncode == 0, stopped.stderr
    _assert_nothing_left(slurm, "relay", rec)


def test_shipped_packages_reach_the_jobs_workers(sshd, slurm, state_dir, tmp_path, monkeypatch):
    """[cluster] ship: a package only this machine has is unpacked in the pool's directory on the login
    host (the nodes share it) and the jobs' workers import that copy."""
    src = tmp_path / "src" / "shipprobe"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("def where():\n    return __file__\n")
    monkeypatch.syspath_prepend(str(src.parent))
    inv = pool_inventory(tmp_path / "hosts.toml", sshd, name="shipped", workers=(), jobs=1,
                         cluster_extra='ship = ["shipprobe"]')
    try:
        rec = launcher.launch(inv)
        (chain,) = [h for h in rec.hosts if h.source == "slurm"]
        assert list(rec.shipped) == ["shipprobe"]
        with launcher.connect("shipped") as client:
            assert wait_until(lambda: _pool_workers(client, chain.label), 90)
            files = client.run(lambda: __import__("shipprobe").where())
        assert list(files.values()) == [os.path.expanduser(
            f"~/.pyku-launch/shipped/{chain.label}.slurm/ship/shipprobe/__init__.py")], files
    finally:
        stopped = cli("stop", "--name", "shipped")
        slurm.cancel_cluster_jobs("shipped")
    assert stopped.returncode == 0, stopped.stderr
    _assert_nothing_left(slurm, "shipped", rec)
