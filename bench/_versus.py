"""Side-by-side of pyku-launch and ``distributed.SSHCluster`` on N hosts x 1 worker (bench_fanout.py --versus).

Not a benchmark by itself: the measuring parts the ``--versus`` mode of
``bench_fanout.py`` runs per repeat, alternating the two contenders.

For each launch it takes, from /proc, on this machine (every "host" is it):

* wall time until all N workers are registered;
* the machine's busy CPU-seconds (``/proc/stat``: user, nice, system, irq,
  softirq, steal) over the launch and over its teardown: everything that
  ran, other users' work included (noisy; the machine is shared);
* CPU-seconds per remote process kind, counted from the processes
  themselves (utime + stime + what they reaped): the launcher (this
  process), ssh sessions with their shells and the exited agents (what the
  sshd listeners reaped), scheduler, nanny, forkserver, worker.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import _util as u

MEMORY_LIMIT = "512MiB"
_TICK = os.sysconf("SC_CLK_TCK")
LABELS = {"ours": "pyku-launch", "nologin": "pyku-launch login_shell=false", "peer": "SSHCluster"}
KINDS = ("launcher", "ssh session", "agent", "scheduler", "nanny", "forkserver", "worker", "other")


def machine_busy() -> float:
    """Busy CPU-seconds of the whole machine since boot (all cores)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _TICK


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU-seconds of the process and of the children it reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(rest[1]), sum(int(x) for x in rest[11:15]) / _TICK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def listeners_cpu(tb) -> float:
    """CPU of the sshd listeners and of every connection process (and its shell, agent) they reaped."""
    return sum((_stat(p.pid) or (0, 0.0))[1] for p in tb._procs)


def kind_of(pid: int, parents: dict[int, int]) -> str:
    cmd = _cmdline(pid)
    if "dask_worker" in cmd and _cmdline(parents.get(pid, 0)) == cmd:  # the nanny's fork: its forkserver,
        grand = parents.get(parents.get(pid, 0), 0)  # and the workers that one forked
        return "worker" if _cmdline(grand) == cmd else "forkserver"
    if "forkserver import main" in cmd:  # a forkserver, or a worker it forked (same command line)
        parent = _cmdline(parents.get(pid, 0))
        return "worker" if "forkserver import main" in parent else "forkserver"
    if "spawn_main" in cmd:  # SSHCluster: the nanny's worker, started with spawn
        return "worker"
    if "dask_scheduler" in cmd or ("dask_spec" in cmd and "Scheduler" in cmd):
        return "scheduler"
    if "dask_worker" in cmd or "dask_spec" in cmd:
        return "nanny"
    if "pyku-launch agent" in cmd:  # its login shell included: the agent is the shell's exec
        return "agent"
    if cmd.startswith("sshd"):
        return "ssh session"
    return "other"


def by_kind(pids) -> dict[str, float]:
    """CPU-seconds of these live processes, summed per kind."""
    stats = {p: s for p in pids if (s := _stat(p))}
    parents = {p: s[0] for p, s in stats.items()}
    out: dict[str, float] = {}
    for p, (_pp, cpu) in stats.items():
        k = kind_of(p, parents)
        out[k] = out.get(k, 0.0) + cpu
    return out


class Watcher:
    """The launcher's ``on_step`` hook: CPU of every agent and ssh session, read while they live.

    They exit when the launch closes its connections, and sshd does not
    always reap them (their CPU would be lost to the count): so their
    figures are read after every agent step (the last step of an agent ends
    its work), keeping each pid's largest. Its own CPU is kept apart, to be
    taken off the launcher's.
    """

    def __init__(self, tb):
        self.sshd = [p.pid for p in tb._procs]
        self.seen: dict[int, tuple[str, float]] = {}
        self.own = 0.0

    def __call__(self, *_step) -> None:
        c0 = self_cpu()
        pids = [p for p, _ in u.descendants(self.sshd)]
        stats = {p: s for p in pids if (s := _stat(p))}
        parents = {p: s[0] for p, s in stats.items()}
        for p, (_pp, cpu) in stats.items():
            kind = kind_of(p, parents)
            if kind in ("agent", "ssh session") and cpu >= self.seen.get(p, ("", 0.0))[1]:
                self.seen[p] = (kind, cpu)
        self.own += self_cpu() - c0

    def kinds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for kind, cpu in self.seen.values():
            out[kind] = out.get(kind, 0.0) + cpu
        return out


class Meter:
    """Machine, launcher and sshd-listener CPU since it was made."""

    def __init__(self, tb):
        self.tb = tb
        self.m0, self.s0, self.l0, self.t0 = machine_busy(), self_cpu(), listeners_cpu(tb), time.perf_counter()

    def wall(self) -> float:
        return time.perf_counter() - self.t0

    def machine(self) -> float:
        return machine_busy() - self.m0

    def launcher(self) -> float:
        return self_cpu() - self.s0

    def reaped(self) -> float:
        return listeners_cpu(self.tb) - self.l0


