"""Benchmark: peak memory of the process running pyku-launch, 4 hosts x 30 workers.

Starts its own sshd testbed of 5 hosts (127.0.0.2 = scheduler, 127.0.0.3-6
= 4 worker hosts x 30 workers = 120 workers, nthreads 1, memory_limit
``--memory-limit``), and per repeat launches the cluster in a subprocess:

* ``api``: ``launcher.launch(...)`` in ``python -c``; at the end it reads its
  own ``VmHWM`` (/proc/self/status) and ``ru_maxrss``;
* ``cli``: ``python -m launcher.cli HOSTS.toml --quiet`` (the pyku-launch
  command itself); its ``ru_maxrss`` comes from ``os.wait4``.

then stops it (``launcher.stop``, checking nothing is left).  For scale it
also measures a bare ``python -c "import distributed"``.  Target:
the pyku-launch process stays under 150 MiB.

    python bench/bench_memory.py [--repeats 3] [--modes api,cli] [--memory-limit 256MiB] [--hosts 4]
                                 [--per-host 30] [--smoke]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback

import _util as u  # bench/ is the script's directory, so on sys.path

MiB = 2**20
HOSTS, PER_HOST = 4, 30
TIMEOUT = 600

API_CHILD = r"""
import json, resource, sys, time
import launcher
t0 = time.perf_counter()
rec = launcher.launch({inv!r}, timeout={timeout})
t = time.perf_counter() - t0
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({{"vmhwm_kib": hwm, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   "launch": t, "workers": sum(h.expected for h in rec.hosts)}}))
"""

BASELINE_CHILD = r"""
import json, resource
import {module}
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({{"vmhwm_kib": hwm}}))
"""


def run_api(inv):
    code = API_CHILD.format(inv=str(inv), timeout=TIMEOUT)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT + 120,
                       cwd=u.ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"api launch failed ({r.returncode}): {r.stderr[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return out["vmhwm_kib"] * 1024, out["launch"]


def run_cli(inv, tmp):
    """pyku-launch itself; its own peak RSS from os.wait4 (the CLI starts no local children)."""
    out_path, err_path = tmp / "cli.out", tmp / "cli.err"
    t0 = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        p = subprocess.Popen([sys.executable, "-m", "launcher.cli", str(inv), "--quiet", "--timeout", str(TIMEOUT)],
                             cwd=u.ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    _, status, rusage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    launch = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"cli launch failed ({p.returncode}): {err_path.read_text()[-2000:]}")
    return rusage.ru_maxrss * 1024, launch


def baseline(module):
    r = subprocess.run([sys.executable, "-c", BASELINE_CHILD.format(module=module)], capture_output=True,
                       text=True, cwd=u.ROOT, timeout=120)
    return json.loads(r.stdout.strip().splitlines()[-1])["vmhwm_kib"] * 1024


def main(argv=None) -> int:
    ap = u.arguments(__doc__, smoke="1 repeat of 1 host x 2 workers")
    ap.add_argument("--modes", default="api,cli")
    ap.add_argument("--memory-limit", default="256MiB")
    ap.add_argument("--hosts", type=int, default=HOSTS, help="worker hosts (default 4)")
    ap.add_argument("--per-host", type=int, default=PER_HOST, help="workers per host (default 30)")
    args = u.smoke_defaults(ap, argv, repeats=1, hosts=1, per_host=2)
    modes = args.modes.split(",")
    hosts, per_host = args.hosts, args.per_host
    if not u.ready():
        return 1
    figures = u.Figures("memory", tuple(modes))
    rows = {m: [] for m in modes}
    names = []
    crashed = False
    with u.private_state("bench-memory-") as tmp:
        tb = u.start_testbed(n_hosts=1 + hosts)
        print(f"testbed: {len(tb.hosts)} sshd on {tb.addresses[0]}..{tb.addresses[-1]} port {tb.port}; scheduler on "
              f"{tb.addresses[0]}, {hosts} hosts x {per_host} workers, nthreads 1, memory_limit {args.memory_limit}; "
              f"{args.repeats} repeats")
        try:
            import launcher

            for r in range(args.repeats):
                for mode in modes:
                    name = f"bm{os.getpid()}r{r}{mode}"
                    names.append(name)
                    inv = u.write_inventory(tmp / f"{name}.toml", tb, name=name, workers=tuple(range(1, 1 + hosts)),
                                            nworkers=per_host, memory_limit=args.memory_limit, timeout=TIMEOUT)
                    try:
                        if mode == "api":
                            peak, launch = run_api(inv)
                        else:
                            peak, launch = run_cli(inv, tmp)
                        rec = u.recorded(name)
                        t0 = time.perf_counter()
                        summary = launcher.stop(name, purge=True)
                        stop = time.perf_counter() - t0
                        left = u.session_members(rec) + u.cluster_processes(name)
                        rows[mode].append({"peak": peak, "launch": launch, "stop": stop, "left": left,
                                           "stopped": summary["stopped"]})
                        print(f"  repeat {r + 1} {mode}: peak RSS {peak / MiB:6.1f} MiB, launch {launch:6.1f} s, "
                              f"stop {stop:5.2f} s ({summary['stopped']} processes), left {len(left)}", flush=True)
                    except Exception:
                        traceback.print_exc()
                        print(f"  repeat {r + 1} {mode}: FAILED (see above)", flush=True)
                        try:
                            launcher.stop(name, purge=True)
                        except Exception:
                            pass
        except BaseException:
            crashed = True
            traceback.print_exc()
        finally:
            u.stop_all(names)  # anything a failed run left recorded
            tb.close()
        base = {m: baseline(m) for m in ("sys", "distributed", "launcher")}
        report(figures, rows, base, hosts, per_host)
    clean = u.final_check(names=names, markers=[f"bm{os.getpid()}"])
    return figures.exit_code(crashed or not clean)


def report(figures, rows, base, hosts, per_host):
    print()
    for mode, v in rows.items():
        if not v:
            continue
        peaks = [r["peak"] / MiB for r in v]
        m = u.median(peaks)
        what = "launcher.launch in a subprocess (VmHWM)" if mode == "api" else "pyku-launch CLI (ru_maxrss)"
        figures.line(mode, f"peak RSS of {what}, {hosts} x {per_host} workers: {m:.1f} MiB (median of {len(v)}: "
                     f"{u.fmt_runs(peaks, 'MiB')}; target < 150 MiB: {u.verdict(m < 150)})")
        print(f"    launch median {u.median([r['launch'] for r in v]):.1f} s, stop median "
              f"{u.median([r['stop'] for r in v]):.2f} s, processes left after stop: {sum(len(r['left']) for r in v)}")
    print("for scale, peak RSS of a bare interpreter: " + ", ".join(
        f"import {k} {b / MiB:.1f} MiB" for k, b in base.items()))


if __name__ == "__main__":
    sys.exit(main())
