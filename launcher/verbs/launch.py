"""``pyku-launch launch HOSTS.toml``: preflight, scheduler, workers, wait, record.

The steps of a launch (docs/architecture.md), each on every host at once
over one connection per host. Anything a failed or interrupted launch started is stopped again on
every host before the error is raised, so a refused launch leaves nothing
running and no state behind.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

from launcher.remote import logtail
from launcher.verbs import plan, preflight
from launcher.remote import readiness, commands
from launcher.verbs import ship
from launcher.store import state, stopped
from launcher.security import tls
from launcher.reach import tunnel
from launcher.errors import LaunchError, by_cause
from launcher.config.inventory import HostSpec, Inventory
from launcher.ui.progress import Reporter
from launcher.remote.protocol import Logs, SpawnReply, Spawn, Status
from launcher.store.records import ClusterRecord, HostRecord
from launcher.verbs.stop import stop_async, stop_trees
from launcher.remote.transport import StepHook, close_all, connection_key, open_connections


def _preimport_distributed() -> None:
    """Import distributed in a thread while SSH steps run: it costs ~1 s of CPU."""
    def work():
        try:
            import distributed  # noqa: F401
        except Exception:
            pass
    threading.Thread(target=work, daemon=True).start()


async def launch_async(inv: Inventory, *, report: Reporter, allow_mismatch: bool = False,
                       allow_partial: bool = False, timeout: float | None = None,
                       on_step: StepHook | None = None, recreate: bool = False) -> ClusterRecord:
    """Launch the inventory's cluster and return its state record.

    If a cluster of that name is already running, it is converged to the
    inventory instead (:mod:`launcher.reconcile`); unchanged, its record
    comes back with ``already_running`` set. ``on_step`` sees every agent
    step (:data:`launcher.transport.StepHook`).
    """
    _preimport_distributed()
    existing = await _existing(inv.name, report, on_step)
    if existing is not None:
        from launcher.verbs.reconcile import reconcile_async

        done = await reconcile_async(inv, existing, report=report, recreate=recreate, timeout=timeout,
                                     allow_mismatch=allow_mismatch, on_step=on_step)
        if done is not None:
            return done
    if inv.protocol == "tcp":
        report.warn("protocol = \"tcp\": anyone who can reach the scheduler's port can run code "
                    "on your workers; use \"tls\" (the default) on shared networks")
    if inv.protocol == "tls" and inv.dashboard == "open":
        report.warn("dashboard = \"open\": anyone who can reach the dashboard's port reads the scheduler's "
                    "and workers' logs (plain HTTP, no login); leave it closed and use pyku-launch dashboard")
    if inv.death_timeout < 20:
        report.warn(f"death_timeout = {inv.death_timeout:g} s also bounds how long a worker may take to "
                    f"start (distributed's nanny kills it after): a loaded host may need more")
    run = _Launch(inv, report, allow_mismatch=allow_mismatch, allow_partial=allow_partial,
                  timeout=inv.timeout if timeout is None else timeout, on_step=on_step)
    return await run.go()


class _Launch:
    """One launch: the open connections and what it started, for a rollback."""

    def __init__(self, inv: Inventory, report: Reporter, *, allow_mismatch: bool, allow_partial: bool,
                 timeout: float, on_step: StepHook | None = None):
        self.inv, self.report, self.timeout, self.on_step = inv, report, timeout, on_step
        self.allow_mismatch = allow_mismatch
        partial = allow_partial or inv.min_hosts is not None
        self.min_hosts = (inv.min_hosts or 1) if partial else len(inv.hosts)
        self.partial = partial
        self.conns: dict = {}
        self.records: list[HostRecord] = []  # every process tree started (or being started)
        self.missing: dict[str, str] = {}  # hosts left out (by label), and why
        self.running_steps: list[str] = []
        self.ca: tls.CA | None = None  # its key signs shares later (launcher/share.py)
        self.scheduler_up = asyncio.Event()  # its spawn replied: it listens
        self.shipped = ship.pack(inv.ship)  # read from disk, never imported here

    def conn(self, spec: HostSpec):
        return self.conns[connection_key(spec)]

    def _step(self, name: str, detail: str = "") -> None:
        """A step starts: tell the user, and note it in the lock file for ``status``."""
        self.running_steps.append(name)
        self.report.step(name, detail)
        state.note(self.inv.name, f"launch (pid {os.getpid()}, step {' and '.join(self.running_steps)})")

    def _done(self, name: str, seconds: float, detail: str = "") -> None:
        self.running_steps.remove(name)
        self.report.done(name, seconds, detail)

    async def go(self) -> ClusterRecord:
        t0 = time.perf_counter()
        try:
            hosts = await self._connect()
            probes, material = await self._preflight(hosts)
            address, dashboard = await self._start(probes, material)
            self._save("running", scheduler=address, dashboard=dashboard, started=time.time(),
                       settings=plan.settings(self.inv),
                       launch_seconds=round(time.perf_counter() - t0, 3),
                       tls=material["client"] if material else None,
                       ca_key=self.ca.key if self.ca else None,
                       shipped={p.name: p.fingerprint for p in self.shipped})
            stopped.forget(self.inv.name)
            return state.read(self.inv.name)
        except BaseException:
            # Roll back on every host: errors, Ctrl-C, SIGTERM and SIGHUP alike.
            if not self.records or await _rollback(self.conns, self.records, self.report,
                                                   self.inv.step_timeout):
                state.remove(self.inv.name)
            else:
                self.report.warn(f"state kept: pyku-launch stop --name {self.inv.name} retries the cleanup")
            raise
        finally:
            await close_all(self.conns)

    def _leave_out(self, spec: HostSpec, why: str) -> None:
        self.missing[spec.label] = why
        self.report.host(spec.label, f"left out: {why}")

    def _check_enough(self, hosts: list) -> None:
        if len(hosts) < self.min_hosts:
            hint = "" if self.partial else " (pass --allow-partial to go on without " + (
                "it)" if len(self.missing) == 1 else "them)")
            addresses = {s.label: s.address for s in self.inv.hosts}
            raise LaunchError(by_cause({addresses.get(k, k): w for k, w in self.missing.items()}) + hint)

    async def _connect(self) -> list[HostSpec]:
        inv, t = self.inv, time.perf_counter()
        self._step("connect", f"{1 + len(inv.hosts)} hosts")
        self.conns, failed = await open_connections([inv.scheduler, *inv.hosts], self.on_step)
        if connection_key(inv.scheduler) in failed:  # name every host that failed, not just this one
            raise LaunchError(by_cause({s.address: failed[connection_key(s)].message
                                        for s in (inv.scheduler, *inv.hosts) if connection_key(s) in failed}))
        for spec in inv.hosts:
            if connection_key(spec) in failed:
                self._leave_out(spec, failed[connection_key(spec)].message)
        hosts = [s for s in inv.hosts if connection_key(s) not in failed]
        self._check_enough(hosts)
        self._done("connect", time.perf_counter() - t)
        return hosts

    async def _preflight(self, hosts: list[HostSpec]):
        inv, t = self.inv, time.perf_counter()
        self._step("preflight", "versions, pyku source, memory, ports")
        targets = [(inv.scheduler, "scheduler", self.conn(inv.scheduler))]
        targets += [(s, "workers", self.conn(s)) for s in hosts]
        result = await preflight.run(inv, targets, allow_mismatch=self.allow_mismatch, drop_failed=self.partial)
        for spec, why in result.dropped:
            self._leave_out(spec, f"preflight: {why}")
        probes = result.probes
        self._check_enough(probes[1:])
        if result.table:
            self.report.warn("versions differ:\n" + result.table)
        for p in probes:
            for w in p.warnings:
                self.report.warn(f"{p.spec.address}: {w}")
        material = None
        if inv.protocol == "tls":
            self.ca = tls.make_ca(inv.name)
            material = tls.make_cluster_material(inv.name, ca=self.ca)
        self._done("preflight", time.perf_counter() - t)
        return probes, material

    async def _spawn(self, spec: HostSpec, role: str, payload: dict, timeout: float,
                     expected: int = 0, memory_limit: int | None = None) -> SpawnReply:
        """Start one process tree, recorded *before* it starts.

        The record's token lets a rollback find the processes even when the
        reply is lost (a timeout, a dropped connection); a cancellation
        (Ctrl-C, SIGTERM) still waits for the reply, so what the rollback
        stops is all that was started.
        """
        rec = HostRecord.new(spec, role, self.inv.name, expected, memory_limit, scope=state.scope())
        self.records.append(rec)
        if self.shipped:
            payload = dict(payload, archives=ship.archives(self.shipped))
        payload = dict(payload, fresh=True)  # the last logs of this name go (launcher/store/stopped.py)
        self._save("starting")
        task = asyncio.ensure_future(self.conn(spec).request(Spawn(rec.token, payload), timeout))
        try:
            reply = await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait([task])  # bounded by the step's own timeout
            if not task.cancelled() and task.exception() is None:
                rec.pid, rec.log = task.result().pid, task.result().log
            raise
        rec.pid, rec.log = reply.pid, reply.log
        if reply.local_directory and not spec.local_directory:  # as the host resolved $TMPDIR
            rec.remove, rec.prune = commands.cleanup_paths(self.inv.name, spec, role,
                                                                  reply.local_directory)
        if reply.failure:
            raise LaunchError(f"{role} {reply.failure}: {logtail.summary(reply.log_tail)}", host=spec.address)
        ship.verify(self.shipped, reply.shipped, spec.address)
        return reply

    def _save(self, phase: str, **extra) -> None:
        """Write the state as it is now: a launch killed outright (SIGKILL,
        OOM) leaves a record that ``stop`` and the next launch can clean up."""
        state.write(ClusterRecord(
            name=self.inv.name, phase=phase, launcher_pid=os.getpid(), inventory=self.inv.path,
            inventory_sha256=self.inv.sha256, protocol=self.inv.protocol, hosts=self.records,
            missing=self.missing, **extra))

    async def _start(self, probes, material) -> tuple[str, str | None]:
        """Start the scheduler and, at the same time, the workers.

        The scheduler's port is fixed before it starts (the inventory's, or a
        free one the probe found), so its address is known and the workers
        need not wait for it: their start (importing distributed, forking
        the nannies) overlaps the scheduler's, and they connect as soon as
        it listens. A failure of either stops the other at once (the task
        group cancels it; spawns in flight still finish and are recorded).
        """
        sprobe = probes[0]
        port = self.inv.port or sprobe.reply.get("free_port")
        if not port:
            raise LaunchError(f"no free port for the scheduler on {sprobe.listen}", host=sprobe.spec.address)
        predicted = f"{self.inv.protocol}://{commands.host_port(sprobe.listen, port)}"
        try:
            async with asyncio.TaskGroup() as group:
                sched = group.create_task(self._scheduler(sprobe, material, port))
                group.create_task(self._workers(probes[1:], predicted, material))
        except BaseExceptionGroup as group_error:
            raise _first_failure(group_error) from None
        address, dashboard = sched.result()
        if address != predicted:
            self.report.warn(f"the scheduler reports {address}, the workers were given {predicted}")
        return address, dashboard

    async def _scheduler(self, probe, material, port: int) -> tuple[str, str | None]:
        inv, t = self.inv, time.perf_counter()
        self._step("scheduler", inv.scheduler.address)
        files = tls.files_for(material["scheduler"]) | commands.revocation_files() if material else {}
        wait = min(self.timeout, inv.step_timeout)
        payload = commands.scheduler_payload(inv, probe.listen, files, timeout=wait, port=port)
        reply = await self._spawn(inv.scheduler, "scheduler", payload, wait + inv.step_timeout)
        self.scheduler_up.set()
        address = reply.wait_file["address"]
        port = reply.wait_file.get("services", {}).get("dashboard")
        where = commands.dashboard_host(inv, probe.listen)
        dashboard = f"http://{commands.host_port(where, port)}/status" if port else None
        self._done("scheduler", time.perf_counter() - t, address)
        return address, dashboard

    async def _workers(self, probes, address: str, material) -> None:
        """Spawn every host's workers, wait until they registered, drop the late hosts."""
        t = time.perf_counter()
        hosts = [p.spec for p in probes]
        self._step("workers", f"{sum(s.nworkers for s in hosts)} on {len(hosts)} "
                              f"host{'s' if len(hosts) != 1 else ''}")
        self.report.expect({s.label: s.nworkers for s in hosts})
        hosts = await self._spawn_workers(probes, address, material)
        arrived, exited = await self._await_workers(hosts, address, material)
        await self._drop_late(hosts, arrived, exited)
        self._done("workers", time.perf_counter() - t)

    async def _spawn_workers(self, probes, address: str, material) -> list[HostSpec]:
        """Start the workers of every host at once; the hosts whose start worked."""
        inv = self.inv
        files = tls.files_for(material["worker"]) | commands.revocation_files() if material else {}

        async def start(p) -> LaunchError | None:
            payload = commands.workers_payload(inv, p.spec, p.listen, address, p.memory_limit, files)
            try:
                await self._spawn(p.spec, "workers", payload, inv.step_timeout,
                                  expected=p.spec.nworkers, memory_limit=p.memory_limit)
            except LaunchError as e:
                return e
            return None

        # return_exceptions: on a cancellation gather must still wait for every
        # spawn, so that the rollback knows all of them.
        results = await asyncio.gather(*(start(p) for p in probes), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        for p, e in zip(probes, results):
            if e is not None:
                self._leave_out(p.spec, e.message)
        hosts = [p.spec for p in probes if p.spec.label not in self.missing]
        self._check_enough(hosts)
        self._save("starting")
        return hosts

    async def _await_workers(self, hosts: list[HostSpec], address: str, material):
        """Ask the scheduler until every host's workers registered, or their processes ended.

        Returns the workers registered per host label, and the labels whose
        processes were all gone before theirs registered.
        """
        sec = tls.security(material["client"]) if material else None
        expected = {s.label: s.nworkers for s in hosts}
        exited: set[str] = set()
        await self.scheduler_up.wait()
        # A scheduler this machine cannot reach directly is asked through its host (launcher/tunnel.py).
        async with tunnel.reachable(address, self.inv.scheduler) as reach:
            arrived = await readiness.wait_for_workers(
                reach, sec, expected, timeout=self.timeout,
                on_progress=lambda counts: self.report.workers(counts, expected),
                running=lambda labels: self._still_running(labels, exited))
        return arrived, exited

    async def _drop_late(self, hosts: list[HostSpec], arrived, exited: set[str]) -> None:
        """Name the hosts whose workers did not all register; go on without them if allowed."""
        inv = self.inv
        late = [s for s in hosts if arrived.get(s.label, 0) < s.nworkers]
        if not late:
            return
        logs = await _log_tails(self.conns, late, inv.name, inv.step_timeout)
        for s in late:
            when = "when its processes exited" if s.label in exited else f"within {self.timeout:g} s"
            self.missing[s.label] = (f"{arrived.get(s.label, 0)} of {s.nworkers} workers registered "
                                     f"{when}{logs.get(s.label, '')}")
        if len(hosts) - len(late) < self.min_hosts:
            raise LaunchError("workers did not arrive: " + by_cause(
                {s.address: self.missing[s.label] for s in late}))
        for s in late:  # going on without them: stop what they did start
            recs = [r for r in self.records if r.label == s.label and r.role == "workers"]
            await stop_trees(self.conn(s), recs, timeout=inv.step_timeout)
            for r in recs:
                self.records.remove(r)
            self.report.host(s.label, f"left out: {self.missing[s.label]}")

    async def _still_running(self, labels: set[str], exited: set[str]) -> set[str]:
        """Which of these hosts' worker trees still have a process (one status step each).

        A host that does not answer counts as running: only a tree known to
        be gone cuts the wait for it short. Gone ones are added to ``exited``.
        """
        recs = [r for r in self.records if r.role == "workers" and r.label in labels]
        answers = await asyncio.gather(*(_tree_alive(self.conn(r.spec), r, self.inv.step_timeout)
                                         for r in recs), return_exceptions=True)
        gone = {r.label for r, a in zip(recs, answers) if a is False}
        exited |= gone
        return labels - gone


def _first_failure(group_error: BaseExceptionGroup) -> BaseException:
    """The error to report from a task group: the first one that is not a cancellation."""
    errors = [e for e in group_error.exceptions if not isinstance(e, asyncio.CancelledError)]
    first = (errors or list(group_error.exceptions))[0]
    return _first_failure(first) if isinstance(first, BaseExceptionGroup) else first


async def _tree_alive(conn, rec: HostRecord, timeout: float) -> bool:
    """Whether a process of this tree (found by its token) still runs on its host."""
    reply = await conn.request(Status([rec.token]), timeout)
    return reply.alive[rec.token] > 0


async def _rollback(conns, records: list[HostRecord], report, step_timeout: float) -> bool:
    """Stop every recorded process tree; False (and say so) if any could not be stopped."""
    report.warn("launch failed: stopping what it started on every host")
    by_conn: dict[tuple, list[HostRecord]] = {}
    for rec in records:
        by_conn.setdefault(connection_key(rec.spec), []).append(rec)
    keys = [k for k in by_conn if k in conns]
    replies = await asyncio.gather(*(stop_trees(conns[k], by_conn[k], timeout=step_timeout) for k in keys),
                                   return_exceptions=True)
    ok = len(keys) == len(by_conn)
    for k, reply in zip(keys, replies):
        address = by_conn[k][0].address
        if isinstance(reply, BaseException):
            report.warn(f"{address}: could not stop what the launch started there: {reply}")
            ok = False
        elif reply.left:
            report.warn(f"{address}: processes {reply.left} survived SIGKILL")
            ok = False
    return ok


async def _log_tails(conns, specs, name, step_timeout: float) -> dict[str, str]:
    """The last log lines of each host's workers, by label (all hosts at once)."""
    async def one(s):
        r = await conns[connection_key(s)].request(Logs(commands.run_dir(name, s, "workers"), 60),
                                                   step_timeout)
        text = logtail.summary([ln for v in r.logs.values() for ln in v])
        return f" (log: {text})" if text else ""

    tails = await asyncio.gather(*(one(s) for s in specs), return_exceptions=True)
    return {s.label: t for s, t in zip(specs, tails) if isinstance(t, str)}


async def _existing(name: str, report: Reporter, on_step: StepHook | None) -> ClusterRecord | None:
    """The running cluster of this name, or None after cleaning up a dead one.

    A scheduler that does not answer is not taken for dead on that alone: a
    busy scheduler can be slow. Its process is looked for on its host; only
    if it is gone (or the record is of a launch that was killed half-way)
    is the old cluster stopped.
    """
    rec = state.read(name)  # CorruptState: refused, or a second cluster would start in the same directories
    if rec is None:
        return None
    if rec.running:
        if await _answers(rec):
            return rec
        if await _scheduler_process_alive(rec, on_step):
            raise LaunchError(f"cluster '{name}' is recorded and its scheduler process runs, but it does "
                              f"not answer at {rec.scheduler}: wait, or pyku-launch stop --name {name}")
        report.warn(f"cluster '{name}' was recorded but its scheduler is gone: cleaning up before launching")
    else:
        report.warn(f"cluster '{name}' was left half-launched (launcher pid {rec.launcher_pid}): "
                    f"cleaning up before launching")
    await stop_async(name, report=report, locked=True, on_step=on_step)
    return None


async def _answers(rec: ClusterRecord) -> bool:
    """Whether the recorded scheduler answers (through its host if not directly)."""
    try:
        async with tunnel.recorded_scheduler(rec) as address:
            return await readiness.scheduler_alive(address, rec.security())
    except LaunchError:
        return False


async def _scheduler_process_alive(rec: ClusterRecord, on_step: StepHook | None) -> bool:
    srec = rec.scheduler_host
    if srec is None:
        return False
    conns, failed = await open_connections([srec.spec], on_step)
    try:
        return not failed and await _tree_alive(conns[connection_key(srec.spec)], srec, 30)
    except LaunchError:
        return False
    finally:
        await close_all(conns)
