"""The real one-node Slurm of the batch-pool tests: check it is up (or start it), clean up a test's jobs.

``.ci/slurm-up`` (run by ``.ci/run``, or by :func:`ensure` as root) writes a
slurm.conf for one node ``localhost`` (CPUs=2, partition ``debug``) and
starts munged, slurmctld and slurmd on this machine. The pool's login host
in the tests is one of the sshd test hosts (127.0.0.N is this machine, so
``sbatch`` works there), and the jobs run on this machine too: a job's
worker processes can be checked in /proc like any host's.

:func:`cancel_cluster_jobs` cancels only the jobs of one cluster, found by
the tag the launcher sets (job name ``pyku-launch.<cluster>`` and a comment
starting with the cluster's token prefix): never another test's or a
user's jobs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from . import ROOT

SETUP = ROOT / ".ci" / "slurm-up"
TOOLS = ("sbatch", "squeue", "scancel", "sinfo", "slurmctld", "slurmd", "munged")
PARTITION = "debug"


def _run(*argv: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def node_state() -> str | None:
    """sinfo's state of node ``localhost`` (``idle``, ``mix``, ``alloc``…), None if Slurm does not answer."""
    try:
        r = _run("sinfo", "-h", "-n", "localhost", "-o", "%t", timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    state = r.stdout.strip().splitlines()
    return state[0] if r.returncode == 0 and state else None


def usable() -> bool:
    return node_state() in ("idle", "mix", "alloc", "comp")


def ensure() -> str | None:
    """None when the one-node Slurm takes jobs (started by ``.ci/slurm-up`` if need be, as root), else why not."""
    missing = [t for t in TOOLS if shutil.which(t) is None and not os.access(f"/usr/sbin/{t}", os.X_OK)]
    if missing:
        return f"no {', '.join(missing)} (apt-get install slurm-wlm munge; then .ci/slurm-up as root)"
    if usable():
        return None
    if os.geteuid() != 0:
        return "Slurm is not running and only root can start it (sudo .ci/slurm-up)"
    r = _run("bash", str(SETUP), timeout=120)
    if r.returncode != 0:
        return f".ci/slurm-up failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
    return None if usable() else f"node localhost not usable after .ci/slurm-up (sinfo: {node_state()})"


def cluster_jobs(name: str, prefix: str = "") -> list[tuple[str, str]]:
    """(job id, state) of cluster ``name``'s jobs in squeue, comment starting with ``prefix`` (default ``<name>.``)."""
    from launcher.sources.slurm_queue import parse_squeue, squeue_command
    from launcher.sources.slurm_script import job_name

    r = _run("bash", "-c", squeue_command(job_name(name)))
    return [(j.id, j.state) for j in parse_squeue(r.stdout, prefix or f"{name}.")]


def cancel_cluster_jobs(name: str, timeout: float = 30) -> list[str]:
    """Cancel cluster ``name``'s jobs (only those) and wait until squeue lists none; the ids cancelled.

    For a test's cleanup: a test that passes has left none (its ``stop`` did it).
    """
    cancelled: list[str] = []
    deadline = time.monotonic() + timeout
    while jobs := cluster_jobs(name):
        ids = [i for i, _ in jobs]
        cancelled += [i for i in ids if i not in cancelled]
        _run("scancel", *ids)
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs of {name} still in squeue after {timeout:g} s: {jobs}")
        time.sleep(0.5)
    return cancelled


def pool_inventory(path, testbed, *, name: str, workers=(1,), login: int = 2, jobs: int = 2,
                   pool: str = "", **kwargs):
    """:func:`launcher.testing.clusters.ssh_inventory` plus one ``[[slurm]]`` pool on this machine's Slurm.

    The login host is testbed host ``login``; jobs of one worker with 500 MiB
    in 1 GiB, so the pool's jobs all fit the one node (2 CPUs) at once.
    ``pool``: more lines of the ``[[slurm]]`` table (replacing the defaults
    of the keys they set).
    """
    from .clusters import ssh_inventory

    # A job's worker starts without the hosts' forkserver preload, while the node's 2 CPUs also run
    # the other job: death_timeout (which bounds a worker's start) well above a loaded start.
    kwargs.setdefault("death_timeout", 60)
    path = ssh_inventory(path, testbed, name=name, workers=workers, **kwargs)
    keys = {"login": f'"{testbed.hosts[login].address}"', "jobs": str(jobs), "nworkers": "1",
            "memory_limit": '"500MiB"', "job_mem": '"1GiB"', "walltime": '"00:10:00"',
            "partition": f'"{PARTITION}"'}
    for line in pool.strip().splitlines():
        key, _, value = line.partition("=")
        keys[key.strip()] = value.strip()
    with open(path, "a") as f:
        f.write("\n[[slurm]]\n" + "".join(f"{k} = {x}\n" for k, x in keys.items()))
    return path
