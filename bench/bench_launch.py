"""Benchmark: pyku-launch against distributed.SSHCluster on real OpenSSH hosts.

Starts its own sshd testbed (launcher/testing/sshd.py: 127.0.0.2 = scheduler host,
127.0.0.3 = worker host, both this machine) and, per repeat and per number of
workers per host (default 1, 10, 30), in the same run:

* ``launcher.launch`` (preflight included, TLS, readiness from the
  scheduler) until all workers are registered, then ``launcher.stop``,
  checking that it returns only when no process of the cluster is left
  (``session_members`` of the record is empty right after it returns);
* ``distributed.SSHCluster`` with the same hosts, workers (nthreads 1, the
  same memory limit), until ``client.wait_for_workers(n)``; then
  ``cluster.close()`` and how long its processes live on afterwards.

Prints medians and ratios, PASS/FAIL of the targets
(launch <= 0.4 x SSHCluster for 1 host x 30 workers; stop <= 3 s for 30
workers), a profile of where the launch time goes, and writes the plot
``bench/launch_times.png``.  Exit code: 0 unless the script itself crashed
(targets are reported, not enforced).

    python bench/bench_launch.py [--repeats 3] [--counts 1,10,30] [--smoke]
"""

from __future__ import annotations

import os
import resource
import sys
import time
import traceback
from pathlib import Path

import _util as u  # bench/ is the script's directory, so on sys.path

MEMORY_LIMIT = "512MiB"
LINGER_CAP = 120.0


PROTOCOL = "tls"


def run_ours(tb, tmp, name, n, results):
    import launcher

    inv = u.write_inventory(tmp / f"{name}.toml", tb, name=name, workers=(1,), nworkers=n,
                            memory_limit=MEMORY_LIMIT, protocol=PROTOCOL)
    rep = u.make_timing_reporter()
    rt = u.RoundTripCounter()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    rec = launcher.launch(inv, reporter=rep, on_step=rt)
    launch = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    local_cpu = ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime
    remote_cpu = u.cpu_seconds(u.session_members(rec))  # scheduler, worker CLI, forkserver, workers
    trips = rt.take()
    try:
        st = launcher.status(name)
        live = sum(h["live"] or 0 for h in st["hosts"] if h["role"] == "workers")
    except Exception as e:  # status is a check, not the benchmark
        live = f"status failed: {e}"
    rt.take()
    t0 = time.perf_counter()
    summary = launcher.stop(name, on_step=rt, purge=True)
    stop = time.perf_counter() - t0
    stop_trips = rt.take()
    left = u.session_members(rec)  # right after stop returned: must be empty
    left += u.cluster_processes(name)
    results.append({"n": n, "launch": launch, "stop": stop, "left": left, "live": live,
                    "phases": rep.phases(), "trips": trips, "local_cpu": local_cpu, "remote_cpu": remote_cpu, "stop_trips": stop_trips,
                    "stopped": summary.get("stopped")})
    return launch, stop, left


def run_cli(tb, tmp, name, n, results):
    """The pyku-launch command itself, in a fresh process (imports included), then stop."""
    import subprocess

    import launcher

    inv = u.write_inventory(tmp / f"{name}.toml", tb, name=name, workers=(1,), nworkers=n,
                            memory_limit=MEMORY_LIMIT, protocol=PROTOCOL)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "launcher.cli", str(inv), "--quiet"], cwd=u.ROOT,
                       capture_output=True, text=True, timeout=600)
    launch = time.perf_counter() - t0
    rec = u.recorded(name)
    if r.returncode != 0 or rec is None:
        raise RuntimeError(f"pyku-launch exited {r.returncode}: {r.stderr[-1500:]}")
    launcher.stop(name, purge=True)
    left = u.session_members(rec) + u.cluster_processes(name)
    results.append({"n": n, "launch": launch, "left": left})
    return launch, left


def run_sshcluster(tb, n, results):
    import logging

    from distributed import Client, SSHCluster

    logging.getLogger("distributed.deploy.ssh").setLevel(logging.WARNING)  # it relays every remote log line

    sched, worker = tb.hosts[0].address, tb.hosts[1].address
    sshd_pids = [p.pid for p in tb._procs]
    t0 = time.perf_counter()
    cluster = SSHCluster(
        [sched, worker],
        connect_options=tb.connect_kwargs(),
        worker_options={"nthreads": 1, "n_workers": n, "memory_limit": MEMORY_LIMIT, "host": worker},
        scheduler_options={"port": 0, "dashboard_address": f"{sched}:0", "host": sched},
        remote_python=sys.executable,
    )
    client = Client(cluster)
    try:
        client.wait_for_workers(n, timeout=300)
        launch = time.perf_counter() - t0
        got = len(client.scheduler_info(n_workers=-1)["workers"])
        # Every remote process of this SSHCluster: descendants of our sshd listeners.
        procs = [(p, s) for p, s in u.descendants(sshd_pids) if not _is_sshd(p)]
    finally:
        client.close()
        t0 = time.perf_counter()
        cluster.close()
        close = time.perf_counter() - t0
    t1 = time.perf_counter()
    while u.alive(procs) and time.perf_counter() - t1 < LINGER_CAP:
        time.sleep(0.1)
    linger = time.perf_counter() - t1
    survivors = u.alive(procs)
    if survivors:
        u.kill_procs(procs)
    results.append({"n": n, "launch": launch, "close": close, "linger": linger, "capped": bool(survivors),
                    "processes": len(procs), "live": got})
    return launch, linger


