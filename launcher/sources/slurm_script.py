"""The batch script of a Slurm pool's job, and the sbatch/squeue/scancel command lines (pure).

What ``--dry-run`` prints is what :func:`job_script` renders, as
dask-jobqueue's ``job_script()`` shows its job: ``#SBATCH`` directives
(the job name and comment that tag the job as this cluster's, one node, one
task, CPUs, memory, walltime, partition/account/qos/constraint, the user's
``job_extra``), then the body: the pool's ``env`` lines, the launcher's
environment (token, dask settings), the replacement's submission (policy
``keep``), and ``python -m distributed.cli.dask_worker`` with the pool's
sizing, ``--lifetime``/``--lifetime-stagger`` derived from the walltime, and
the TLS flags.

Certificates and keys never appear here: the launcher writes them (0600)
into the pool's run directory on the login host, the directory ``sbatch`` is
run in, which the job finds as ``$SLURM_SUBMIT_DIR``. The compute nodes are
assumed to share that file system (the home directory), as HPC sites do;
the worker processes are assumed to find the same software as the login
host after ``env`` (the preflight probes the login host only).
"""

from __future__ import annotations

import re
import shlex

from launcher.config import options
from launcher.config.pools import PoolSpec
from launcher.remote import commands
from launcher.security import tls

SCRIPT = "job.sh"
#: Placeholders of the worker's command line, as the job's shell spells them.
_SHELL_VARS = {"{rundir}": '"$SLURM_SUBMIT_DIR"', "{local_directory}": '"$spill"',
               "{jobid}": '"$SLURM_JOB_ID"'}
_PLACEHOLDER = re.compile("|".join(re.escape(k) for k in _SHELL_VARS))


def run_dir(name: str, pool: PoolSpec) -> str:
    """The pool's directory on the login host (home, shared with the nodes): script, certificates, job logs."""
    return f"{commands.RUN_ROOT}/{name}/{pool.label}.slurm"


def job_name(name: str) -> str:
    """Every job of cluster ``name`` has this name: what the user sees in ``squeue``, and the first filter."""
    return f"pyku-launch.{name}"


