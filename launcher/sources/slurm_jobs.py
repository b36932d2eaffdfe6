"""A Slurm pool's chains: Slurm's commands on the login host, the job slots that name workers, submission.

A *chain* (one job and, with policy ``keep``, the replacements each job
queues for itself) fills one *job slot* ``k`` of its pool; its workers are
``<pool>-<k>-<i>`` (:func:`launcher.sources.slurm_script.worker_names`),
whichever of the chain's jobs runs them. A launch fills slots ``0`` …
``jobs-1``; ``launcher.Cluster``'s scale and adapt fill and empty slots up
to ``max_jobs``, a whole job (``nworkers`` workers) at a time, as
dask-jobqueue's ``scale`` counts jobs; a relaunch submits again the slot of
a chain that left the queue (:mod:`launcher.verbs.reconcile`).

Every Slurm command is one ``run`` step of the login host's agent
(:func:`launcher.remote.agent.op_run`): the job scripts and the TLS files are
written (0600) into the pool's run directory, and ``[cluster] ship``'s
packages unpacked into its ``ship/`` (first on the jobs' ``PYTHONPATH``), by
the same step that submits.
"""

from __future__ import annotations

import re
import uuid
from typing import Callable

from launcher.config.inventory import HostSpec, Inventory
from launcher.config.pools import PoolSpec
from launcher.errors import LaunchError
from launcher.remote.protocol import Run
from launcher.sources import slurm_queue as queue, slurm_script as script
from launcher.sources.base import Context, Join, recorded
from launcher.store import state
from launcher.store.records import HostRecord

#: The pool keys a chain's job depends on beyond its HostSpec: a change replaces the pool's jobs.
#: (``max_jobs`` is not one: it only bounds what scale and adapt may submit.)
JOB_KEYS = ("jobs", "nworkers", "job_cpu", "job_mem", "walltime", "lifetime", "partition", "account", "qos",
            "constraint", "job_extra", "replace", "interface")


def settings(pool: PoolSpec) -> dict:
    """What a chain's record keeps of its pool, compared by a reconcile (``SlurmPools.settings``)."""
    return {k: list(x) if isinstance(x := getattr(pool, k), tuple) else x for k in JOB_KEYS}


async def run(ctx: Context, spec: HostSpec, command: str, *, rundir: str | None = None,
              files: dict[str, str] | None = None, timeout: float | None = None, archives: dict | None = None):
    """One shell command on the login host (a ``run`` step); its :class:`~launcher.remote.protocol.RunReply`."""
    wait = timeout or ctx.step_timeout
    return await ctx.conn(spec).request(Run(command, rundir, files or {}, wait, archives or {}), wait + 5)


async def jobs_of(ctx: Context, spec: HostSpec, name: str, prefix: str) -> list[queue.Job]:
    """The cluster's active jobs on this login host whose tag starts with ``prefix``."""
    reply = await run(ctx, spec, queue.squeue_command(script.job_name(name)))
    if reply.rc != 0:
        raise LaunchError(f"squeue failed: {queue.sbatch_error(reply.stderr)}", host=spec.address)
    return queue.parse_squeue(reply.stdout, prefix)


def slots(pool: PoolSpec) -> list[tuple[str, ...]]:
    """The pool's job slots in the order scale fills them: each the names of one job's workers."""
    return [tuple(script.worker_names(pool.label, k, pool.nworkers)) for k in range(pool.most_jobs)]


def slot_of(pool: PoolSpec, name: str) -> int:
    """The job slot whose chain runs the worker ``name``; LaunchError naming the pool if none does."""
    m = re.fullmatch(re.escape(pool.label) + r"-(\d+)-(\d+)", name)
    if not m or int(m[1]) >= pool.most_jobs or int(m[2]) >= pool.nworkers:
        raise LaunchError(f"pool {pool.label}: no job slot runs a worker named {name!r} (workers are"
                          f" {pool.label}-<slot>-<i>, slot < max_jobs = {pool.most_jobs}, i < nworkers ="
                          f" {pool.nworkers})", host=pool.login.address)
    return int(m[1])


def chain(pool: PoolSpec, spec: HostSpec, name: str, slot: int, kind: str) -> HostRecord:
    """The record of one chain about to be submitted: token (its jobs' comment), slot, script, paths."""
    rec = HostRecord.new(spec, "workers", name, pool.nworkers, pool.memory_limit, scope=state.scope(), source=kind)
    rundir = script.run_dir(name, pool)
    job = f"job-{uuid.uuid4().hex[:8]}.sh"
    rec.rundir, rec.remove = rundir, [f"{rundir}/{job}"]
    rec.prune = [rundir, *rec.prune[-2:]]  # the pool's directory, then the cluster's and ~/.pyku-launch
    rec.names = script.worker_names(pool.label, slot, pool.nworkers)
    rec.extra = {"script": job, "slot": slot, "jobs": [], "settings": settings(pool)}
    return rec


async def submit(ctx: Context, inv: Inventory, pool: PoolSpec, spec: HostSpec, join: Join,
                 record: Callable[[HostRecord], None], slots_: list[int], kind: str) -> list[HostRecord]:
    """Submit one chain per job slot, each recorded before the one ``run`` step that writes and submits them."""
    recs = [chain(pool, spec, ctx.name, k, kind) for k in slots_]
    for rec in recs:
        await recorded(record(rec))
    files = dict(join.files)
    for rec in recs:
        files[rec.extra["script"]] = script.job_script(inv, pool, rec.token, join.scheduler, rec.extra["script"],
                                                       rec.extra["slot"])
    command = "; ".join(f"printf '%s ' {rec.extra['script']} && {queue.sbatch_command(rec.extra['script'])}"
                        f" || exit 1" for rec in recs)
    reply = await run(ctx, spec, command or "true", rundir=recs[0].rundir if recs else None, files=files,
                      archives=join.archives)
    for line in reply.stdout.splitlines():
        job, _, jid = line.partition(" ")
        for rec in recs:
            if rec.extra["script"] == job and jid.strip():
                rec.extra["jobs"] = [queue.parse_sbatch(jid)]
    if reply.rc != 0:
        raise LaunchError(f"sbatch: {queue.sbatch_error(reply.stderr)}", host=spec.address)
    if join.archives and recs:
        join.verify(reply.shipped, spec.address)  # the copy the nodes import, on the shared file system
    return recs