def rss() -> int:
    """This process's resident memory now, bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def run_ours(tb, tmp, name, n_hosts, login_shell=True):
    import launcher

    inv = u.write_inventory(tmp / f"{name}.toml", tb, name=name, workers=tuple(range(1, 1 + n_hosts)), nworkers=1,
                            memory_limit=MEMORY_LIMIT)
    if not login_shell:
        inv.write_text(inv.read_text().replace("[cluster]\n", "[cluster]\nlogin_shell = false\n", 1))
    rep = u.make_timing_reporter()
    watch = Watcher(tb)
    meter = Meter(tb)
    rss0 = rss()
    rec = launcher.launch(inv, reporter=rep, on_step=watch)
    wall, launcher_cpu = meter.wall(), meter.launcher() - watch.own
    grown = rss() - rss0
    kinds = by_kind(u.session_members(rec))
    kinds.update(watch.kinds())
    kinds["launcher"] = launcher_cpu
    machine = meter.machine()
    time.sleep(0.5)  # the launch's sshd connection processes are reaped: not counted as the stop's sessions
    down = Meter(tb)
    steps = u.RoundTripCounter()
    launcher.stop(name, purge=True, on_step=steps)
    stop, stop_machine, stop_launcher = down.wall(), down.machine(), down.launcher()
    left = u.session_members(rec) + u.cluster_processes(name)
    time.sleep(0.5)  # the sshd connection processes the stop closed are reaped by their listeners
    return {"wall": wall, "machine": machine, "kinds": kinds, "stop": stop, "stop_machine": stop_machine,
            "left": len(left), "phases": rep.phases(), "rss": grown,
            "stop_launcher": stop_launcher, "stop_sessions": down.reaped(),
            "stop_ops": sorted({op for _, op, _, _ in steps.take_steps()})}


def run_peer(tb, n_hosts):
    import logging

    from distributed import Client, SSHCluster

    logging.getLogger("distributed.deploy.ssh").setLevel(logging.WARNING)  # it relays every remote log line
    hosts = [h.address for h in tb.hosts[:1 + n_hosts]]
    sshd = [p.pid for p in tb._procs]
    procs = []
    meter = Meter(tb)
    cluster = SSHCluster(
        hosts, connect_options=tb.connect_kwargs(),
        worker_options={"nthreads": 1, "n_workers": 1, "memory_limit": MEMORY_LIMIT},
        scheduler_options={"port": 0, "dashboard_address": f"{hosts[0]}:0", "host": hosts[0]},
        remote_python=sys.executable)
    client = Client(cluster)
    try:
        client.wait_for_workers(n_hosts, timeout=300)
        wall, launcher_cpu = meter.wall(), meter.launcher()
        procs = u.descendants(sshd)
        kinds = by_kind([p for p, _ in procs])
        machine = meter.machine()
    finally:
        down = Meter(tb)
        client.close()
        cluster.close()
    while u.alive(procs) and down.wall() < 120:  # its remote processes live on after close()
        time.sleep(0.05)
    stop, stop_machine = down.wall(), down.machine()
    left = u.alive(procs)
    u.kill_procs(procs)
    kinds["launcher"] = launcher_cpu
    return {"wall": wall, "machine": machine, "kinds": kinds, "stop": stop, "stop_machine": stop_machine,
            "left": len(left), "phases": {}}


def main(args) -> int:
    """The side-by-side run; its report. Returns the exit code."""
    import traceback

    counts = [int(c) for c in args.versus_hosts.split(",")]
    contenders = ("ours", "nologin", "peer") if args.no_login_too else ("ours", "peer")
    rows = {(c, who): [] for c in counts for who in contenders}
    names, crashed = [], False
    with u.private_state("bench-fanout-vs-") as tmp:
        import dask

        # SSHCluster hands the local dask config to its remote processes: scratch space in our temp dir.
        dask.config.set({"temporary-directory": str(tmp / "dask")})
        tb = u.start_testbed(n_hosts=1 + max(counts))
        print(f"testbed: {len(tb.hosts)} sshd on {tb.addresses[0]}..{tb.addresses[-1]} port {tb.port}; scheduler on "
              f"{tb.addresses[0]}; N worker hosts x 1 worker, nthreads 1, memory_limit {MEMORY_LIMIT}; pyku-launch "
              f"(preflight, TLS) vs SSHCluster (tcp), alternating; {args.repeats} repeats")
        try:
            for r in range(args.repeats):
                for c in counts:
                    order = contenders if r % 2 == 0 else tuple(reversed(contenders))
                    for who in order:
                        name = f"bv{os.getpid()}r{r}n{c}{who}"
                        try:
                            if who != "peer":
                                names.append(name)
                                res = run_ours(tb, tmp, name, c, login_shell=who == "ours")
                            else:
                                res = run_peer(tb, c)
                        except Exception:
                            traceback.print_exc()
                            print(f"  repeat {r + 1} {c} hosts {who}: FAILED (see above)", flush=True)
                            continue
                        rows[(c, who)].append(res)
                        label = LABELS[who]
                        print(f"  repeat {r + 1} {c:2d} hosts {label}: wall {res['wall']:6.2f} s, machine "
                              f"{res['machine']:5.1f} CPU-s; teardown {res['stop']:5.2f} s "
                              f"{res['stop_machine']:4.1f} CPU-s, left {res['left']}  "
                              + " ".join(f"{k} {v:.2f}" for k, v in sorted(res["kinds"].items())), flush=True)
        except BaseException:
            crashed = True
            traceback.print_exc()
        finally:
            u.stop_all(names)
            tb.close()
        figures = u.Figures("fanout", ("versus",))
        report(counts, rows, figures)
    clean = u.final_check(names=names, markers=[f"bv{os.getpid()}"], dirs=[tmp])
    return figures.exit_code(crashed or not clean)


def report(counts, rows, figures) -> None:
    med = u.median
    print()
    print("N hosts x 1 worker: pyku-launch vs SSHCluster, same run (medians; ratio = ours / SSHCluster)")
    for c in counts:
        peer = rows[(c, "peer")]
        if not peer:
            continue
        w_p = med([r["wall"] for r in peer])
        m_p = med([r["machine"] + r["stop_machine"] for r in peer])
        own_p = med([sum(r["kinds"].values()) for r in peer])
        for who in [w for w in ("ours", "nologin") if rows.get((c, w))]:
            ours = rows[(c, who)]
            w_o = med([r["wall"] for r in ours])
            m_o = med([r["machine"] + r["stop_machine"] for r in ours])
            own_o = med([sum(r["kinds"].values()) for r in ours])
            print(f"  {c} hosts, {LABELS[who]}: wall until all registered {w_o:.2f} vs {w_p:.2f} s = {w_o / w_p:.2f} x "
                  f"(runs {u.fmt_runs([r['wall'] for r in ours], '')} | {u.fmt_runs([r['wall'] for r in peer], '')})")
            print(f"    machine busy CPU, launch {med([r['machine'] for r in ours]):.1f} vs "
                  f"{med([r['machine'] for r in peer]):.1f} CPU-s, teardown {med([r['stop_machine'] for r in ours]):.1f} vs "
                  f"{med([r['stop_machine'] for r in peer]):.1f}; launch + teardown {m_o:.1f} vs {m_p:.1f} = {m_o / m_p:.2f} x; "
                  f"the launch's own processes (sum of kinds) {own_o:.1f} vs {own_p:.1f} CPU-s = {own_o / own_p:.2f} x")
            print("    CPU-s per kind (all hosts; per host): " + _kinds(ours, c))
            ph = {k: med([r["phases"].get(k, 0.0) for r in ours]) for k in ("connect", "preflight", "scheduler", "workers")}
            print("    phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in ph.items())
                  + f"; launcher memory grown by the launch {med([r['rss'] for r in ours]) / 2**20:.1f} MiB")
            stop, left = med([r["stop"] for r in ours]), [r["left"] for r in ours]
            print(f"    teardown: stop {stop:.2f} s (runs {u.fmt_runs([r['stop'] for r in ours], '')}; processes left "
                  f"right after it returned: {left}); SSHCluster close() until its processes were gone "
                  f"{med([r['stop'] for r in peer]):.2f} s")
            print(f"    stop's own CPU: launcher {med([r['stop_launcher'] for r in ours]):.2f} CPU-s, ssh sessions "
                  f"(what the sshd listeners reaped: sshd, shell, stop script or agent) "
                  f"{med([r['stop_sessions'] for r in ours]):.2f} CPU-s ({med([r['stop_sessions'] for r in ours]) / (c + 1):.3f}"
                  f" per host); steps {sorted({op for r in ours for op in r['stop_ops']})}")
            figures.line("versus", f"{c} hosts x 1, {LABELS[who]}: wall {w_o / w_p:.2f} x SSHCluster ({w_o:.2f} vs "
                         f"{w_p:.2f} s), machine CPU launch + teardown {m_o / m_p:.2f} x, stop {stop:.2f} s")
            if c == 12 or len(counts) == 1:
                print(f"TARGET {c} hosts x 1 ({LABELS[who]}): wall <= 0.6 x SSHCluster: {w_o / w_p:.2f} x -> "
                      f"{u.verdict(w_o / w_p <= 0.6)}; machine CPU (launch + teardown) <= 0.7 x: {m_o / m_p:.2f} x -> "
                      f"{u.verdict(m_o / m_p <= 0.7)}; stop <= 2 s, nothing left: {stop:.2f} s -> "
                      f"{u.verdict(stop <= 2 and not any(left))}")
        print(f"  {c} hosts, SSHCluster CPU-s per kind (all hosts; per host): " + _kinds(peer, c))


def _kinds(rows, hosts: int) -> str:
    """Median CPU-seconds per process kind over the runs, all hosts and per host."""
    kinds = {k: u.median([r["kinds"].get(k, 0.0) for r in rows]) for k in KINDS}
    return ", ".join(f"{k} {v:.2f} ({v / hosts:.3f})" for k, v in kinds.items() if v)