def _is_sshd(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip().startswith("sshd")
    except OSError:
        return True


def plot(counts, ours, peer, path):
    try:
        import matplotlib
    except ImportError:
        print("plot: not drawn, matplotlib is not installed (pip install -e '.[bench]')")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, data, marker in ((f"pyku-launch (preflight, {PROTOCOL})", ours, "o"),
                                ("distributed.SSHCluster (tcp)", peer, "s")):
        xs = [c for c in counts if data.get(c)]
        med = [u.median(data[c]) for c in xs]
        lo = [m - min(data[c]) for m, c in zip(med, xs)]
        hi = [max(data[c]) - m for m, c in zip(med, xs)]
        ax.errorbar(xs, med, yerr=[lo, hi], marker=marker, capsize=4, label=label)
    ax.set_xlabel("workers per host (1 worker host, nthreads 1)")
    ax.set_ylabel("seconds until all workers registered")
    ax.set_title("Launch time vs workers per host (median, min-max)")
    ax.set_xticks(counts)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path}")


def main(argv=None) -> int:
    ap = u.arguments(__doc__, smoke="1 repeat of 1 and 2 workers, the plot in a temporary directory")
    ap.add_argument("--counts", default="1,10,30", help="workers per host (comma separated)")
    ap.add_argument("--png", default=str(Path(__file__).resolve().parent / "launch_times.png"))
    ap.add_argument("--protocol", choices=("tls", "tcp"), default="tls",
                    help="pyku-launch's protocol (default tls, its default; SSHCluster always uses tcp)")
    args = u.smoke_defaults(ap, argv, repeats=1, counts="1,2", png="")
    global PROTOCOL
    PROTOCOL = args.protocol
    counts = [int(c) for c in args.counts.split(",")]
    if not u.ready():
        return 1
    figures = u.Figures("launch", ("launch", "cli", "stop"))
    names, ours_rows, peer_rows, cli_rows = [], [], [], []
    crashed = False
    with u.private_state("bench-launch-") as tmp:
        import dask

        # SSHCluster hands the local dask config to its remote processes
        # (DASK_INTERNAL_INHERIT_CONFIG): keep their scratch space in our temp dir.
        dask.config.set({"temporary-directory": str(tmp / "dask")})
        tb = u.start_testbed(n_hosts=2)
        print(f"testbed: sshd on {', '.join(tb.addresses)} port {tb.port}; scheduler on {tb.hosts[0].address}, "
              f"workers on {tb.hosts[1].address}; nthreads 1, memory_limit {MEMORY_LIMIT}; pyku-launch over {PROTOCOL}, "
              f"SSHCluster over tcp; "
              f"{args.repeats} repeats, order interleaved")
        try:
            for r in range(args.repeats):
                for n in counts:
                    name = f"bl{os.getpid()}r{r}n{n}"
                    names.append(name)
                    try:
                        launch, stop, left = run_ours(tb, tmp, name, n, ours_rows)
                        print(f"  repeat {r + 1} n={n:2d} pyku-launch: launch {launch:6.2f} s, stop {stop:5.2f} s, "
                              f"left after stop: {len(left)}", flush=True)
                    except Exception:
                        traceback.print_exc()
                        print(f"  repeat {r + 1} n={n:2d} pyku-launch: FAILED (see above)", flush=True)
                    if n == max(counts):
                        name = f"bl{os.getpid()}r{r}n{n}cli"
                        names.append(name)
                        try:
                            launch, left = run_cli(tb, tmp, name, n, cli_rows)
                            print(f"  repeat {r + 1} n={n:2d} pyku-launch CLI (fresh process): launch {launch:6.2f} s, "
                                  f"left after stop: {len(left)}", flush=True)
                        except Exception:
                            traceback.print_exc()
                            print(f"  repeat {r + 1} n={n:2d} pyku-launch CLI: FAILED (see above)", flush=True)
                    try:
                        launch, linger = run_sshcluster(tb, n, peer_rows)
                        print(f"  repeat {r + 1} n={n:2d} SSHCluster : launch {launch:6.2f} s, processes lived on "
                              f"{linger:5.1f} s after close()", flush=True)
                    except Exception:
                        traceback.print_exc()
                        print(f"  repeat {r + 1} n={n:2d} SSHCluster: FAILED (see above)", flush=True)
        except BaseException:
            crashed = True
            traceback.print_exc()
        finally:
            u.stop_all(names)  # anything a failed run left recorded
            tb.close()
        report(figures, counts, ours_rows, peer_rows, args.png or str(tmp / "launch_times.png"), cli_rows)
    clean = u.final_check(names=names, markers=[f"bl{os.getpid()}"], dirs=[tmp])
    return figures.exit_code(crashed or not clean)


