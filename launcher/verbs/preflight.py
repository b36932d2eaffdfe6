"""Refuse a cluster whose hosts do not match the client, before anything starts.

Dask only warns about mismatched versions once workers have joined; a
feature-branch pyku on the client and a release on the workers then fails
in the middle of a computation, or silently computes something else. Here
every host is probed (one round trip each, all at once) and compared with
the machine running pyku-launch, where ``connect()`` will run: versions of
the libraries that cross the wire, and a fingerprint of the installed pyku
and launcher source, so an edited checkout differs from a release of the
same version number.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from launcher.remote import agent
from launcher.verbs import shared_dirs
from launcher.ui import tables
from launcher.ui.tables import fmt_bytes
from launcher.errors import LaunchError, PreflightError
from launcher.config.inventory import HostSpec

DISTRIBUTIONS = (
    "dask", "distributed", "cloudpickle", "msgpack", "tornado", "toolz", "numpy",
    "pandas", "lz4", "xarray", "netCDF4", "pyproj", "pyku-launch",
)
FINGERPRINTED = ("pyku", "launcher")
GiB = 2**30


@dataclass
class Probe:
    """What one host reported, and what the launch will use there."""

    spec: HostSpec
    role: str                       # "scheduler", "workers" or "login" (a source's: launcher/sources/base.py)
    reply: dict
    memory_limit: int | None = None  # per worker, bytes (workers only)
    differences: dict[str, tuple] = field(default_factory=dict)  # key -> (host value, client value)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def listen(self) -> str:
        return self.reply["listen"]


@dataclass
class PreflightResult:
    """What a preflight found: the hosts that passed, and what the launch should know."""

    probes: list[Probe]        # the scheduler's first, then the worker hosts that passed
    reference: dict            # the client's own probe (versions, source fingerprints)
    table: str                 # the mismatch table, "" if every host matches
    dropped: list[tuple[HostSpec, str]]  # worker hosts left out (with drop_failed), and why


def payload(inv, spec: HostSpec, role: str) -> dict:
    # The scheduler's port (0: pick a free one now) and a fixed dashboard port.
    ports = [inv.port] + ([inv.dashboard_port] if inv.dashboard_port else []) if role == "scheduler" else []
    return {
        "distributions": list(DISTRIBUTIONS) + list(inv.check),
        "fingerprint": list(FINGERPRINTED),
        "ports": ports,
        "listen": spec.listen,
        "address": spec.address,
        "over_ssh": spec.transport == "ssh",
    }


def local_reference(inv) -> dict:
    """The client's own values, computed in-process by the same agent code."""
    return agent.op_probe({"distributions": list(DISTRIBUTIONS) + list(inv.check),
                           "fingerprint": list(FINGERPRINTED)})


def _flatten(reply: dict) -> dict[str, str | None]:
    flat = dict(reply["versions"])
    for pkg, fp in reply["fingerprints"].items():
        flat[f"{pkg} source"] = fp
    return flat


def shown(reply: dict, key: str) -> str | None:
    """A probe's value of ``key`` as the table shows it: a source names the
    distribution it comes from too (``pyku 1.1.1, source 3f2a…``), so DWD's
    pyku on one host and the bundled one on another are told apart at a glance."""
    value = _flatten(reply).get(key)
    pkg = key[:-len(" source")] if key.endswith(" source") else None
    provider = reply.get("providers", {}).get(pkg) if pkg else None
    return f"{provider}, source {value}" if value and provider else value


