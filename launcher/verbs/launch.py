"""``pyku-launch launch HOSTS.toml``: preflight, scheduler, workers, wait, record.

The steps of a launch (docs/architecture.md), each on every host at once
over one connection per host. Anything a failed or interrupted launch started is stopped again on
every host before the error is raised, so a refused launch leaves nothing
running and no state behind.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time

from launcher.verbs import plan, preflight
from launcher.remote import readiness, commands
from launcher.verbs import ship
from launcher.store import state, stopped
from launcher.security import tls
from launcher.reach import tunnel
from launcher.errors import LaunchError, by_cause
from launcher.config.inventory import HostSpec, Inventory
from launcher.sources import registry, ssh
from launcher.sources.base import Context, Join
from launcher.ui.progress import Reporter
from launcher.remote.protocol import SpawnReply
from launcher.store.records import ClusterRecord, HostRecord
from launcher.verbs.existing import recorded_cluster
from launcher.verbs.stop import stop_role
from launcher.remote.transport import StepHook, connection_key


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
    inventory instead (:mod:`launcher.verbs.reconcile`); unchanged, its record
    comes back with ``already_running`` set. ``on_step`` sees every agent
    step (:data:`launcher.remote.transport.StepHook`).
    """
    _preimport_distributed()
    existing = await recorded_cluster(inv.name, report, on_step)
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
    """One launch: the open connections and what it started, for a rollback.

    The scheduler is started here, on its SSH host; the workers by their
    sources (:mod:`launcher.sources`), one per inventory section.
    """

    def __init__(self, inv: Inventory, report: Reporter, *, allow_mismatch: bool, allow_partial: bool,
                 timeout: float, on_step: StepHook | None = None):
        self.inv, self.report, self.timeout, self.on_step = inv, report, timeout, on_step
        self.allow_mismatch = allow_mismatch
        partial = allow_partial or inv.min_hosts is not None
        self.sources = registry.from_inventory(inv)
        self.source_of = registry.member_sources(self.sources)
        self.members = [m for s in self.sources for m in s.members()]  # every source's, one label each
        self.min_hosts = (inv.min_hosts or 1) if partial else len(self.members)
        self.partial = partial
        self.ctx = Context(inv.name, inv.step_timeout, on_step)
        self.records: list[HostRecord] = []  # every process tree started (or being started)
        self._flushed: asyncio.Future | None = None  # the write of the records recorded in this turn
        self.missing: dict[str, str] = {}  # hosts left out (by label), and why
        self.running_steps: list[str] = []
        self.ca: tls.CA | None = None  # its key signs shares later (launcher/security/share.py)
        self.scheduler_up = asyncio.Event()  # its spawn replied: it listens
        self.shipped = ship.pack(inv.ship)  # read from disk, never imported here
        self.ship = {"archives": ship.archives(self.shipped) if self.shipped else {},
                     "verify": functools.partial(ship.verify, self.shipped)}

    def conn(self, spec: HostSpec):
        return self.ctx.conn(spec)

    def _record(self, rec: HostRecord) -> asyncio.Future:
        """A tree about to start: recorded first, so a rollback or ``stop`` finds it whatever happens.

        The trees every host's start records in one turn of the event loop
        go to disk in one write (the returned future: the start awaits it,
        :func:`launcher.sources.base.recorded`): a write per tree, each of
        the whole record, made a launch's own CPU grow with the square of
        its hosts.
        """
        self.records.append(rec)
        if self._flushed is None:
            self._flushed = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._flush)
        return self._flushed

    def _flush(self) -> None:
        done, self._flushed = self._flushed, None
        try:
            self._save("starting")
        except BaseException as e:  # noqa: BLE001 - handed to every start waiting for it
            done.set_exception(e)
        else:
            done.set_result(None)

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
            material = self._material()
            passed = asyncio.get_running_loop().create_future()
            early = asyncio.ensure_future(self._early_scheduler(passed, material))
            try:
                probes = await self._preflight(hosts, passed)
            except BaseException:  # refused: a scheduler started meanwhile is stopped by the rollback
                early.cancel()
                await asyncio.gather(early, return_exceptions=True)
                raise
            address, dashboard = await self._start(probes, material, early)
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
            if not self.records or await _rollback(self.ctx, self.records, self.report):
                state.remove(self.inv.name)
            else:
                self.report.warn(f"state kept: pyku-launch stop --name {self.inv.name} retries the cleanup")
            raise
        finally:
            await self.ctx.close()

    def _leave_out(self, spec: HostSpec, why: str) -> None:
        self.missing[spec.label] = why
        self.report.host(spec.label, f"left out: {why}")

    def _check_enough(self, hosts: list) -> None:
        if len(hosts) < self.min_hosts:
            hint = "" if self.partial else " (pass --allow-partial to go on without " + (
                "it)" if len(self.missing) == 1 else "them)")
            addresses = {s.label: s.address for s in self.members}
            raise LaunchError(by_cause({addresses.get(k, k): w for k, w in self.missing.items()}) + hint)

    async def _connect(self) -> list[HostSpec]:
        inv, t = self.inv, time.perf_counter()
        self._step("connect", f"{1 + len(self.members)} hosts")
        failed = await self.ctx.open([inv.scheduler, *self.members])
        if connection_key(inv.scheduler) in failed:  # name every host that failed, not just this one
            raise LaunchError(by_cause({s.address: failed[connection_key(s)].message
                                        for s in (inv.scheduler, *self.members) if connection_key(s) in failed}))
        for spec in self.members:
            if connection_key(spec) in failed:
                self._leave_out(spec, failed[connection_key(spec)].message)
        hosts = [s for s in self.members if connection_key(s) not in failed]
        self._check_enough(hosts)
        self._done("connect", time.perf_counter() - t)
        return hosts

    def _material(self):
        """The cluster's TLS certificates (None over tcp): made before the probes, so the scheduler need not wait."""
        if self.inv.protocol != "tls":
            return None
        self.ca = tls.make_ca(self.inv.name)
        return tls.make_cluster_material(self.inv.name, ca=self.ca)

    async def _preflight(self, hosts: list[HostSpec], passed: asyncio.Future):
        """Probe every host; ``passed`` gets the scheduler's probe as soon as that one passed."""
        inv, t = self.inv, time.perf_counter()
        self._step("preflight", "versions, pyku source, memory, ports")
        targets = [(inv.scheduler, "scheduler", self.conn(inv.scheduler))]
        targets += preflight.targets(self.ctx, hosts, self.source_of)

        def on_passed(probe) -> None:
            if probe.role == "scheduler" and not passed.done():
                passed.set_result(probe)

        result = await preflight.run(inv, targets, allow_mismatch=self.allow_mismatch, drop_failed=self.partial,
                                     on_passed=on_passed)
        await preflight.source_checks(self.ctx, result, self.source_of, drop_failed=self.partial)
        for spec, why in result.dropped:
            self._leave_out(spec, f"preflight: {why}")
        probes = result.probes
        self._check_enough(probes[1:])
        if result.table:
            self.report.warn("versions differ:\n" + result.table)
        for p in probes:
            for w in p.warnings:
                self.report.warn(f"{p.spec.address}: {w}")
        self._done("preflight", time.perf_counter() - t)
        return probes

    async def _spawn_scheduler(self, payload: dict, timeout: float) -> SpawnReply:
        """Start the scheduler's tree on its host, recorded *before* it starts (:func:`launcher.sources.ssh.spawn`)."""
        rec = HostRecord.new(self.inv.scheduler, "scheduler", self.inv.name, scope=state.scope())
        rec.extra["relay"] = True  # its preload relays a stop to the nannies (launcher/remote/relay.py)
        await self._record(rec)
        return await ssh.spawn(self.ctx, rec, payload, timeout, **self.ship)

    def _save(self, phase: str, **extra) -> None:
        """Write the state as it is now: a launch killed outright (SIGKILL,
        OOM) leaves a record that ``stop`` and the next launch can clean up."""
        state.write(ClusterRecord(
            name=self.inv.name, phase=phase, launcher_pid=os.getpid(), inventory=self.inv.path,
            inventory_sha256=self.inv.sha256, protocol=self.inv.protocol, hosts=self.records,
            missing=self.missing, **extra))

    async def _early_scheduler(self, passed: asyncio.Future, material) -> tuple[str, str | None]:
        """Start the scheduler as soon as its host's probe passed, while the workers' hosts are still probed.

        Its port is fixed before it starts (the inventory's, or a free one
        its probe found), so its address is known to the workers whenever
        they start. Nothing of a worker starts before the whole preflight
        passed; a refusal cancels this (a spawn in flight still finishes and
        is recorded) and the rollback stops what it started.
        """
        sprobe = await passed
        return await self._scheduler(sprobe, material, self._port(sprobe))

    def _port(self, sprobe) -> int:
        port = self.inv.port or sprobe.reply.get("free_port")
        if not port:
            raise LaunchError(f"no free port for the scheduler on {sprobe.listen}", host=sprobe.spec.address)
        return port

    async def _start(self, probes, material, early: asyncio.Task) -> tuple[str, str | None]:
        """Start the workers while the scheduler (started by ``early``) is still starting.

        Their start (importing distributed, forking the nannies) overlaps the
        scheduler's, and they connect as soon as it listens. A failure of
        either stops the other at once (the task group cancels it; spawns in
        flight still finish and are recorded).
        """
        sprobe = probes[0]
        predicted = f"{self.inv.protocol}://{commands.host_port(sprobe.listen, self._port(sprobe))}"

        async def scheduler():  # cancelled with the group: the cancellation reaches ``early``
            return await early

        try:
            async with asyncio.TaskGroup() as group:
                sched = group.create_task(scheduler())
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
        reply = await self._spawn_scheduler(payload, wait + inv.step_timeout)
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
        await self._report_pending(hosts, arrived)
        self._done("workers", time.perf_counter() - t)

    async def _spawn_workers(self, probes, address: str, material) -> list[HostSpec]:
        """Start the workers of every member at once, each by its source; the members whose start worked."""
        files = tls.files_for(material["worker"]) | commands.revocation_files() if material else {}
        join = Join(address, files, **self.ship)

        async def start(p) -> LaunchError | None:
            try:
                await self.source_of[p.spec.label].start(self.ctx, p, join, self._record)
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
        # Only sources that wait are waited for; the others' workers join when they do.
        expected = {s.label: s.nworkers for s in hosts if self.source_of[s.label].wait}
        exited: set[str] = set()
        await self.scheduler_up.wait()
        # A scheduler this machine cannot reach directly is asked through its host (launcher/reach/tunnel.py).
        async with tunnel.reachable(address, self.inv.scheduler) as reach:
            arrived = await readiness.wait_for_workers(
                reach, sec, expected, timeout=self.timeout,
                on_progress=lambda counts: self.report.workers(counts, expected),
                running=lambda labels: self._still_running(labels, exited))
        return arrived, exited

    async def _drop_late(self, hosts: list[HostSpec], arrived, exited: set[str]) -> None:
        """Name the hosts whose workers did not all register; go on without them if allowed."""
        late = [s for s in hosts if self.source_of[s.label].wait and arrived.get(s.label, 0) < s.nworkers]
        if not late:
            return
        labels = {s.label for s in late}
        trees = [r for r in self.records if r.role == "workers" and r.label in labels]
        logs: dict[str, str] = {}
        for source, group in registry.by_source(trees, self.inv):
            logs |= await source.why_late(self.ctx, group)
        for s in late:
            when = "when its processes exited" if s.label in exited else f"within {self.timeout:g} s"
            log = f" (log: {logs[s.label]})" if s.label in logs else ""
            self.missing[s.label] = f"{arrived.get(s.label, 0)} of {s.nworkers} workers registered {when}{log}"
        if len(hosts) - len(late) < self.min_hosts:
            raise LaunchError("workers did not arrive: " + by_cause(
                {s.address: self.missing[s.label] for s in late}))
        # Going on without them: stop what they did start (a tree not proven gone stays recorded).
        done = await stop_role(self.ctx, trees, remaining=self.records)
        for r in done.gone:
            self.records.remove(r)
        for address, why in (done.unreachable | {a: f"processes {p} survived" for a, p in done.left.items()}).items():
            self.report.warn(f"{address}: could not stop its late workers ({why}): they stay recorded")
        for s in late:
            self.report.host(s.label, f"left out: {self.missing[s.label]}")

    async def _report_pending(self, hosts: list[HostSpec], arrived) -> None:
        """Name what the members of sources that do not wait are still waiting for (a batch queue)."""
        labels = {s.label for s in hosts if not self.source_of[s.label].wait and arrived.get(s.label, 0) < s.nworkers}
        trees = [r for r in self.records if r.role == "workers" and r.label in labels]
        for source, group in registry.by_source(trees, self.inv):
            for r, row in zip(group, await source.describe(self.ctx, group, arrived)):
                if row.get("detail"):
                    self.report.host(r.label, row["detail"])

    async def _still_running(self, labels: set[str], exited: set[str]) -> set[str]:
        """Which of these hosts' worker trees still have a process (one status step each).

        A host that does not answer counts as running: only a tree known to
        be gone cuts the wait for it short. Gone ones are added to ``exited``.
        """
        recs = [r for r in self.records if r.role == "workers" and r.label in labels]
        answers: dict[str, bool | None] = {}
        for source, group in registry.by_source(recs, self.inv):
            answers |= await source.alive(self.ctx, group)
        gone = {r.label for r in recs if answers.get(r.token) is False}
        exited |= gone
        return labels - gone


def _first_failure(group_error: BaseExceptionGroup) -> BaseException:
    """The error to report from a task group: the first one that is not a cancellation."""
    errors = [e for e in group_error.exceptions if not isinstance(e, asyncio.CancelledError)]
    first = (errors or list(group_error.exceptions))[0]
    return _first_failure(first) if isinstance(first, BaseExceptionGroup) else first


async def _rollback(ctx: Context, records: list[HostRecord], report) -> bool:
    """Stop every recorded tree, each by its source; False (and say so) if any could not be stopped."""
    report.warn("launch failed: stopping what it started on every host")
    done = await stop_role(ctx, records)
    for address, why in done.unreachable.items():
        report.warn(f"{address}: could not stop what the launch started there: {why}")
    for address, left in done.left.items():
        report.warn(f"{address}: processes {left} survived SIGKILL")
    return not done.unreachable and not done.left
