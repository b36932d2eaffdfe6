"""``[[slurm]]`` tables: batch pools of workers beside the SSH hosts (docs/architecture.md).

A pool is a number of batch jobs (``jobs``; ``launcher.Cluster``'s scale
and adapt may go up to ``max_jobs``), each one node running ``nworkers``
workers, submitted with ``sbatch`` on a login host reached over
SSH like any host (``[ssh]`` and ``~/.ssh/config`` apply). Its keys are one
declarative table (:data:`SCHEMA`, checked by :mod:`launcher.config.validate`'s
checkers, so errors read like every other inventory error) and resolve into
a frozen :class:`PoolSpec`. ``kind`` names the batch system: Slurm only for
now, behind a spec PBS or LSF pools can reuse (their own table and script).

Defaults follow dask-jobqueue's ``SLURMCluster``: a job asks for
``nworkers * nthreads`` CPUs (``job_cpu``) and ``nworkers * memory_limit``
of memory (``job_mem``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

from launcher.config import validate as v

Fail = Callable[[str, str], NoReturn]

#: Slurm's ``--time`` forms this launcher accepts: ``[D-]HH:MM:SS``.
WALLTIME = re.compile(r"(?:(\d{1,3})-)?(\d{1,3}):([0-5]\d):([0-5]\d)")
#: Partition, account and QOS names: what ``#SBATCH`` lines carry without quoting.
SLURM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,+-]{0,127}")
#: A node feature expression (``--constraint``): no blanks, no ``#``.
CONSTRAINT = re.compile(r"[A-Za-z0-9_.,:&|*\[\]()!=+-]{1,256}")
#: A pool's label: names its jobs' workers, its run directory and status rows.
LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,62}")
MIN_WALLTIME = 120  # seconds: less leaves no time to start, work and retire


def walltime(value: Any) -> str:
    """``[D-]HH:MM:SS``, as Slurm's ``--time`` takes it; at least two minutes."""
    if not isinstance(value, str) or not WALLTIME.fullmatch(value):
        raise v.Invalid(f'must be a duration "[D-]HH:MM:SS", got {v.show(value)} (e.g. "02:00:00", "1-00:00:00")')
    if "-" in value and int(WALLTIME.fullmatch(value)[2]) > 23:
        raise v.Invalid(f"must have hours 0-23 after the days, got {v.show(value)} (e.g. \"1-12:00:00\")")
    if walltime_seconds(value) < MIN_WALLTIME:
        raise v.Invalid(f"must be at least 00:02:00, got {v.show(value)} (workers need time to start and"
                        " to retire before the job ends)")
    return value


def walltime_seconds(value: str) -> int:
    days, hours, minutes, seconds = WALLTIME.fullmatch(value).groups()
    return ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds)


def _directive(value: Any) -> str:
    """One ``job_extra`` item: an sbatch option as written after ``#SBATCH``."""
    if not isinstance(value, str) or not value.startswith("-") or any(c in value for c in "\0\n\r"):
        raise v.Invalid(f'must be sbatch options such as "--gres=gpu:1", got {v.show(value)}')
    return value