def auto_memory(spec: HostSpec, mem_total: int) -> int:
    """(MemTotal - reserve) / nworkers; reserve defaults to max(2 GiB, 5 %)."""
    reserve = spec.reserve if spec.reserve is not None else max(2 * GiB, mem_total // 20)
    return max((mem_total - reserve) // spec.nworkers, 0)


def assess(inv, probe: Probe, reference: dict) -> None:
    """Fill in a probe's differences, problems, warnings and memory limit."""
    ref, got = _flatten(reference), _flatten(probe.reply)
    shipped = {f"{name} source" for name in getattr(inv, "ship", ())}  # replaced by this machine's copy
    for key in ref:
        if key not in shipped and got.get(key) != ref[key]:
            probe.differences[key] = (got.get(key), ref[key])
    r, spec = probe.reply, probe.spec
    if probe.role == "scheduler":
        for port in r["busy_ports"]:
            key = "dashboard_port" if port == inv.dashboard_port else "port"
            probe.problems.append(f"port {port} is in use on {r['listen']} (set {key} = 0 under [cluster]"
                                  f" for any free port, or choose another {key})")
        return
    if probe.role != "workers":  # not where workers run (a batch pool's login host): its source checks the rest
        probe.memory_limit = spec.memory_limit
        return
    total = r["mem_total"]
    if spec.memory_limit is None:
        probe.memory_limit = auto_memory(spec, total)
        if probe.memory_limit < 256 * 2**20:
            probe.problems.append(
                f"memory_limit auto gives {fmt_bytes(probe.memory_limit)} per worker "
                f"({fmt_bytes(total)} RAM / {spec.nworkers} workers): lower nworkers")
    else:
        probe.memory_limit = spec.memory_limit
        want = spec.memory_limit * spec.nworkers
        if want > total:
            probe.problems.append(
                f"{spec.nworkers} workers x {fmt_bytes(spec.memory_limit)} = {fmt_bytes(want)} "
                f"exceeds the host's {fmt_bytes(total)} RAM (lower nworkers or memory_limit, or use \"auto\")")
    if spec.nworkers * spec.nthreads > r["cpus"]:
        probe.warnings.append(
            f"{spec.nworkers} workers x {spec.nthreads} threads > {r['cpus']} CPUs (oversubscribed)")


def mismatch_table(probes: list[Probe], reference: dict) -> str:
    """Host x differing key, each cell the host's value; the client's in the header."""
    keys = sorted({k for p in probes for k in p.differences})
    if not keys:
        return ""
    header = ["host"] + [f"{k} (client {shown(reference, k) or '-'})" for k in keys]
    rows = [header]
    for p in probes:
        rows.append([f"{p.spec.address} ({p.role})"] + [
            (str(shown(p.reply, k) or "missing") if k in p.differences else "ok") for k in keys])
    return "\n".join(tables.aligned(rows))


async def run(inv, targets: list[tuple[HostSpec, str, object]], *, allow_mismatch: bool = False,
              drop_failed: bool = False, on_passed=None) -> PreflightResult:
    """Probe every (spec, role, connection) at once; raise PreflightError on a refusal.

    A version or source difference is a refusal unless ``allow_mismatch``; a
    broken environment, a busy port or an impossible memory limit is always
    one. With ``drop_failed`` a worker host that would be refused is left out
    instead (``--allow-partial``); the scheduler host never is.

    ``on_passed(probe)`` is called as soon as one host's probe passed, before
    the others are in (a launch starts its scheduler then).

    Returns a :class:`PreflightResult`.
    """
    reference = local_reference(inv)
    shared = shared_dirs.prepare(inv)  # this machine's token files

    async def one(spec, role, conn):
        request = payload(inv, spec, role)
        if shared:
            request["shared"] = shared.payload(spec, role)
        try:
            reply = await conn.agent("probe", timeout=spec.connect_timeout + 20, **request)
        except LaunchError as e:  # env failing, python not found: the host's environment is broken
            return Probe(spec, role, {}, problems=[e.message])
        probe = Probe(spec, role, reply)
        assess(inv, probe, reference)
        if shared:
            shared.assess(probe)
        if on_passed is not None and not probe.problems and (allow_mismatch or not probe.differences):
            on_passed(probe)
        return probe

    try:
        probes = list(await asyncio.gather(*(one(*t) for t in targets)))
    finally:
        shared_dirs.cleanup(shared)
    table = mismatch_table(probes, reference)
    refused = [p for p in probes if p.problems or (p.differences and not allow_mismatch)]
    dropped = []
    if drop_failed:
        left_out = [p for p in refused if p.role != "scheduler"]
        for p in left_out:
            dropped.append((p.spec, "; ".join(p.problems) or "versions differ: " + ", ".join(
                f"{k} {v[0] or 'missing'} (client {v[1] or '-'})" for k, v in p.differences.items())))
        probes = [p for p in probes if p not in left_out]
        refused = [p for p in refused if p not in left_out]
    if refused:
        raise PreflightError(_refusal(refused, table, allow_mismatch))
    return PreflightResult(probes, reference, table, dropped)


def targets(ctx, specs: list[HostSpec], sources: dict) -> list[tuple]:
    """(spec, role, connection) per member host, probed as its source asks (``sources``: label -> source)."""
    return [(s, sources[s.label].probe_role, ctx.conn(s)) for s in specs]


async def source_checks(ctx, result: PreflightResult, sources: dict, *, drop_failed: bool = False) -> None:
    """Each worker source's own checks of its probed members (label -> source in ``sources``).

    A refused member is moved to ``result.dropped`` with ``drop_failed``,
    else the refusal is raised as a PreflightError naming every one.
    """
    groups: dict[int, tuple] = {}
    for p in result.probes:
        if p.role != "scheduler":
            source = sources[p.spec.label]
            groups.setdefault(id(source), (source, []))[1].append(p)
    refused: dict[str, str] = {}
    for source, probes in groups.values():
        refused |= await source.preflight(ctx, probes)
    if not refused:
        return
    mine = [p for p in result.probes if p.role != "scheduler" and p.spec.label in refused]
    if not drop_failed:
        raise PreflightError("refused: " + "; ".join(f"{p.spec.address}: {refused[p.spec.label]}" for p in mine))
    result.dropped += [(p.spec, refused[p.spec.label]) for p in mine]
    result.probes = [p for p in result.probes if p not in mine]


def _refusal(refused: list[Probe], table: str, allow_mismatch: bool) -> str:
    problems = [f"{p.spec.address}: {msg}" for p in refused for msg in p.problems]
    differ = sorted({p.spec.address for p in refused if p.differences}) if not allow_mismatch else []
    lines = []
    if problems:
        lines.append("refused: " + "; ".join(problems))
    if differ:
        lines.append(f"refused: {', '.join(differ)} differ from this machine (install the same versions "
                     f"there, or pass --allow-mismatch):\n{table}")
    return "\n".join(lines)
