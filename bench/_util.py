"""Shared helpers of the bench scripts (not a benchmark itself).

Every bench script is standalone: it starts its own real OpenSSH testbed on
127.0.0.N (launcher/testing/sshd.py), keeps the launcher's state in a private
``XDG_STATE_HOME``, and cleans up what it started.  Only loopback addresses
are bound or connected to.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import launcher
from _report import Figures, arguments, fmt_runs, machine_line, median, smoke_defaults, verdict  # noqa: F401
from launcher.testing import ROOT
from launcher.testing.clusters import cluster_processes, session_members, ssh_inventory  # noqa: F401
from launcher.testing.sshd import descendants, free_port, proc_start_time, sshd_available, start_testbed  # noqa: F401
from launcher.testing import isolation

# Everything a bench run starts carries one mark, so cluster_processes() and
# the clean-up find this run's processes and nobody else's.
os.environ.setdefault(isolation.MARK_VAR, isolation.new_mark())

if Path(launcher.__file__).resolve().parents[1] != Path(__file__).resolve().parents[1]:
    print(f"note: measuring the launcher of {ROOT}, not of this checkout "
          f"(run as PYTHONPATH=. python3 bench/<script>.py to measure this one)", file=sys.stderr)


# --------------------------------------------------------------------------- set-up


def ready() -> bool:
    """Print the machine line; or, if the sshd testbed cannot run here, why (and False)."""
    why = sshd_available()
    if why:
        print(f"cannot run: {why}")
        return False
    print(machine_line())
    return True


# --------------------------------------------------------------------------- private state


@contextlib.contextmanager
def private_state(prefix: str):
    """A temp dir holding XDG_STATE_HOME (launcher state) and TMPDIR, removed at the end.

    TMPDIR reaches the testbed's hosts too (``isolation.exports``), so what
    the cluster's processes put there (the workers' spill space; the
    ``pymp-*`` directory of a forkserver that bench_repair's ``kill -9``
    ends before it can remove it) goes with the bench's own directory.
    """
    d = tempfile.mkdtemp(prefix=prefix)
    saved = {var: os.environ.get(var) for var in ("XDG_STATE_HOME", "TMPDIR")}
    for var, sub in (("XDG_STATE_HOME", "state"), ("TMPDIR", "tmp")):
        os.environ[var] = os.path.join(d, sub)
        os.makedirs(os.environ[var], exist_ok=True)
    tempfile.tempdir = None  # gettempdir() caches the TMPDIR it saw first
    try:
        yield Path(d)
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        tempfile.tempdir = None
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------- inventories


def write_inventory(path: Path, tb, *, name: str, workers, nworkers: int, memory_limit: str = "512MiB",
                    protocol: str = "tls", timeout: float = 120, ports: dict[int, int] | None = None,
                    known_hosts: str | None = None, scheduler: int = 0) -> Path:
    """The tests' inventory (launcher/testing/clusters.py) with the bench's defaults.

    Generous timeouts: the bench loads the machine far more than the tests
    (the launcher's default death timeout, 60 s, and connect timeout 30 s).
    """
    return ssh_inventory(path, tb, name=name, workers=workers, nworkers=nworkers, memory_limit=memory_limit,
                         protocol=protocol, timeout=timeout, ports=ports, known_hosts=known_hosts,
                         scheduler=scheduler, death_timeout=60, ssh_extra="connect_timeout = 30")


# --------------------------------------------------------------------------- launch profile


def _reporter_base():
    from launcher.ui.progress import Reporter

    return Reporter


def _phases(events) -> dict[str, float]:
    """Seconds per step (connect, preflight, scheduler, workers) and to the first registered worker."""
    start, out = {}, {}
    for t, kind, what in events:
        if kind == "step":
            start[what] = t
        elif kind == "done" and what in start:
            out[what] = t - start[what]
        elif kind == "workers" and what != "0" and "first_worker" not in out and "workers" in start:
            out["first_worker"] = t - start["workers"]
    return out


def make_timing_reporter():
    """A quiet launcher Reporter that records when each step starts and ends (perf_counter).

    A subclass of the launcher's own Reporter, so callbacks added to it later
    still work (they fall through to the quiet base class).
    """
    Reporter = _reporter_base()

    class _Timing(Reporter):
        def __init__(self):
            super().__init__(quiet=True)
            self.t0 = time.perf_counter()
            self.events: list[tuple[float, str, str]] = []

        def _ev(self, kind, what):
            self.events.append((time.perf_counter() - self.t0, kind, what))

        def step(self, name, detail=""):
            self._ev("step", name)
            super().step(name, detail)

        def done(self, name, seconds, detail=""):
            self._ev("done", name)
            super().done(name, seconds, detail)

        def workers(self, counts, expected):
            self._ev("workers", str(sum(counts.get(k, 0) for k in expected)))
            super().workers(counts, expected)

        def phases(self):
            return _phases(self.events)

    return _Timing()


class RoundTripCounter:
    """Counts the launcher's agent steps per host, through the API's ``on_step`` hook.

    Pass it as ``launcher.launch(..., on_step=counter)`` (and ``stop``); every
    agent step (one request line, one reply line) is one round trip.
    """

    def __init__(self):
        self.steps = []  # (address, op, start, end) of every agent step, perf_counter
        self.trips = collections.Counter()  # address -> steps since the last take()

    def __call__(self, address: str, op: str, started: float, ended: float) -> None:
        self.steps.append((address, op, started, ended))
        self.trips[address] += 1

    def take_steps(self) -> list[tuple[str, str, float, float]]:
        """The steps since the last take, in the order they ended."""
        out, self.steps[:] = list(self.steps), []
        return out

    def take(self) -> dict[str, int]:
        """Round trips per host address since the last take (independent of take_steps)."""
        out, self.trips = dict(self.trips), collections.Counter()
        return out


# --------------------------------------------------------------------------- process checks


def cpu_seconds(pids) -> float:
    """User + system CPU seconds consumed so far by these processes (not their dead children)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])
        except (OSError, ValueError, IndexError):
            pass
    return total / tick


