"""``pyku-launch HOSTS.toml``: preflight, scheduler, workers, wait, record.

The steps of DESIGN.md, each on every host at once over one connection per
host. Anything a failed or interrupted launch started is stopped again on
every host before the error is raised, so a refused launch leaves nothing
running and no state behind.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import asdict

from . import commands, preflight, readiness, state, tls
from .errors import LaunchError
from .inventory import HostSpec, Inventory
from .progress import Reporter
from .teardown import stop_sessions
from .transport import close_all, connection_key, open_connections


def _preimport_distributed() -> None:
    """Import distributed in a thread while SSH steps run: it costs ~1 s of CPU."""
    def work():
        try:
            import distributed  # noqa: F401
        except Exception:
            pass
    threading.Thread(target=work, daemon=True).start()


def dry_run(inv: Inventory) -> list[str]:
    """Every remote step of a launch, per host, touching nothing."""
    lines = []
    sched = inv.scheduler
    listen = sched.listen or f"<address {sched.address} is reached on>"
    lines.append(commands.describe(sched, "probe"))
    lines.append(commands.describe(sched, "spawn", commands.scheduler_payload(inv, listen, {}, inv.timeout)))
    for spec in inv.hosts:
        listen = spec.listen or f"<address {spec.address} is reached on>"
        mem = spec.memory_limit or "<auto: (MemTotal - reserve) / nworkers>"
        lines.append(commands.describe(spec, "probe"))
        lines.append(commands.describe(spec, "spawn", commands.workers_payload(
            inv, spec, listen, f"{inv.protocol}://<scheduler address>", mem, {})))
    return lines


def host_record(spec: HostSpec, role: str, name: str, started: dict | None, expected: int,
                memory_limit: int | None) -> dict:
    remove, prune = commands.cleanup_paths(name, spec, role)
    return {"address": spec.address, "label": spec.label, "role": role, "spec": asdict(spec),
            "pid": started and started["pid"], "start": started and started["start"],
            "log": started and started["log"], "rundir": commands.run_dir(name, spec, role),
            "remove": remove, "prune": prune, "expected": expected, "memory_limit": memory_limit}


async def launch_async(inv: Inventory, *, report: Reporter, allow_mismatch: bool = False,
                       allow_partial: bool = False, timeout: float | None = None) -> dict:
    """Launch the inventory's cluster and return its state record.

    If a cluster of that name is already running, returns its record with
    ``already_running`` set and changes nothing.
    """
    _preimport_distributed()
    existing = await _existing(inv.name, report)
    if existing is not None:
        return dict(existing, already_running=True)
    if inv.protocol == "tcp":
        report.warn("protocol = \"tcp\": anyone who can reach the scheduler's port can run code "
                    "on your workers; use \"tls\" (the default) on shared networks")
    run = _Launch(inv, report, allow_mismatch=allow_mismatch, allow_partial=allow_partial,
                  timeout=inv.timeout if timeout is None else timeout)
    return await run.go()


class _Launch:
    """One launch: the open connections and what it started, for a rollback."""

    def __init__(self, inv: Inventory, report: Reporter, *, allow_mismatch: bool, allow_partial: bool,
                 timeout: float):
        self.inv, self.report, self.timeout = inv, report, timeout
        self.allow_mismatch = allow_mismatch
        partial = allow_partial or inv.min_hosts is not None
        self.min_hosts = (inv.min_hosts or 1) if partial else len(inv.hosts)
        self.partial = partial
        self.conns: dict = {}
        self.records: list[dict] = []      # every process session started so far
        self.missing: dict[str, str] = {}  # hosts left out, and why

    def conn(self, spec: HostSpec):
        return self.conns[connection_key(spec)]

    async def go(self) -> dict:
        t0 = time.perf_counter()
        try:
            hosts = await self._connect()
            probes, material = await self._preflight(hosts)
            address, dashboard = await self._scheduler(probes[0], material)
            await self._workers(probes[1:], address, material)
            record = {
                "name": self.inv.name, "inventory": self.inv.path, "inventory_sha256": self.inv.sha256,
                "protocol": self.inv.protocol, "scheduler": address, "dashboard": dashboard,
                "started": time.time(), "launch_seconds": round(time.perf_counter() - t0, 3),
                "hosts": self.records, "missing": self.missing,
                "tls": _client_tls(material) if material else None,
            }
            state.write(self.inv.name, record)
            return record
        except BaseException:
            # Roll back on every host: errors, Ctrl-C and SIGTERM alike.
            if self.records:
                await asyncio.shield(_rollback(self.conns, self.records, self.report))
            raise
        finally:
            await close_all(self.conns)

    def _leave_out(self, address: str, why: str) -> None:
        self.missing[address] = why
        self.report.host(address, f"left out: {why}")

    def _check_enough(self, hosts: list) -> None:
        if len(hosts) < self.min_hosts:
            hint = "" if self.partial else " (pass --allow-partial to go on without " + (
                "it)" if len(self.missing) == 1 else "them)")
            raise LaunchError("; ".join(f"{a}: {w}" if not w.startswith(a) else w
                                        for a, w in self.missing.items()) + hint)

    async def _connect(self) -> list[HostSpec]:
        inv, t = self.inv, time.perf_counter()
        self.report.step("connect", f"{1 + len(inv.hosts)} hosts")
        self.conns, failed = await open_connections([inv.scheduler, *inv.hosts])
        if inv.scheduler.address in failed:
            raise LaunchError(failed[inv.scheduler.address])
        for spec in inv.hosts:
            if spec.address in failed:
                self._leave_out(spec.address, failed[spec.address])
        hosts = [s for s in inv.hosts if s.address not in failed]
        self._check_enough(hosts)
        self.report.done("connect", time.perf_counter() - t)
        return hosts

    async def _preflight(self, hosts: list[HostSpec]):
        inv, t = self.inv, time.perf_counter()
        self.report.step("preflight", "versions, pyku source, memory, ports")
        targets = [(inv.scheduler, "scheduler", self.conn(inv.scheduler))]
        targets += [(s, "workers", self.conn(s)) for s in hosts]
        probes, _, table, dropped = await preflight.run(
            inv, targets, allow_mismatch=self.allow_mismatch, drop_failed=self.partial)
        for address, why in dropped.items():
            self._leave_out(address, f"preflight: {why}")
        self._check_enough(probes[1:])
        if table:
            self.report.warn("versions differ:\n" + table)
        for p in probes:
            for w in p.warnings:
                self.report.warn(f"{p.spec.address}: {w}")
        material = tls.make_cluster_material(inv.name) if inv.protocol == "tls" else None
        self.report.done("preflight", time.perf_counter() - t)
        return probes, material

    async def _spawn(self, spec: HostSpec, role: str, payload: dict, timeout: float, probe=None) -> dict:
        """Start a process session and record it, even if we are cancelled meanwhile.

        A cancellation (Ctrl-C, SIGTERM) waits for the spawn's reply so the
        rollback knows the new session's pid and can stop it.
        """
        task = asyncio.ensure_future(self.conn(spec).agent("spawn", timeout=timeout, **payload))
        try:
            reply = await asyncio.shield(task)
        except asyncio.CancelledError:
            try:
                reply = await task
            finally:
                if task.done() and not task.cancelled() and task.exception() is None:
                    self._record(spec, role, task.result(), probe)
            raise
        self._record(spec, role, reply, probe)
        if "error" in reply:
            tail = " | ".join(reply.get("log_tail", [])[-3:])
            raise LaunchError(f"{spec.address}: {role} {reply['error']}: {tail}")
        return reply

    def _record(self, spec, role, reply, probe) -> None:
        if reply.get("pid"):
            self.records.append(host_record(
                spec, role, self.inv.name, reply, spec.nworkers if role == "workers" else 0,
                probe.memory_limit if probe is not None and role == "workers" else None))

    async def _scheduler(self, probe, material) -> tuple[str, str | None]:
        inv, t = self.inv, time.perf_counter()
        self.report.step("scheduler", inv.scheduler.address)
        files = tls.files_for(material["scheduler"]) if material else {}
        wait = min(self.timeout, 60)
        payload = commands.scheduler_payload(inv, probe.listen, files, timeout=wait)
        reply = await self._spawn(inv.scheduler, "scheduler", payload, wait + 30)
        address = reply["wait_file"]["address"]
        port = reply["wait_file"].get("services", {}).get("dashboard")
        dashboard = f"http://{probe.listen}:{port}/status" if port else None
        self.report.done("scheduler", time.perf_counter() - t, address)
        return address, dashboard

    async def _workers(self, probes, address: str, material) -> None:
        inv, t = self.inv, time.perf_counter()
        hosts = [p.spec for p in probes]
        self.report.step("workers", f"{sum(s.nworkers for s in hosts)} on {len(hosts)} hosts")
        files = tls.files_for(material["worker"]) if material else {}

        async def start(p):
            payload = commands.workers_payload(inv, p.spec, p.listen, address, p.memory_limit, files)
            try:
                await self._spawn(p.spec, "workers", payload, 60, probe=p)
            except LaunchError as e:
                return p.spec, e
            return p.spec, None

        # return_exceptions: on a cancellation gather must still wait for every
        # spawn, so that the rollback knows all the sessions they started.
        results = await asyncio.gather(*(start(p) for p in probes), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        failures = [(s, e) for s, e in results if e]
        for spec, e in failures:
            self._leave_out(spec.address, str(e).removeprefix(f"{spec.address}: "))
        hosts = [s for s in hosts if s.address not in self.missing]
        self._check_enough(hosts)

        sec = tls.security(**_client_tls(material)) if material else None
        expected = {s.label: s.nworkers for s in hosts}
        arrived = await readiness.wait_for_workers(
            address, sec, expected, timeout=self.timeout,
            on_progress=lambda counts: self.report.workers(counts, expected))
        late = [s for s in hosts if arrived.get(s.label, 0) < s.nworkers]
        if late:
            logs = await _log_tails(self.conns, late, inv.name)
            for s in late:
                self.missing[s.address] = (f"{arrived.get(s.label, 0)} of {s.nworkers} workers registered "
                                           f"within {self.timeout:g} s{logs.get(s.address, '')}")
            if len(hosts) - len(late) < self.min_hosts:
                raise LaunchError("workers did not arrive: " + "; ".join(
                    f"{s.address}: {self.missing[s.address]}" for s in late))
            for s in late:  # going on without them: stop what they did start
                recs = [r for r in self.records if r["address"] == s.address and r["role"] == "workers"]
                await stop_sessions(self.conn(s), recs)
                for r in recs:
                    self.records.remove(r)
                self.report.host(s.address, f"left out: {self.missing[s.address]}")
        self.report.done("workers", time.perf_counter() - t)


def _client_tls(material) -> dict:
    c = material["client"]
    return {"ca": c.ca, "cert": c.cert, "key": c.key}


async def _rollback(conns, records, report) -> None:
    report.warn("launch failed: stopping what it started on every host")
    by_conn: dict[tuple, list[dict]] = {}
    for rec in records:
        spec = HostSpec(**rec["spec"])
        by_conn.setdefault(connection_key(spec), []).append(rec)
    await asyncio.gather(*(stop_sessions(conns[k], recs) for k, recs in by_conn.items() if k in conns),
                         return_exceptions=True)


async def _log_tails(conns, specs, name) -> dict[str, str]:
    out = {}
    for s in specs:
        try:
            r = await conns[connection_key(s)].agent("logs", timeout=15, rundir=commands.run_dir(name, s, "workers"), n=3)
            lines = [ln for v in r["logs"].values() for ln in v]
            if lines:
                out[s.address] = " (log: " + " | ".join(lines[-3:]) + ")"
        except LaunchError:
            pass
    return out


async def _existing(name: str, report: Reporter) -> dict | None:
    """The running cluster of this name, or None after cleaning up a dead one."""
    try:
        rec = state.read(name)
    except state.CorruptState as e:
        report.warn(f"{e}: removing it (any processes it described die by their death timeout)")
        state.remove(name)
        return None
    if rec is None:
        return None
    sec = tls.security(**rec["tls"]) if rec.get("tls") else None
    if await readiness.scheduler_alive(rec["scheduler"], sec):
        return rec
    report.warn(f"cluster '{name}' was recorded but its scheduler is gone: cleaning up before launching")
    from .teardown import stop_async
    await stop_async(name, report=report, locked=True)
    return None

