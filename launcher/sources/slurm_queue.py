"""What Slurm says about a pool's jobs, parsed (pure): squeue lines, sbatch's answer, pending reasons.

``squeue`` is asked with a fixed ``--format`` rather than ``--json``: the
format works on every Slurm in use, and before 23.02 ``squeue --json``
ignores the filters (``-u``, ``--name``; Slurm 22.05 here answered every
job of every user), which on a big machine is megabytes per status. The
fields are separated by ``|``, which none of them contains (job names and
comments are the launcher's own).

A job is the cluster's when its name is :func:`slurm_script.job_name
<launcher.sources.slurm_script.job_name>` and its comment is a token of the
cluster (``<name>.<scope>.``…, the tag the launcher set); the user's other
jobs, even of the same name, are never listed, cancelled or counted.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass

#: job id, name, state, reason, node list, time left, time limit, comment.
FORMAT = "%i|%j|%T|%r|%N|%L|%l|%k"
_FIELDS = FORMAT.count("|") + 1
#: States in which a job's processes may still run (or start); anything else has ended.
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUED",
          "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}

#: Why a job pends (squeue's %r) -> what the user can do about it.
HINTS = {
    "Priority": "other jobs come first; it starts when its priority is highest",
    "Resources": "waiting for a free node; it starts when one is",
    "Dependency": "the replacement of a running job: it starts when that job ends",
    "BeginTime": "it was asked to start later",
    "PartitionTimeLimit": "walltime is longer than the partition allows: lower walltime or pick another partition",
    "PartitionNodeLimit": "the partition has no node this large: lower job_cpu/job_mem or pick another partition",
    "PartitionDown": "the partition is down: ask the site, or pick another partition",
    "PartitionInactive": "the partition is inactive: ask the site, or pick another partition",
    "ReqNodeNotAvail": "the nodes it may use are down, drained or reserved",
    "JobHeldUser": "held by you: scontrol release <job id>",
    "JobHeldAdmin": "held by an administrator",
    "AssocGrpCpuLimit": "your account's CPU limit is reached: fewer jobs or smaller ones",
    "AssocMaxJobsLimit": "your account's job limit is reached: fewer jobs",
    "QOSMaxJobsPerUserLimit": "the QOS allows no more jobs of yours: fewer jobs, or another qos",
    "QOSMaxCpuPerUserLimit": "the QOS allows no more CPUs of yours: fewer or smaller jobs, or another qos",
    "InvalidAccount": "the account is not valid for you: fix account",
    "InvalidQOS": "the QOS is not valid for you: fix qos",
    "BadConstraints": "no node has the features asked: fix constraint",
}


@dataclass(frozen=True)
class Job:
    """One job as squeue shows it."""

    id: str
    name: str
    state: str            # PENDING, RUNNING, COMPLETING, ...
    reason: str           # why it pends ("None" once running)
    node: str             # its node ("" while pending)
    left: int | None      # seconds of walltime left; None: unknown or unlimited
    limit: str            # its walltime as Slurm shows it
    comment: str          # the tag the launcher set

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def hint(self) -> str:
        """The reason a pending job waits and what to do, in one phrase (empty when running)."""
        if self.state != "PENDING":
            return ""
        return f"{self.reason}: {HINTS[self.reason]}" if self.reason in HINTS else self.reason

    def to_json(self) -> dict:
        return asdict(self)


def squeue_command(name: str) -> str:
    """The shell command listing this user's jobs named ``name`` (COMPLETING ones included)."""
    return f'squeue -h -u "$(id -un)" --name={shlex.quote(name)} -t all -o {shlex.quote(FORMAT)}'


def parse_squeue(text: str, tag_prefix: str) -> list[Job]:
    """The jobs of squeue's output whose comment starts with ``tag_prefix`` and that still run or wait."""
    jobs = []
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) != _FIELDS:
            continue  # a warning squeue printed, not a job
        job = Job(id=fields[0].strip(), name=fields[1], state=fields[2].strip(), reason=fields[3].strip(),
                  node=fields[4].strip(), left=duration(fields[5].strip()), limit=fields[6].strip(),
                  comment=fields[7].strip())
        if job.comment.startswith(tag_prefix) and job.active:
            jobs.append(job)
    return jobs


_DURATION = re.compile(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)")


def duration(text: str) -> int | None:
    """Seconds of a Slurm duration (``1-02:03:04``, ``2:03:04``, ``3:04``); None for UNLIMITED, INVALID…"""
    m = _DURATION.fullmatch(text)
    if not m:
        return None
    days, hours, minutes, seconds = (int(x or 0) for x in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def show_duration(seconds: int | None) -> str:
    """``1h02m``, ``5m03s``, ``42s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s" if m else f"{s}s"


def sbatch_command(script: str, dependency: str | None = None) -> str:
    """Submit ``script`` (in the current directory, the pool's run directory); prints the job id."""
    dep = f" --dependency={shlex.quote(dependency)}" if dependency else ""
    return f"sbatch --parsable{dep} {shlex.quote(script)}"


def parse_sbatch(stdout: str) -> str:
    """The job id of ``sbatch --parsable`` (``123`` or ``123;cluster``)."""
    for line in stdout.splitlines():
        head = line.strip().split(";")[0]
        if head.isdigit():
            return head
    raise ValueError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")


def sbatch_error(stderr: str) -> str:
    """sbatch's own message, one line: its last ``error:`` line, without the ``sbatch: error:`` prefix."""
    lines = [x.strip() for x in stderr.splitlines() if x.strip()]
    errors = [x for x in lines if "error:" in x]
    line = (errors or lines or ["sbatch failed without a message"])[-1]
    return re.sub(r"^(sbatch: )?error: ", "", line)


def scancel_command(ids: list[str]) -> str:
    return "scancel " + " ".join(shlex.quote(i) for i in ids)