def alive(procs) -> list[int]:
    return [p for p, s in procs if proc_start_time(p) == s]


def kill_procs(procs, sig=signal.SIGKILL) -> None:
    for p in alive(procs):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)


def pgrep_distributed() -> list[str]:
    r = subprocess.run(["pgrep", "-af", "distributed"], capture_output=True, text=True)
    return [ln for ln in r.stdout.splitlines() if ln.strip()]


def leftovers(names=(), markers=(), tracked=()) -> list[str]:
    """Our processes still alive: launcher clusters by name, pgrep lines with a marker, tracked pids."""
    out = []
    for n in names:
        out += cluster_processes(n)
    for line in pgrep_distributed():
        pid = int(line.split()[0])
        if pid == os.getpid():
            continue
        if any(m in line for m in markers):
            out.append(line)
    out += [f"{p} (tracked)" for p in alive(tracked)]
    return sorted(set(out))


def recorded(name: str):
    """The launcher's record of cluster ``name`` (a ClusterRecord), or None: the one place bench/ reads state."""
    from launcher.store import state

    return state.read(name)


def stop_all(names) -> None:
    """Stop every cluster a bench recorded under ``names``; a failed run may have left one."""
    import launcher

    for name in names:
        try:
            launcher.stop(name, purge=True)
        except Exception:
            pass


def run_on_testbed(names, body, figures=None, **testbed) -> int:
    """Run ``body(tb)`` on a fresh testbed; the script's exit code.

    On an exception it is printed and whatever ``names`` recorded is
    stopped; the testbed is always closed and :func:`final_check` run. 0 only
    if the body ran through, nothing of ours is left and ``figures`` (a
    :class:`Figures`) printed every line it promised.
    """
    import traceback

    tb = start_testbed(**testbed)
    ok = True
    try:
        body(tb)
    except Exception:
        traceback.print_exc()
        ok = False
        stop_all(names)
    finally:
        tb.close()
    clean = final_check(names)
    failed = figures.exit_code(not ok) if figures is not None else not ok
    return 0 if clean and not failed else 1


