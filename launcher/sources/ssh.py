"""SSH hosts as a worker source: the ``[[host]]`` tables, one process tree per start, over the host's agent.

A member is a host; a tree is one ``spawn`` step (the agent starts
``dask worker --nworkers N`` under a subreaper, every process carrying the
tree's token), found again by that token for ``status`` and ``stop`` steps
(:mod:`launcher.remote.agent`). A host's workers are one tree at launch; a
worker started later on its own is a tree of one with its own run directory
beside the host's, and the host's spill directory goes only with its last
tree. The scheduler is an SSH tree too: :func:`spawn` and :func:`stop_trees`
serve it as well.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from typing import Callable

from launcher.config.inventory import HostSpec, Inventory
from launcher.errors import LaunchError
from launcher.remote import commands, logtail, quickstop
from launcher.remote.protocol import Logs, Spawn, SpawnReply, Status, Stop, StopReply
from launcher.remote.transport import Connection, connection_key
from launcher.sources.base import Context, Join, Stopped, recorded
from launcher.store import state
from launcher.store.records import HostRecord


async def spawn(ctx: Context, rec: HostRecord, payload: dict, timeout: float, *,
                archives: dict[str, str] | None = None,
                verify: Callable[[dict, str], None] | None = None) -> SpawnReply:
    """Start the recorded tree ``rec`` on its host (one ``spawn`` step); ``rec`` learns its pid, log, paths.

    ``rec`` must already be recorded: its token lets a stop find the
    processes even when the reply is lost (a timeout, a dropped
    connection). A cancellation (Ctrl-C, SIGTERM) still waits for the reply,
    so what a rollback stops is all that was started. Raises LaunchError
    naming the host when the start failed (with the log's last words).
    """
    spec = rec.spec
    payload = dict(payload, fresh=True)  # the last logs of this label go (launcher/store/stopped.py)
    if archives:
        payload = dict(payload, archives=archives)
    task = asyncio.ensure_future(ctx.conn(spec).request(Spawn(rec.token, payload), timeout))
    try:
        reply = await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])  # bounded by the step's own timeout
        if not task.cancelled() and task.exception() is None:
            _started(rec, task.result())
        raise
    _started(rec, reply)
    if reply.local_directory and not spec.local_directory:  # as the host resolved $TMPDIR
        remove, rec.prune = commands.cleanup_paths(ctx.name, spec, rec.role, reply.local_directory)
        rec.remove = [rec.rundir, *remove[1:]]  # cleanup_paths lists the run directory first
    if reply.failure:
        raise LaunchError(f"{rec.role} {reply.failure}: {logtail.summary(reply.log_tail)}", host=spec.address)
    if verify is not None:
        verify(reply.shipped, spec.address)
    return reply


def _started(rec: HostRecord, reply: SpawnReply) -> None:
    """What the record learns from a spawn's reply: the leader's pid, its log, the host's home."""
    rec.pid, rec.log = reply.pid, reply.log
    rec.home = commands.home_of(rec.rundir, reply.rundir)


def _stop_request(records: list[HostRecord], grace: float = 3.0, settle: float = 0.0,
                  keep_logs: bool = False) -> Stop:
    """The agent's ``stop`` for these trees of one host (``keep_logs``: their run directories keep the logs)."""
    kept = {r.rundir for r in records} if keep_logs else set()
    return Stop(tokens=[r.token for r in records], remove=[p for r in records for p in r.remove if p not in kept],
                prune=list(dict.fromkeys(p for r in records for p in r.prune)), grace=grace, settle=settle,
                empty=sorted(kept), keep=commands.KEPT_FILES if kept else [])


def _quick(conn: Connection, records: list[HostRecord], request: Stop) -> Stop | None:
    """``request`` for the sh script (:mod:`launcher.remote.quickstop`), None where the agent must do it."""
    homes = {r.home if isinstance(r.home, str) else None for r in records}  # an edited record: the agent
    return quickstop.resolved(request, homes.pop()) if len(homes) == 1 and not conn.has_agent else None


async def stop_trees(conn: Connection, records: list[HostRecord], timeout: float = 60.0, grace: float = 3.0,
                     settle: float = 0.0, keep_logs: bool = False,
                     relay: dict[str, tuple[Stop, list[str]]] | None = None) -> tuple[StopReply, dict[str, dict]]:
    """Stop the recorded process trees of one host; ``left`` lists survivors.

    Where the host's agent is not running yet (``pyku-launch stop``), first
    without it (:mod:`launcher.remote.quickstop`: one sh script, the same
    proof); the agent's ``stop`` only where the script leaves it (survivors
    of the grace: SIGKILL at once; a tokenless process; a host the script
    cannot work on). A rollback or a reconcile has its agents running: a
    step on them costs less than a new session.
    ``settle``: look again after that many seconds (a half-launched cluster:
    its dead launcher's agents may still be starting processes).
    ``keep_logs``: the run directories keep their logs (``pyku-launch stop``).
    ``relay``: this host runs the scheduler, and these other trees (token ->
    their ``stop``, paths absolute, and their workers' names) are to be stopped by their nannies, asked
    by the closing scheduler (launcher/remote/relay.py). Returns the reply and
    the relayed trees proven gone (token -> their nanny's reply).
    """
    request = _stop_request(records, grace, settle, keep_logs)
    signalled = 0
    quick = _quick(conn, records, request)
    scheduler = next((r for r in records if r.role == "scheduler"), None)
    plan = None
    if quick is not None and relay and scheduler is not None:
        rundir = quickstop.resolved(_stop_request([scheduler]), scheduler.home).remove[0]
        # The nannies' grace and answers fit in the scheduler's close, which fits in the script's grace.
        budget = RELAY_BUDGET + RELAY_PER_TREE * len(relay)  # the scheduler's TLS handshakes, one per nanny
        plan = quickstop.Relay({t: r for t, (r, _) in relay.items()}, rundir, budget=budget,
                               names={t: n for t, (_, n) in relay.items()})
        quick = dataclasses.replace(quick, grace=grace + budget)
    if quick is not None:
        try:
            async with asyncio.timeout(timeout + quick.grace):
                stdout = await conn.run(quickstop.command(quick, plan), "stop-sh",
                                        stdin=plan.request_json() if plan is not None else None)
            out = quickstop.parse(stdout)
        except TimeoutError:  # the agent would hang as well (a session that never ends): the host is not stopped
            raise LaunchError(f"step 'stop-sh' timed out after {timeout + quick.grace:g} s", host=conn.name) from None
        except LaunchError:
            out, stdout = None, ""  # no session for it (a restricted account?): the agent says what is wrong
        relayed = quickstop.parse_relay(stdout, plan) if plan is not None else {}
        if out is not None and out.gone:
            return StopReply(found=out.signalled, killed=0, left=[]), relayed
        if out is not None and out.why == "grace":  # they had their SIGTERM and its grace
            request = dataclasses.replace(request, grace=0.0)
        signalled = out.signalled if out is not None else 0
    else:
        relayed = {}
    reply = await conn.request(request, timeout + grace + settle)
    reply.found = max(reply.found, signalled)
    return reply, relayed


#: Seconds the closing scheduler gives the nannies to end their trees and exit (their grace is 1 s less),
#: and more per relayed tree (its connection: ~1–3 ms of the scheduler's CPU).
RELAY_BUDGET = 2.5
RELAY_PER_TREE = 0.005


def _relayable(ctx: Context, recs: list[HostRecord], groups: dict[tuple, list[HostRecord]],
               remaining: list[HostRecord], keep_logs: bool) -> tuple[tuple | None, dict[str, tuple[Stop, list[str]]]]:
    """The scheduler's host (connection key) and the worker trees it can have its nannies stop
    (token -> their ``stop``, paths absolute, and their workers' names); ``(None, {})`` where a stop
    is not relayed.

    A tree qualifies when it was started with the nanny's half (``extra["relay"]``) on a host of its
    own (no other tree there, not the scheduler's host) whose paths the launcher resolves.
    """
    sched = [r for r in recs if r.role == "scheduler"]
    if len(sched) != 1 or not sched[0].extra.get("relay") or not ctx.reached(sched[0].spec):
        return None, {}
    key = connection_key(sched[0].spec)
    if ctx.conn(sched[0].spec).has_agent or quickstop.resolved(_stop_request(sched), sched[0].home) is None:
        return None, {}
    trees = {}
    for k, group in groups.items():
        if k == key or len(group) != 1 or group[0].role != "workers" or not group[0].extra.get("relay"):
            continue
        cut = _shared_last(group, remaining)
        quick = quickstop.resolved(_stop_request(cut, RELAY_BUDGET - 1.0, keep_logs=keep_logs), cut[0].home)
        if quick is not None:
            trees[group[0].token] = (quick, group[0].worker_names())
    return (key, trees) if trees else (None, {})


async def sweep_hosts(ctx: Context, specs: list[HostSpec]) -> Stopped:
    """One ``stop`` step by token *prefix* per host (once per connection): cluster ``ctx.name`` of this
    state directory ends there, and its run and default spill directories go, unless a namesake
    launched from another state directory runs there (``kept``)."""
    name = ctx.name
    request = Stop(tokens=[], prefixes=[f"{name}.{state.scope()}."], keep_if_running=f"{name}.",
                   remove=[f"{commands.RUN_ROOT}/{name}", f"{commands.SPILL_ROOT}/{name}"],
                   prune=[commands.RUN_ROOT, commands.SPILL_ROOT])
    hosts = {connection_key(s): s for s in reversed(specs)}  # the first spec of a connection names it
    done = Stopped()
    asked = [s for s in hosts.values() if ctx.reached(s)]
    for s in hosts.values():
        if not ctx.reached(s):
            done.unreachable[s.address] = ctx.failed[connection_key(s)].message
    replies = await asyncio.gather(*(ctx.conn(s).request(request, ctx.step_timeout + request.grace)
                                     for s in asked), return_exceptions=True)
    for s, reply in zip(asked, replies):
        if isinstance(reply, LaunchError):
            done.unreachable[s.address] = reply.message
        elif isinstance(reply, BaseException):
            raise reply
        elif reply.left:
            done.left[s.address] = reply.left
        else:
            done.found += reply.found
            done.killed += reply.killed
            if reply.kept:
                done.kept.append(s.address)
    return done


def _by_host(recs: list[HostRecord]) -> dict[tuple, list[HostRecord]]:
    out: dict[tuple, list[HostRecord]] = {}
    for r in recs:
        out.setdefault(connection_key(r.spec), []).append(r)
    return out


def _shared_last(recs: list[HostRecord], remaining: list[HostRecord]) -> list[HostRecord]:
    """The trees to stop, with a host's spill directory (shared by its trees) left to its last tree."""
    out = []
    for label, role in dict.fromkeys((r.label, r.role) for r in recs):
        mine = [r for r in recs if (r.label, r.role) == (label, role)]
        stays = [h for h in remaining if (h.label, h.role) == (label, role) and h not in mine]
        spill = sorted({p for h in mine + stays for p in h.remove if p != h.rundir})
        cut = [dataclasses.replace(r, remove=[p for p in r.remove if p not in spill]) for r in mine]
        if not stays:
            cut[0].remove = cut[0].remove + spill
        out += cut
    return out


class SshHosts:
    """The inventory's ``[[host]]`` tables as a worker source (see the module and :class:`WorkerSource`)."""

    kind = "ssh"
    section = "host"
    wait = True
    probe_role = "workers"

    def __init__(self, inv: Inventory | None = None):
        self.inv = inv

    def members(self) -> list[HostSpec]:
        return list(self.inv.hosts) if self.inv is not None else []

    async def preflight(self, ctx: Context, probes: list) -> dict[str, str]:
        return {}  # the shared probe checked everything a host needs

    async def start(self, ctx: Context, probe, join: Join, record: Callable[[HostRecord], None],
                    name: str | None = None) -> list[HostRecord]:
        spec = probe.spec if name is None else dataclasses.replace(probe.spec, nworkers=1)
        rec = HostRecord.new(probe.spec, "workers", ctx.name, spec.nworkers, probe.memory_limit,
                             scope=state.scope(), source=self.kind)
        if commands.relays_stop(self.inv):  # its nannies can end it for the scheduler (remote/treestop.py)
            rec.extra["relay"] = True
        if name is not None:  # its own run directory beside the host's (cleanup_paths lists that first)
            rec.rundir = f"{rec.rundir}.{name.rsplit('-', 1)[1]}"
            rec.remove, rec.names = [rec.rundir, *rec.remove[1:]], [name]
        await recorded(record(rec))
        payload = commands.workers_payload(self.inv, spec, probe.listen, join.scheduler, probe.memory_limit,
                                           join.files, name=name, rundir=rec.rundir)
        await spawn(ctx, rec, payload, ctx.step_timeout, archives=join.archives, verify=join.verify)
        return [rec]

    async def alive(self, ctx: Context, recs: list[HostRecord]) -> dict[str, bool | None]:
        groups = _by_host(recs)

        async def one(group: list[HostRecord]) -> dict[str, int]:
            reply = await ctx.conn(group[0].spec).request(Status([r.token for r in group]), ctx.step_timeout)
            return reply.alive

        answers = await asyncio.gather(*(one(g) for g in groups.values()), return_exceptions=True)
        out: dict[str, bool | None] = {}
        for group, answer in zip(groups.values(), answers):
            for r in group:
                out[r.token] = None if isinstance(answer, BaseException) else answer.get(r.token, 0) > 0
        return out

    async def stop(self, ctx: Context, recs: list[HostRecord], *, remaining: list[HostRecord] = (),
                   settle: float = 0.0, keep_logs: bool = False) -> Stopped:
        """Every host's trees at once; but where the scheduler is among them and can relay the stop to
        the nannies (:func:`_relayable`), its host first, and then only the trees it did not prove gone:
        most worker hosts then need no SSH session at all."""
        groups = _by_host(recs)
        done = Stopped()
        key, relay = _relayable(ctx, recs, groups, list(remaining), keep_logs) if not settle else (None, {})
        if key is not None:
            proven = await self._stop_groups(ctx, {key: groups.pop(key)}, remaining, settle, keep_logs, done,
                                             relay)
            for k in [k for k, g in groups.items() if g[0].token in proven]:
                group = groups.pop(k)
                done.found += proven[group[0].token].get("found", 0)
                done.killed += proven[group[0].token].get("killed", 0)
                done.gone += group
        # What the relay did not prove gone: its own host's stop, as without a relay (``pyku-launch
        # stop`` connects to a relayed tree's host only now, if at all).
        await ctx.open([g[0].spec for g in groups.values()], agents=False)
        await self._stop_groups(ctx, groups, remaining, settle, keep_logs, done)
        return done

    @staticmethod
    async def _stop_groups(ctx: Context, groups: dict[tuple, list[HostRecord]], remaining, settle: float,
                           keep_logs: bool, done: Stopped, relay: dict[str, tuple[Stop, list[str]]] | None = None
                           ) -> dict[str, dict]:
        """Stop these hosts' trees at once, adding to ``done``; the relayed trees proven gone."""
        asked = {}
        for key, group in groups.items():
            if ctx.reached(group[0].spec):
                asked[key] = group
            else:
                why = ctx.failed.get(key)
                address = group[0].address
                done.unreachable[address] = str(why) if why else f"{address}: not reachable to stop its trees"
        replies = await asyncio.gather(
            *(stop_trees(ctx.conn(g[0].spec), _shared_last(g, list(remaining)), timeout=ctx.step_timeout,
                         settle=settle, keep_logs=keep_logs, relay=relay) for g in asked.values()),
            return_exceptions=True)
        proven = {}
        for group, reply in zip(asked.values(), replies):
            if isinstance(reply, LaunchError):
                done.unreachable[group[0].address] = str(reply)
            elif isinstance(reply, BaseException):
                raise reply
            elif reply[0].left:
                done.left[group[0].address] = reply[0].left
            else:
                done.found += reply[0].found
                done.killed += reply[0].killed
                done.gone += group
                proven.update(reply[1])
        return proven

    async def sweep(self, ctx: Context) -> Stopped:
        return await sweep_hosts(ctx, self.members())

    async def why_late(self, ctx: Context, recs: list[HostRecord]) -> dict[str, str]:
        async def one(r: HostRecord) -> list[str]:
            reply = await ctx.conn(r.spec).request(Logs(r.rundir, 60), ctx.step_timeout)
            return [ln for v in reply.logs.values() for ln in v]

        tails = await asyncio.gather(*(one(r) for r in recs), return_exceptions=True)
        lines: dict[str, list[str]] = {}
        for r, t in zip(recs, tails):
            if not isinstance(t, BaseException):
                lines.setdefault(r.label, []).extend(t)
        return {lab: text for lab, ls in lines.items() if (text := logtail.summary(ls))}

    async def describe(self, ctx: Context, recs: list[HostRecord], live: Counter) -> list[dict]:
        rows = []
        for r in recs:
            row = {"address": r.address, "role": r.role, "expected": 0, "live": 0, "memory_limit": None}
            if r.role == "workers":
                row.update(expected=r.expected, live=live.get(r.label, 0), memory_limit=r.memory_limit)
            rows.append(row)
        return rows