def lifetime(pool: PoolSpec) -> tuple[int, int]:
    """(``--lifetime``, ``--lifetime-stagger``) in seconds: every worker retires before the walltime.

    A margin of a tenth of the walltime (at least 1 min, at most 10 min and
    at most half) is kept back. distributed picks each worker's lifetime
    uniformly in ``lifetime ± stagger``, so workers retire (tasks and data
    handed over, ``Worker.close_gracefully``) between 3/4 and 1/4 of the
    margin before Slurm would end the job, staggered so that not all of a
    job's workers leave at once. A pool's own ``lifetime`` (seconds) is
    taken as given, staggered by a tenth of it.
    """
    if pool.lifetime is not None:
        return pool.lifetime, pool.lifetime // 10
    wall = pool.walltime_seconds
    margin = min(max(wall // 10, 60), 600, wall // 2)
    return wall - margin // 2, margin // 4


def shell_word(text: str) -> str:
    """``text`` quoted for the job's shell, with the placeholders left to expand there."""
    parts, at = [], 0
    for m in _PLACEHOLDER.finditer(text):
        if m.start() > at:
            parts.append(shlex.quote(text[at:m.start()]))
        parts.append(_SHELL_VARS[m.group()])
        at = m.end()
    if at < len(text) or not parts:
        parts.append(shlex.quote(text[at:]))
    return "".join(parts)


def worker_names(label: str, slot: int, nworkers: int) -> list[str]:
    """The names the workers of a chain in job slot ``slot`` register with: ``<pool>-<slot>-<i>``.

    Named after the chain's slot, not its job id: a replacement job's workers
    take the names of the workers that retired before it started, so the names
    the record lists (what ``launcher.Cluster`` and Adaptive count as
    requested) stay true across a chain's jobs, as dask-jobqueue's names stay
    with its job specs. ``status`` shows the job ids.
    """
    return [f"{label}-{slot}-{i}" for i in range(nworkers)]


def worker_argv(inv, pool: PoolSpec, scheduler: str, slot: int | str = 0) -> list[str]:
    """``dask worker`` for one job of the chain in ``slot``: its workers are :func:`worker_names`."""
    python = pool.login.python or "python3"
    live, stagger = lifetime(pool)
    # distributed appends "-<i>" to the name only when nworkers > 1.
    name = f"{pool.label}-{slot}" + ("" if pool.nworkers > 1 else "-0")
    argv = [python, "-m", "distributed.cli.dask_worker", scheduler,
            "--nworkers", str(pool.nworkers), "--nthreads", str(pool.nthreads),
            "--memory-limit", str(pool.memory_limit), "--nanny", "--name", name,
            "--protocol", inv.protocol, "--local-directory", "{local_directory}",
            "--lifetime", f"{live}s", "--lifetime-stagger", f"{stagger}s",
            "--death-timeout", f"{inv.death_timeout:g}", "--no-dashboard"]
    if pool.interface:
        argv += ["--interface", pool.interface]
    if inv.protocol == "tls":
        preload = f"{{rundir}}/{commands.REVOCATION_PRELOAD}"
        argv += tls.cli_args() + ["--preload", preload, "--preload-nanny", preload]
    return argv + options.argv(inv.worker_options)


def directives(inv, pool: PoolSpec, tag: str) -> list[str]:
    """The ``#SBATCH`` lines: the tag (name + comment), one node and task, the pool's resources."""
    lines = [f"--job-name={job_name(inv.name)}", f"--comment={tag}", "--nodes=1", "--ntasks=1",
             f"--cpus-per-task={pool.job_cpu}", f"--mem={-(-pool.job_mem // 2**20)}M",
             f"--time={pool.walltime}", "--output=job-%j.log", "--open-mode=append"]
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(pool, key):
            lines.append(f"--{key}={getattr(pool, key)}")
    return [f"#SBATCH {x}" for x in lines + list(pool.job_extra)]


def job_script(inv, pool: PoolSpec, tag: str, scheduler: str = "<scheduler address>", name: str = SCRIPT,
               slot: int | str = 0) -> str:
    """The whole batch script of one chain of the pool's jobs, the file ``name`` in the pool's run directory.

    ``tag`` (the chain's token) is the jobs' comment; with policy ``keep``
    each job queues its replacement from the same file, so a stop that
    removes the file ends the chain. ``slot``: the chain's job slot, which
    names its workers (:func:`worker_names`).
    """
    env = dict(commands.process_env(inv), PYKU_LAUNCH_TOKEN=tag, DASK_TEMPORARY_DIRECTORY="{local_directory}")
    spill = pool.local_directory or f"${{TMPDIR:-/tmp}}/pyku-launch-$(id -u)/{inv.name}/{pool.label}-$SLURM_JOB_ID"
    lines = ["#!/bin/bash", *directives(inv, pool, tag),
             f"# pyku-launch: a job of pool {pool.label} of cluster {inv.name}. The TLS certificates and keys are",
             "# files (0600) in $SLURM_SUBMIT_DIR, the pool's run directory, never in this script.",
             'cd "$SLURM_SUBMIT_DIR" || exit 1']
    if pool.login.env:
        lines += ["{", pool.login.env, "}"]
    lines += [f"export {k}={shell_word(x)}" for k, x in env.items() if k != "DASK_TEMPORARY_DIRECTORY"]
    if inv.ship:  # unpacked there by the submitting step (launcher/sources/slurm_jobs.py), first on the path
        lines.append('export PYTHONPATH="$SLURM_SUBMIT_DIR/ship${PYTHONPATH:+:$PYTHONPATH}"')
    lines += [f'spill={spill if pool.local_directory is None else shell_word(spill)}',
              'mkdir -p -m 700 "$spill" || exit 1',
              f"export DASK_TEMPORARY_DIRECTORY={shell_word(env['DASK_TEMPORARY_DIRECTORY'])}"]
    if pool.replace == "keep":
        lines += ["# Policy keep: queue this job's replacement now; it starts when this one has ended.",
                  f"[ -e {shlex.quote(name)} ] && sbatch --parsable --dependency=afterany:$SLURM_JOB_ID"
                  f" {shlex.quote(name)} >/dev/null"
                  " || echo 'pyku-launch: no replacement job submitted' >&2"]
    lines += ["# A handler (not an ignore, which the worker would inherit): the script outlives the worker.",
              "trap : TERM INT",
              " ".join(shell_word(a) for a in worker_argv(inv, pool, scheduler, slot)),
              "status=$?",
              'rm -rf "$spill"',
              "exit $status"]
    return "\n".join(lines) + "\n"
