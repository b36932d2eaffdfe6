"""Slurm pools as a worker source: the ``[[slurm]]`` tables, batch jobs submitted over SSH on a login host.

A member is a pool (its label, reached through its login host's
:class:`HostSpec`); a tree is one *chain* of jobs: a job and, with policy
``keep``, the replacements each job queues for itself
(``--dependency=afterany``), all carrying the tree's token as their Slurm
comment and the cluster's job name (:mod:`launcher.sources.slurm_script`).
That tag, not a job id, is how status and stop find a chain's jobs again
(a replacement's id is known to Slurm only), as Ray's ``NodeProvider`` finds
its nodes by their tags; the user's other jobs are never touched.

Every Slurm command is one ``run`` step of the login host's agent
(:func:`launcher.remote.agent.op_run`): the job scripts and the TLS
material are files it writes (0600) into the pool's run directory, which
the compute nodes are assumed to share (the home directory). The launch
does not wait for a queue (``wait = False``): it submits, waits for the
SSH hosts' workers, and reports what each chain's job is doing (running,
or pending with Slurm's reason and a hint).

Stop removes the chains' scripts first (so no job can queue another
replacement), cancels their jobs, waits until ``squeue`` lists none of
them, then asks the login host's agent for processes carrying the tokens,
which proves a node that is the login host itself (the tests' one-node
Slurm) clean; elsewhere Slurm's own end of the job is the proof.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from collections import Counter
from typing import Callable

from launcher.config.inventory import HostSpec, Inventory
from launcher.config.pools import PoolSpec
from launcher.errors import LaunchError
from launcher.remote import commands, logtail
from launcher.remote.protocol import Logs
from launcher.remote.transport import connection_key
from launcher.sources import slurm_jobs as chains, slurm_queue as queue, slurm_script as script
from launcher.sources.base import Context, Join, Stopped
from launcher.sources.slurm_jobs import jobs_of, run
from launcher.sources.ssh import stop_trees, sweep_hosts
from launcher.store import state
from launcher.store.records import HostRecord

TOOLS = ("sbatch", "squeue", "scancel")
POLL = 0.5  # seconds between squeue calls while jobs end



def member(pool: PoolSpec) -> HostSpec:
    """The pool as a member: its login host under the pool's label, sized as the whole pool."""
    return dataclasses.replace(pool.login, label=pool.label, nworkers=pool.workers,
                               nthreads=pool.nthreads, memory_limit=pool.memory_limit)


def _by_login(recs: list[HostRecord]) -> dict[tuple, list[HostRecord]]:
    out: dict[tuple, list[HostRecord]] = {}
    for r in recs:
        out.setdefault(connection_key(r.spec), []).append(r)
    return out


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return address == "localhost"