def _directives(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise v.Invalid(f'must be an array of sbatch options, got {v.show(value)} (e.g. ["--gres=gpu:1"])')
    return tuple(_directive(x) for x in value)


_POSITIVE = v.integer(1, None, "a positive integer")

#: Every key a ``[[slurm]]`` table may hold, with its checker.
SCHEMA: dict[str, v.Checker] = {
    "login": v.address,
    "name": v.matching(LABEL, "a letter then letters, digits, _ . or - (at most 63)"),
    "jobs": v.integer(0, 10000, "an integer from 0 to 10000"),
    "max_jobs": v.integer(0, 10000, "an integer from 0 to 10000"),
    "nworkers": _POSITIVE,
    "nthreads": _POSITIVE,
    "memory_limit": v.memory(64 * v.MiB, auto=False),
    "job_cpu": _POSITIVE,
    "job_mem": v.memory(64 * v.MiB, auto=False),
    "walltime": walltime,
    "partition": v.matching(SLURM_NAME, "a partition name (letters, digits and _ . , + -)"),
    "account": v.matching(SLURM_NAME, "an account name (letters, digits and _ . , + -)"),
    "qos": v.matching(SLURM_NAME, "a QOS name (letters, digits and _ . , + -)"),
    "constraint": v.matching(CONSTRAINT, "a node feature expression without blanks"),
    "job_extra": _directives,
    "replace": v.choice("keep", "once"),
    "lifetime": v.integer(10, None, "a number of seconds of at least 10"),
    "interface": v.matching(re.compile(r"[A-Za-z0-9_.:-]{1,32}"), "a network interface name such as ib0"),
    "local_directory": v.remote_directory,
    "env": v.shell_code,
    "python": v.word,
    "user": v.matching(v.USER, "a user name (letters, digits and _ . -)"),
    "port": v.port(),
    "identity": v.local_path,
    "known_hosts": v.local_path,
}


@dataclass(frozen=True)
class PoolSpec:
    """One batch pool, every default applied. Sizes are bytes.

    ``login`` is the :class:`~launcher.config.inventory.HostSpec` of the login
    host (``env`` and ``python`` are the pool's, so the login host's probe
    sees the software the jobs will run). Compute nodes are assumed to share
    the login host's file system (home) and software.
    """

    kind: str                 # "slurm"
    label: str
    login: Any                # HostSpec (not imported: inventory imports this module)
    jobs: int                 # what a launch submits and a relaunch keeps
    nworkers: int
    nthreads: int
    memory_limit: int         # per worker
    job_cpu: int
    job_mem: int
    walltime: str             # "[D-]HH:MM:SS"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    job_extra: tuple[str, ...] = ()
    replace: str = "keep"     # "keep": a job submits its successor; "once": the pool shrinks as jobs end
    interface: str | None = None
    local_directory: str | None = None  # None: the node's $TMPDIR (else /tmp)
    lifetime: int | None = None  # seconds a worker lives before it retires; None: from the walltime
    max_jobs: int | None = None  # how many jobs launcher.Cluster's scale/adapt may reach; None: jobs

    @property
    def most_jobs(self) -> int:
        """The number of job slots ``scale`` and ``adapt`` may fill (``max_jobs``, else ``jobs``)."""
        return self.jobs if self.max_jobs is None else self.max_jobs

    @property
    def walltime_seconds(self) -> int:
        return walltime_seconds(self.walltime)

    @property
    def workers(self) -> int:
        return self.jobs * self.nworkers


def parse(value: Any, table_fields: Callable[[dict, str], dict], resolve_login: Callable[[dict], Any],
          fail: Fail) -> tuple[PoolSpec, ...]:
    """The ``[[slurm]]`` array of an inventory, checked and resolved.

    ``table_fields(entry, keypath)`` checks one table against :data:`SCHEMA`
    (the inventory's own table checker, so unknown keys get its hints);
    ``resolve_login(own)`` builds the login HostSpec through the inventory's
    cascade (``[ssh]``, ``[cluster]`` env and python).
    """
    if value is None:
        return ()
    if isinstance(value, dict):
        fail("slurm", "must be an array of tables, got a single [slurm] table"
                      " (write [[slurm]], with two brackets, before each pool)")
    if not isinstance(value, list):
        fail("slurm", f"must be an array of tables, got {v.show(value)} (write [[slurm]] before each pool)")
    pools, labels = [], {}
    for number, entry in enumerate(value, start=1):
        keypath = f"slurm[{number}]"
        own = table_fields(entry, keypath)
        if "login" not in own:
            fail(f"{keypath}.login", 'missing (the SSH target where sbatch runs: login = "<host or ssh alias>")')
        pool = _resolve(own, resolve_login, keypath, fail)
        if pool.label.casefold() in labels:
            fail(f"{keypath}.name", f"{pool.label!r} is taken by slurm[{labels[pool.label.casefold()]}]"
                                    " (give each pool its own name = \"...\")")
        labels[pool.label.casefold()] = number
        pools.append(pool)
    return tuple(pools)


def _resolve(own: dict, resolve_login: Callable[[dict], Any], keypath: str, fail: Fail) -> PoolSpec:
    nworkers, nthreads = own.get("nworkers", 1), own.get("nthreads", 1)
    memory_limit, job_mem = own.get("memory_limit"), own.get("job_mem")
    if memory_limit is None and job_mem is None:
        fail(f"{keypath}.memory_limit", 'missing (per worker, e.g. memory_limit = "4GiB"; or job_mem per job)')
    memory_limit = memory_limit or job_mem // nworkers
    job_mem = job_mem or memory_limit * nworkers
    if memory_limit * nworkers > job_mem:
        fail(f"{keypath}.job_mem", f"is {job_mem} bytes, less than nworkers * memory_limit ="
                                   f" {memory_limit * nworkers} (raise job_mem or lower memory_limit)")
    wall = own.get("walltime", "01:00:00")
    if own.get("lifetime") is not None and own["lifetime"] >= walltime_seconds(wall):
        fail(f"{keypath}.lifetime", f"is {own['lifetime']} s, not less than the walltime {wall}"
                                    " (workers must retire before Slurm ends the job)")
    if own.get("max_jobs") is not None and own["max_jobs"] < own.get("jobs", 1):
        fail(f"{keypath}.max_jobs", f"is {own['max_jobs']}, less than jobs = {own.get('jobs', 1)}"
                                    " (the most jobs scale and adapt may reach: raise it, or lower jobs)")
    login_keys = {k: own[k] for k in ("user", "port", "identity", "known_hosts", "env", "python") if k in own}
    login = resolve_login({"address": own["login"], **login_keys})
    label = own.get("name") or f"slurm-{login.label}"
    return PoolSpec(kind="slurm", label=label, login=login, jobs=own.get("jobs", 1), nworkers=nworkers,
                    nthreads=nthreads, memory_limit=memory_limit,
                    job_cpu=own.get("job_cpu", nworkers * nthreads), job_mem=job_mem,
                    walltime=wall, lifetime=own.get("lifetime"), partition=own.get("partition"),
                    account=own.get("account"), qos=own.get("qos"), constraint=own.get("constraint"),
                    job_extra=own.get("job_extra", ()), replace=own.get("replace", "keep"),
                    interface=own.get("interface"), local_directory=own.get("local_directory"),
                    max_jobs=own.get("max_jobs"))