def final_check(names=(), markers=(), tracked=(), dirs=()) -> bool:
    """Print and return whether anything of ours is left (processes, run dirs)."""
    left = leftovers(names, markers, tracked)
    rundirs = [str(Path("~/.pyku-launch").expanduser() / n) for n in names
               if (Path("~/.pyku-launch").expanduser() / n).exists()]
    rundirs += [str(d) for d in dirs if Path(d).exists()]
    others = len(pgrep_distributed())
    print(f"cleanup: {len(left)} process(es) of ours left, {len(rundirs)} run dir(s) left "
          f"(pgrep -af distributed: {others} line(s), none of them ours)" if not left and not rundirs else
          f"cleanup: LEFT {left} {rundirs}")
    return not left and not rundirs


# --------------------------------------------------------------------------- delaying proxy


def _loopback(address: str) -> None:
    if not ipaddress.ip_address(address).is_loopback:
        raise ValueError(f"refusing non-loopback address {address!r}")


class DelayProxy:
    """TCP proxies on loopback that delay every chunk by ``delay`` s in each direction.

    One asyncio loop in a background thread.  ``add(listen_addr, target_addr,
    target_port)`` returns the listening port.  A chunk read at time t is
    written at t + delay, in order, without serialising the delays (so
    throughput is unchanged and the round-trip time grows by 2 x delay).
    Per connection it counts "turns": client->server data followed by
    server->client data, i.e. protocol round trips on the wire.
    """

    def __init__(self, delay: float):
        self.delay = delay
        self.loop = asyncio.new_event_loop()
        self.servers = []
        self.tasks = set()
        self.writers = set()
        self.turns: dict[tuple[str, int], list[int]] = {}  # (addr, port) -> turns per connection
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def add(self, listen: str, target: str, target_port: int) -> int:
        _loopback(listen)
        _loopback(target)
        port = free_port(listen)

        async def start():
            srv = await asyncio.start_server(
                lambda r, w: self._handle(r, w, target, target_port, (listen, port)), listen, port)
            self.servers.append(srv)

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return port

    def reset_counts(self) -> None:
        self.loop.call_soon_threadsafe(self.turns.clear)

    def counts(self) -> dict:
        return asyncio.run_coroutine_threadsafe(self._counts(), self.loop).result(10)

    async def _counts(self):
        return {k: list(v) for k, v in self.turns.items()}

    async def _handle(self, cr, cw, target, port, key):
        try:
            sr, sw = await asyncio.open_connection(target, port)
        except OSError:
            cw.close()
            return
        self.writers.update((cw, sw))
        state = {"last": None, "turns": 0}
        idx = len(self.turns.setdefault(key, []))
        self.turns[key].append(0)

        def note(direction):
            if direction == "s2c" and state["last"] == "c2s":
                state["turns"] += 1
                self.turns[key][idx] = state["turns"]
            state["last"] = direction

        t1 = asyncio.ensure_future(self._pump(cr, sw, "c2s", note))
        t2 = asyncio.ensure_future(self._pump(sr, cw, "s2c", note))
        self.tasks.update((t1, t2))
        try:
            await asyncio.gather(t1, t2, return_exceptions=True)
        finally:
            self.tasks.difference_update((t1, t2))
            for w in (cw, sw):
                w.close()
                self.writers.discard(w)

    async def _pump(self, reader, writer, direction, note):
        q: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver():
            while True:
                due, data = await q.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    with contextlib.suppress(OSError, RuntimeError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                note(direction)
                writer.write(data)
                with contextlib.suppress(ConnectionError):
                    await writer.drain()

        d = asyncio.ensure_future(deliver())
        try:
            while True:
                try:
                    data = await reader.read(65536)
                except ConnectionError:
                    data = b""
                q.put_nowait((loop.time() + self.delay, data or None))
                if not data:
                    break
            await d
        finally:
            d.cancel()

    def close(self) -> None:
        async def stop():
            for s in self.servers:
                s.close()
            for w in list(self.writers):
                w.close()
            for t in list(self.tasks):
                t.cancel()
            await asyncio.sleep(0.05)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def proxy_known_hosts(tb, ports: dict[int, int], path: Path) -> Path:
    """known_hosts lines ``[addr]:port key`` for proxy ports, with the hosts' real keys."""
    lines = []
    for i, port in ports.items():
        h = tb.hosts[i]
        key = Path(h.host_key_pub).read_text().split()
        lines.append(f"[{h.address}]:{port} {key[0]} {key[1]}")
    path.write_text("\n".join(lines) + "\n")
    return path
