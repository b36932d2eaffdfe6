"""Benchmark: repairing one host's workers vs launching them fresh, on real OpenSSH hosts.

Starts its own sshd testbed (127.0.0.2 = scheduler host, 127.0.0.3 = worker
host, both this machine). Per repeat, in the same run and on the same hosts:

* a fresh ``launcher.launch`` of the scheduler and one host of N workers
  (default 30): the peer, i.e. that host's share of a launch (the whole
  launch here, scheduler included, so the peer is if anything generous);
* ``kill -9`` of every process of that host's worker tree, a wait until the
  scheduler has noticed every worker gone (not timed), then
  ``launcher.launch`` of the same inventory again: the repair (connect,
  preflight, clean the dead tree's remains, start the tree, wait until the
  scheduler has all N workers);
* ``launcher.stop`` and a check that nothing is left.

Prints medians, the ratio and PASS/FAIL of the target (repair <= 1.5 x the
fresh launch). Exit code: 0 unless the script itself crashed.

    python bench/bench_repair.py [--repeats 3] [--nworkers 30] [--smoke]
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback

import _util as u  # bench/ is the script's directory, so on sys.path

TARGET = 1.5


def one_repeat(tb, tmp, name: str, n: int) -> dict:
    import launcher

    inv = u.write_inventory(tmp / f"{name}.toml", tb, name=name, workers=(1,), nworkers=n)
    t0 = time.perf_counter()
    rec = launcher.launch(inv)
    fresh = time.perf_counter() - t0
    try:
        tree = [h for h in rec.hosts if h.role == "workers"]
        for pid in u.session_members(tree):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 60
        while sum(h["live"] for h in launcher.status(name)["hosts"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        t0 = time.perf_counter()
        repaired = launcher.launch(inv)
        repair = time.perf_counter() - t0
        st = launcher.status(name)
        live = sum(h["live"] for h in st["hosts"] if h["role"] == "workers")
        assert repaired.applied, "the second launch did not repair anything"
    finally:
        launcher.stop(name, purge=True)
    left = u.session_members(rec) + u.cluster_processes(name)
    return {"fresh": fresh, "repair": repair, "live": live, "left": len(left)}


def main(argv=None) -> int:
    ap = u.arguments(__doc__, smoke="1 repeat of 2 workers")
    ap.add_argument("--nworkers", type=int, default=30)
    args = u.smoke_defaults(ap, argv, repeats=1, nworkers=2)
    if not u.ready():
        return 1
    figures = u.Figures("repair", ("repair",))
    rows, names, crashed = [], [], False
    with u.private_state("bench-repair-") as tmp:
        tb = u.start_testbed(n_hosts=2)
        print(f"testbed: scheduler on {tb.addresses[0]}, 1 host x {args.nworkers} workers on {tb.addresses[1]}, "
              f"{args.repeats} repeats")
        try:
            for r in range(args.repeats):
                name = f"brep{os.getpid()}r{r}"
                names.append(name)
                row = one_repeat(tb, tmp, name, args.nworkers)
                rows.append(row)
                print(f"  repeat {r + 1}: fresh launch {row['fresh']:6.2f} s, repair {row['repair']:6.2f} s, "
                      f"{row['live']}/{args.nworkers} workers after, {row['left']} processes left", flush=True)
        except Exception:
            traceback.print_exc()
            crashed = True
        finally:
            u.stop_all(names)
            clean = u.final_check(names)
            tb.close()
    if rows:
        fresh, repair = u.median([x["fresh"] for x in rows]), u.median([x["repair"] for x in rows])
        ratio = repair / fresh
        print(f"fresh launch: median {fresh:.2f} s ({u.fmt_runs([x['fresh'] for x in rows])})")
        print(f"repair:       median {repair:.2f} s ({u.fmt_runs([x['repair'] for x in rows])})")
        figures.line("repair", f"1 host x {args.nworkers} workers: repair / fresh launch {ratio:.2f} x ({repair:.2f} vs "
                     f"{fresh:.2f} s, median of {len(rows)}; target <= {TARGET} x: {u.verdict(ratio <= TARGET)})")
    return figures.exit_code(crashed or not clean)


if __name__ == "__main__":
    sys.exit(main())