class SlurmPools:
    """The inventory's ``[[slurm]]`` tables as a worker source (see the module and :class:`WorkerSource`)."""

    kind = "slurm"
    section = "slurm"
    wait = False
    probe_role = "login"

    def __init__(self, inv: Inventory | None = None):
        self.inv = inv
        self.pools = {p.label: p for p in inv.pools} if inv is not None else {}

    def members(self) -> list[HostSpec]:
        return [member(p) for p in self.pools.values()]

    def settings(self, label: str) -> dict:
        """The member's settings beyond its HostSpec that its trees were started with (a reconcile compares)."""
        return chains.settings(self.pools[label])

    def slots(self, label: str) -> list[tuple[str, ...]]:
        """The pool's job slots, each the names of one job's workers, in the order scale fills them."""
        return chains.slots(self.pools[label])

    def dry_run(self) -> list[str]:
        """What a launch would run for each pool (``--dry-run``): the steps and the job script itself."""
        lines = []
        address, why = self.scheduler_address()
        for pool in self.pools.values():
            spec = member(pool)
            tag = f"<token of the chain: {self.inv.name}.<scope>.<random>.{pool.label}.workers>"
            text = script.job_script(self.inv, pool, tag, f"{self.inv.protocol}://{address}:<port>", "job-<random>.sh")
            lines.append(commands.describe(spec, "run")
                         + f"\n    preflight: sbatch --test-only of this script (nothing submitted)"
                         + f"\n    then in {script.run_dir(self.inv.name, pool)}: the TLS files (0600) and"
                         f" {pool.jobs} script(s) like this one, each submitted with sbatch --parsable"
                         + f"\n    the scheduler's address: {address} ({why})")
            lines += ["    | " + line for line in text.splitlines()]
        return lines

    # ---- preflight

    async def preflight(self, ctx: Context, probes: list) -> dict[str, str]:
        """Per pool: Slurm's tools on the login host, sbatch accepts the job (``--test-only``), a
        scheduler address the nodes can reach. Says which address the jobs' workers use, and that
        the nodes are taken to have the login host's software (its probe is the pool's)."""
        answers = await asyncio.gather(*(self._check(ctx, p) for p in probes), return_exceptions=True)
        refused = {}
        for p, answer in zip(probes, answers):
            if isinstance(answer, LaunchError):
                refused[p.spec.label] = answer.message
            elif isinstance(answer, BaseException):
                raise answer
            elif answer:
                refused[p.spec.label] = answer
        return refused

    def scheduler_address(self) -> tuple[str, str]:
        """(address, why) the jobs' workers are given for the scheduler, before it runs."""
        sched = self.inv.scheduler
        if sched.listen:
            return sched.listen, "[scheduler] listen"
        return sched.address, "the [scheduler] address, which the scheduler listens on as reached over SSH"

    async def _check(self, ctx: Context, probe) -> str:
        pool, spec = self.pools[probe.spec.label], probe.spec
        found = await run(ctx, spec, f"for t in {' '.join(TOOLS)}; do command -v $t; done")
        have = {line.rsplit("/", 1)[-1] for line in found.stdout.split()}
        lacking = [t for t in TOOLS if t not in have]
        if lacking:
            return (f"no {', '.join(lacking)} on the login host {spec.address} (after the pool's env: load"
                    f" Slurm there, e.g. env = \"module load slurm\", or fix login)")
        address, why = self.scheduler_address()
        if _loopback(address) and not _loopback(spec.address) and not _loopback(probe.reply.get("listen") or ""):
            return (f"the scheduler's address {address} ({why}) is a loopback address, which compute nodes"
                    f" cannot reach: give [scheduler] an address or listen the nodes route to")
        test = script.job_script(self.inv, pool, "pyku-launch-test-only", f"{self.inv.protocol}://{address}:0")
        reply = await run(ctx, spec, f"sbatch --test-only /dev/stdin <<'PYKU_LAUNCH_EOF'\n{test}PYKU_LAUNCH_EOF\n")
        if reply.rc != 0:
            return f"sbatch refuses the pool's job: {queue.sbatch_error(reply.stderr)}"
        probe.warnings.append(
            f"pool {pool.label}: jobs' workers connect to the scheduler at {address} ({why}); the compute"
            f" nodes are assumed to reach it, to share {spec.address}'s home directory and to have the"
            f" software probed there")
        return ""

    # ---- start

    async def start(self, ctx: Context, probe, join: Join, record: Callable[[HostRecord], None],
                    name: str | None = None) -> list[HostRecord]:
        """Submit the pool's chains (job slots ``0`` … ``jobs-1``), each recorded before its sbatch.

        ``name``: the chain of the job slot that runs the worker of that name
        (``launcher.Cluster``'s scale and adapt, a relaunch's repair): a job
        is the unit, so its other workers start with it.
        """
        pool = self.pools[probe.spec.label]
        slots = range(pool.jobs) if name is None else [chains.slot_of(pool, name)]
        return await chains.submit(ctx, self.inv, pool, probe.spec, join, record, list(slots), self.kind)

    # ---- alive, stop

    async def alive(self, ctx: Context, recs: list[HostRecord]) -> dict[str, bool | None]:
        out: dict[str, bool | None] = {}
        for group in _by_login(recs).values():
            try:
                jobs = await self._jobs(ctx, group)
            except LaunchError:
                out |= {r.token: None for r in group}
                continue
            tags = {j.comment for j in jobs}
            out |= {r.token: r.token in tags for r in group}
        return out

    async def _jobs(self, ctx: Context, group: list[HostRecord]) -> list[queue.Job]:
        """The active jobs of these chains (one login host): squeue, filtered by their tokens."""
        name = group[0].token.split(".", 1)[0]
        tokens = {r.token for r in group}
        prefix = group[0].token.split(".", 2)
        jobs = await jobs_of(ctx, group[0].spec, name, f"{prefix[0]}.{prefix[1]}.")
        return [j for j in jobs if j.comment in tokens]

    async def stop(self, ctx: Context, recs: list[HostRecord], *, remaining: list[HostRecord] = (),
                   settle: float = 0.0, keep_logs: bool = False) -> Stopped:
        done = Stopped()
        groups = list(_by_login(recs).values())
        results = await asyncio.gather(*(self._stop_login(ctx, g, list(remaining)) for g in groups),
                                       return_exceptions=True)
        for group, result in zip(groups, results):
            address = group[0].address
            if isinstance(result, LaunchError):
                done.unreachable[address] = str(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                done.add(result)
        return done

    async def _cancel(self, ctx: Context, spec: HostSpec, select) -> tuple[int, list[str]]:
        """Cancel the jobs ``select()`` lists until squeue lists none: (jobs cancelled, what is left on timeout)."""
        cancelled: set[str] = set()
        deadline = time.monotonic() + ctx.step_timeout
        while jobs := await select():
            fresh = [j.id for j in jobs if j.id not in cancelled or j.state == "PENDING"]
            if fresh:
                await run(ctx, spec, queue.scancel_command(fresh))
                cancelled |= set(fresh)
            if time.monotonic() > deadline:
                return len(cancelled), [f"job {j.id} {j.state}" for j in jobs]
            await asyncio.sleep(POLL)
        return len(cancelled), []

    async def _stop_login(self, ctx: Context, group: list[HostRecord], remaining: list[HostRecord]) -> Stopped:
        """Stop the chains of one login host: scripts gone, jobs cancelled and out of squeue, no process."""
        spec, done = group[0].spec, Stopped()
        if not ctx.reached(spec):
            raise ctx.failed.get(connection_key(spec)) or LaunchError("not reachable", host=spec.address)
        scripts = " ".join(f"{r.rundir}/{r.extra.get('script', 'none')}" for r in group)
        await run(ctx, spec, f"cd && rm -f {scripts}")  # no job can queue a replacement any more
        cancelled, left = await self._cancel(ctx, spec, lambda: self._jobs(ctx, group))
        done.found += cancelled
        if left:
            done.left[spec.address] = left
            return done
        # The pool's directory (certificates, logs) goes with the last chain of the cluster there.
        others = [h for h in remaining if h.source == self.kind and h not in group and h.rundir in
                  {r.rundir for r in group}]
        cut = [dataclasses.replace(r, remove=r.remove if others else [r.rundir], prune=r.prune[1:] if not
                                   others else []) for r in group]
        reply, _ = await stop_trees(ctx.conn(spec), cut, timeout=ctx.step_timeout)
        if reply.left:
            done.left[spec.address] = reply.left
            return done
        done.found += reply.found
        done.killed += reply.killed
        done.gone += group
        return done

    async def sweep(self, ctx: Context) -> Stopped:
        """``stop --inventory``: every job of the cluster launched from this state directory, on every
        pool's login host (scripts first, then the jobs), then its processes and run directory there."""
        done = Stopped()
        prefix = f"{ctx.name}.{state.scope()}."
        logins = {connection_key(s): s for s in self.members()}
        for key, spec in logins.items():
            if not ctx.reached(spec):
                done.unreachable[spec.address] = ctx.failed[key].message
                continue
            try:
                await run(ctx, spec, f"cd && rm -f {commands.RUN_ROOT}/{ctx.name}/*.slurm/job-*.sh")
                cancelled, left = await self._cancel(ctx, spec, lambda: jobs_of(ctx, spec, ctx.name, prefix))
            except LaunchError as e:
                done.unreachable[spec.address] = e.message
                continue
            done.found += cancelled
            if left:
                done.left[spec.address] = left
        return done.add(await sweep_hosts(ctx, [s for k, s in logins.items() if s.address not in done.unreachable]))

    # ---- why late, describe

    async def why_late(self, ctx: Context, recs: list[HostRecord]) -> dict[str, str]:
        out: dict[str, str] = {}
        for r in recs:
            try:
                reply = await ctx.conn(r.spec).request(Logs(r.rundir, 40), ctx.step_timeout)
            except LaunchError:
                continue
            jobs = {f"job-{j}.log" for j in r.extra.get("jobs", [])}
            lines = [ln for f, v in reply.logs.items() if f in jobs for ln in v]
            if text := logtail.summary(lines):
                out[r.label] = text
        return out

    async def describe(self, ctx: Context, recs: list[HostRecord], live: Counter) -> list[dict]:
        """One row per chain: its current job (id, state, pending reason and hint, node, time left)."""
        await ctx.open([r.spec for r in recs])
        found: dict[str, list[queue.Job]] = {}
        failed: dict[str, str] = {}
        for group in _by_login(recs).values():
            try:
                for j in await self._jobs(ctx, group):
                    found.setdefault(j.comment, []).append(j)
            except LaunchError as e:
                failed |= {r.token: e.message for r in group}
        return [self._row(r, found.get(r.token, []), live, failed.get(r.token)) for r in recs]

    @staticmethod
    def _row(rec: HostRecord, jobs: list[queue.Job], live: Counter, error: str | None) -> dict:
        current = next((j for j in jobs if j.state != "PENDING"), jobs[0] if jobs else None)
        n = live.get(f"{rec.label}-{rec.extra.get('slot')}", 0)  # readiness counts by the name less "-<i>"
        row = {"address": rec.address, "role": rec.role, "expected": rec.expected, "live": n,
               "memory_limit": rec.memory_limit, "source": "slurm", "pool": rec.label,
               "job": current.id if current else None, "state": current.state if current else "GONE",
               "reason": current.reason if current else None, "node": current.node if current else None,
               "time_left": current.left if current else None,
               "queued": [j.id for j in jobs if j is not current]}
        row["host"] = f"{rec.label} job {current.id}" if current else rec.label
        if error:
            row.update(state="UNKNOWN", detail=f"squeue did not answer: {error}")
        elif current is None:
            row["detail"] = "no job in the queue (ended, or cancelled outside pyku-launch)"
        elif current.state == "PENDING":
            row["detail"] = f"job {current.id} pending ({current.hint()})"
        else:
            row["detail"] = (f"job {current.id} {current.state} on {current.node or '?'},"
                             f" {queue.show_duration(current.left)} left")
        return row