def report(figures, counts, ours_rows, peer_rows, png, cli_rows=()):
    ours = {n: [r["launch"] for r in ours_rows if r["n"] == n] for n in counts}
    peer = {n: [r["launch"] for r in peer_rows if r["n"] == n] for n in counts}
    stops = {n: [r["stop"] for r in ours_rows if r["n"] == n] for n in counts}
    print()
    print("launch until all registered (median of runs; ratio = pyku-launch / SSHCluster, same run)")
    print(f"  {'workers/host':>12}  {'pyku-launch':>11}  {'SSHCluster':>10}  {'ratio':>5}   runs (ours | SSHCluster)")
    for n in counts:
        if ours[n] and peer[n]:
            print(f"  {n:>12}  {u.median(ours[n]):9.2f} s  {u.median(peer[n]):8.2f} s  "
                  f"{u.median(ours[n]) / u.median(peer[n]):5.2f}   {u.fmt_runs(ours[n], '')} | {u.fmt_runs(peer[n], '')}")
    big = max(counts)
    if ours[big] and peer[big]:
        ratio = u.median(ours[big]) / u.median(peer[big])
        figures.line("launch", f"1 host x {big} workers: pyku-launch / SSHCluster {ratio:.2f} x "
                     f"({u.median(ours[big]):.2f} vs {u.median(peer[big]):.2f} s, median of {len(ours[big])}; "
                     f"target <= 0.4 x: {u.verdict(ratio <= 0.4)})")
    cli = [r["launch"] for r in cli_rows]
    if cli and peer[big]:
        figures.line("cli", f"the pyku-launch command in a fresh process (interpreter start and imports included), "
                     f"{big} workers: {u.median(cli) / u.median(peer[big]):.2f} x SSHCluster "
                     f"({u.median(cli):.2f} s, median of {len(cli)}: {u.fmt_runs(cli)})")
    if stops[big]:
        left = [r["left"] for r in ours_rows if r["n"] == big]
        ok = u.median(stops[big]) <= 3.0 and all(not x for x in left)
        figures.line("stop", f"{big} workers: {u.median(stops[big]):.2f} s (median of {len(stops[big])}: "
                     f"{u.fmt_runs(stops[big])}), processes left right after it returned: {[len(x) for x in left]} "
                     f"(target <= 3 s and none left: {u.verdict(ok)})")
    for n in counts:
        if stops[n] and n != big:
            print(f"  stop, {n} workers: median {u.median(stops[n]):.2f} s (runs {u.fmt_runs(stops[n])})")
    for n in counts:
        rows = [r for r in peer_rows if r["n"] == n]
        if rows:
            lin = [r["linger"] for r in rows]
            capped = " (some still alive at the cap, killed)" if any(r["capped"] for r in rows) else ""
            print(f"SSHCluster {n} workers: processes ({rows[0]['processes']}) live on after cluster.close() "
                  f"returned: median {u.median(lin):.1f} s (runs {u.fmt_runs(lin)}){capped}; close() itself "
                  f"{u.median([r['close'] for r in rows]):.2f} s")
    # Where pyku-launch's time goes (reporter timestamps).
    keys = ["connect", "preflight", "scheduler", "workers", "first_worker"]
    for n in counts:
        rows = [r for r in ours_rows if r["n"] == n]
        if rows:
            med = {k: u.median([r["phases"].get(k, float("nan")) for r in rows]) for k in keys}
            print(f"profile of pyku-launch, {n} workers (median s): connect {med['connect']:.2f}, preflight "
                  f"{med['preflight']:.2f}, scheduler {med['scheduler']:.2f}, workers {med['workers']:.2f} "
                  f"(spawn step + registration; first worker registered after {med['first_worker']:.2f})")
            lc, rc = u.median([r["local_cpu"] for r in rows]), u.median([r["remote_cpu"] for r in rows])
            print(f"    CPU until registered: this process {lc:.1f} CPU-s; the cluster's processes {rc:.1f} CPU-s "
                  f"(alone >= {rc / os.cpu_count():.1f} s of wall time on {os.cpu_count()} cores)")
    rows = [r for r in ours_rows if r["n"] == big]
    if rows:
        print(f"agent steps per connection (launch): {rows[0]['trips']}; stop: {rows[0]['stop_trips']}")
    plot(counts, ours, peer, png)


if __name__ == "__main__":
    sys.exit(main())
