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
    timeout = inv.timeout if timeout is None else timeout
    existing = await _existing(inv.name, report)
    if existing is not None:
        return dict(existing, already_running=True)
    if inv.protocol == "tcp":
        report.warn("protocol = \"tcp\": anyone who can reach the scheduler's port can run code "
                    "on your workers; use \"tls\" (the default) on shared networks")

    min_hosts = len(inv.hosts) if not (allow_partial or inv.min_hosts) else (inv.min_hosts or 1)
    t0 = time.perf_counter()
    report.step("connect", f"{1 + len(inv.hosts)} hosts")
    conns, failed = await open_connections([inv.scheduler, *inv.hosts])
    records: list[dict] = []
    missing: dict[str, str] = {}
    try:
        if inv.scheduler.address in failed:
            raise LaunchError(failed[inv.scheduler.address])
        hosts = []
        for spec in inv.hosts:
            if spec.address in failed:
                missing[spec.address] = failed[spec.address]
                report.host(spec.address, f"left out: {failed[spec.address]}")
            else:
                hosts.append(spec)
        _check_enough(hosts, min_hosts, missing)
        report.done("connect", time.perf_counter() - t0)

        report.step("preflight", "versions, pyku source, memory, ports")
        t1 = time.perf_counter()
        targets = [(inv.scheduler, "scheduler", conns[connection_key(inv.scheduler)])]
        targets += [(s, "workers", conns[connection_key(s)]) for s in hosts]
        probes, _, table = await preflight.run(inv, targets, allow_mismatch=allow_mismatch)
        if table:
            report.warn("versions differ (--allow-mismatch):\n" + table)
        for p in probes:
            for w in p.warnings:
                report.warn(f"{p.spec.address}: {w}")
        report.done("preflight", time.perf_counter() - t1)

        report.step("scheduler", inv.scheduler.address)
        t2 = time.perf_counter()
        material = tls.make_cluster_material(inv.name) if inv.protocol == "tls" else None
        sched_probe = probes[0]
        files = tls.files_for(material["scheduler"]) if material else {}
        payload = commands.scheduler_payload(inv, sched_probe.listen, files, timeout=min(timeout, 60))
        sconn = conns[connection_key(inv.scheduler)]
        reply = await sconn.agent("spawn", timeout=min(timeout, 60) + 30, **payload)
        records.append(host_record(inv.scheduler, "scheduler", inv.name, reply, 0, None))
        if "error" in reply:
            tail = " | ".join(reply.get("log_tail", [])[-3:])
            raise LaunchError(f"{inv.scheduler.address}: scheduler {reply['error']}: {tail}")
        address = reply["wait_file"]["address"]
        dash_port = reply["wait_file"].get("services", {}).get("dashboard")
        dashboard = f"http://{sched_probe.listen}:{dash_port}/status" if dash_port else None
        report.done("scheduler", time.perf_counter() - t2, address)

        report.step("workers", f"{sum(s.nworkers for s in hosts)} on {len(hosts)} hosts")
        t3 = time.perf_counter()
        wfiles = tls.files_for(material["worker"]) if material else {}

        async def start(p: preflight.Probe):
            pl = commands.workers_payload(inv, p.spec, p.listen, address, p.memory_limit, wfiles)
            r = await conns[connection_key(p.spec)].agent("spawn", timeout=60, **pl)
            records.append(host_record(p.spec, "workers", inv.name, r, p.spec.nworkers, p.memory_limit))
            if "error" in r:
                raise LaunchError(f"{p.spec.address}: workers {r['error']}: {' | '.join(r.get('log_tail', [])[-3:])}")

        await asyncio.gather(*(start(p) for p in probes[1:]))
        sec = tls.security(**_client_tls(material)) if material else None
        expected = {s.label: s.nworkers for s in hosts}
        arrived = await readiness.wait_for_workers(
            address, sec, expected, timeout=timeout,
            on_progress=lambda counts: report.workers(counts, expected))
        late = [s for s in hosts if arrived.get(s.label, 0) < s.nworkers]
        for s in late:
            missing[s.address] = f"{arrived.get(s.label, 0)} of {s.nworkers} workers registered within {timeout:g} s"
        if late:
            logs = await _log_tails(conns, late, inv.name)
            if len(hosts) - len(late) < min_hosts:
                raise LaunchError("workers did not arrive: " + "; ".join(
                    f"{s.address}: {missing[s.address]}{logs.get(s.address, '')}" for s in late))
            for s in late:  # going on without them: stop what they did start
                rec = next(r for r in records if r["address"] == s.address and r["role"] == "workers")
                await stop_sessions(conns[connection_key(s)], [rec])
                records.remove(rec)
        report.done("workers", time.perf_counter() - t3)

        record = {
            "name": inv.name, "inventory": inv.path, "inventory_sha256": inv.sha256,
            "protocol": inv.protocol, "scheduler": address, "dashboard": dashboard,
            "started": time.time(), "launch_seconds": round(time.perf_counter() - t0, 3),
            "hosts": records, "missing": missing,
            "tls": _client_tls(material) if material else None,
        }
        state.write(inv.name, record)
        return record
    except BaseException:
        # Roll back on every host: errors, Ctrl-C and SIGTERM alike.
        if records:
            await asyncio.shield(_rollback(conns, records, report))
        raise
    finally:
        await close_all(conns)


def _client_tls(material) -> dict:
    c = material["client"]
    return {"ca": c.ca, "cert": c.cert, "key": c.key}


def _check_enough(hosts, min_hosts, missing):
    if len(hosts) < min_hosts:
        raise LaunchError("; ".join(missing.values())
                          + (" (pass --allow-partial to go on without it)" if len(missing) == 1 else
                             " (pass --allow-partial to go on without them)"))


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

