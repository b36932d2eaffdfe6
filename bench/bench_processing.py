"""Benchmark: persistent_processing on a launched 2-worker cluster vs single-threaded.

16 generated CCLM-like sample files (``pyku.resources.write_sample_files``:
tas and pr, ``--years`` 8 years, ``--days`` days each, GER-0275 328 x 346) go through
the seed's ``preprocess`` (examples/preprocess.py, loaded from that file:
project to HYR-LAEA-5, time labels, CMOR names and units), per repeat and in
the same run:

* cold, on a cluster launched by ``launcher.launch`` on this script's own
  sshd testbed (scheduler 127.0.0.2, 2 workers x 1 thread on 127.0.0.3);
* cold, single-threaded in this process (no client);
* fully cached re-runs of both (every output exists: only the cache keys,
  which hash each input's content, are computed).

Each cold run starts with pyku's neighbour-index cache cleared in every
process (so each builds the index once, as a fresh run does); the workers
have imported pyku beforehand, as this process has.  The outputs of both
modes are compared byte for byte.  Targets: cluster >= 1.7 x
faster than single-threaded; a cached re-run <= 5 % of the cold run.

    python bench/bench_processing.py [--repeats 3] [--days 31] [--years 8] [--smoke]
"""

from __future__ import annotations

import hashlib
import resource
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import _util as u  # bench/ is the script's directory, so on sys.path
from launcher.testing.example import load_preprocess


def _spin(n):
    x = 0
    for i in range(n):
        x += i * i
    return x


def parallel_capacity(n=4_000_000):
    """How much faster 2 processes finish 2 units of pure-Python CPU work than 1 process: 2.0 on an idle
    2-core machine, less when other work takes CPU (the ceiling of any 2-worker speed-up right now)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    t0 = time.perf_counter()
    _spin(n)
    _spin(n)
    one = time.perf_counter() - t0
    with ctx.Pool(2) as pool:
        t0 = time.perf_counter()
        pool.map(_spin, [n, n])
        two = time.perf_counter() - t0
    return one / two


def digests(paths):
    return [hashlib.blake2b(Path(p).read_bytes(), digest_size=8).hexdigest() for p in paths]


def main(argv=None) -> int:
    ap = u.arguments(__doc__, smoke="1 repeat, 2 files of 4 days")
    ap.add_argument("--days", type=int, default=31, help="days per sample file (default 31, as the example)")
    ap.add_argument("--years", type=int, default=8, help="years of sample files, 2 files each (default 8)")
    args = u.smoke_defaults(ap, argv, repeats=1, days=4, years=1)
    if not u.ready():
        return 1
    figures = u.Figures("processing", ("speed-up", "cached"))
    import pyku  # noqa: F401
    import pyku.compute as compute
    import pyku.resources as resources
    from pyku import regrid

    preprocess = load_preprocess()
    crashed = False
    name = f"bp{os.getpid()}"
    rows = {"cluster": [], "single": [], "cluster cached": [], "single cached": [], "capacity": []}
    with u.private_state("bench-processing-") as tmp:
        t0 = time.perf_counter()
        files = resources.write_sample_files(tmp / "input", variables=("tas", "pr"), years=range(1980, 1980 + args.years),
                                             days=args.days)
        size = sum(os.path.getsize(f) for f in files)
        print(f"{len(files)} input files of {args.days} days ({size / 2**20:.0f} MiB) written in "
              f"{time.perf_counter() - t0:.1f} s")
        tb = u.start_testbed(n_hosts=2)
        rec = None
        try:
            import launcher

            inv = u.write_inventory(tmp / "hosts.toml", tb, name=name, workers=(1,), nworkers=2,
                                    memory_limit="2GiB")
            rec = launcher.launch(inv)
            client = launcher.connect(name)
            print(f"cluster: {rec.scheduler}, 2 workers x 1 thread on {tb.addresses[1]} (launched in "
                  f"{rec.launch_seconds:.1f} s); single-threaded: this process; {args.repeats} repeats")

            def warm():
                import pyku  # noqa: F401
                import pyku.compute  # noqa: F401
                import pyku.regrid  # noqa: F401
                return os.getpid()

            client.run(warm)
            reference = None
            capacity = rows["capacity"]
            try:
                for r in range(args.repeats):
                    for mode in ("cluster", "single") if r % 2 == 0 else ("single", "cluster"):
                        out = tmp / f"out-{mode}-{r}"
                        regrid.clear_cache()
                        client.run(regrid.clear_cache)
                        parallel = None if mode == "cluster" else False
                        cap = parallel_capacity()
                        capacity.append(cap)
                        ru0 = resource.getrusage(resource.RUSAGE_SELF)
                        t0 = time.perf_counter()
                        outputs = compute.persistent_processing(func=preprocess, files=files, tmpdir=out,
                                                                parallel=parallel)
                        cold = time.perf_counter() - t0
                        ru1 = resource.getrusage(resource.RUSAGE_SELF)
                        cpu = (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) / cold
                        t0 = time.perf_counter()
                        again = compute.persistent_processing(func=preprocess, files=files, tmpdir=out,
                                                              parallel=parallel)
                        cached = time.perf_counter() - t0
                        assert again == outputs, "the cached re-run returned other files"
                        d = digests(outputs)
                        if reference is None:
                            reference = d
                        same = d == reference
                        rows[mode].append(cold)
                        rows[f"{mode} cached"].append(cached)
                        print(f"  repeat {r + 1} {mode:7s}: cold {cold:6.2f} s, cached re-run {cached:6.3f} s "
                              f"({cached / cold:.1%}), outputs identical to the first run: {same}; "
                              f"this process used {cpu:.2f} CPU-s/s; machine's 2-process capacity just before: "
                              f"{cap:.2f} x", flush=True)
                        if not same:
                            print("    OUTPUTS DIFFER")
                        shutil.rmtree(out)
            finally:
                client.close()
        except BaseException:
            crashed = True
            traceback.print_exc()
        finally:
            import launcher

            if rec is not None or u.recorded(name) is not None:
                try:
                    launcher.stop(name, purge=True)
                except Exception:
                    traceback.print_exc()
            tb.close()
        report(figures, rows, len(files))
    clean = u.final_check(names=[name], markers=[name])
    return figures.exit_code(crashed or not clean)


def report(figures, rows, nfiles):
    if not rows["cluster"] or not rows["single"]:
        return
    c, s = u.median(rows["cluster"]), u.median(rows["single"])
    cc, sc = u.median(rows["cluster cached"]), u.median(rows["single cached"])
    print()
    print(f"cold run, {nfiles} files, median: cluster (2 workers) {c:.2f} s (runs {u.fmt_runs(rows['cluster'])}), "
          f"single-threaded {s:.2f} s (runs {u.fmt_runs(rows['single'])})")
    figures.line("speed-up", f"{nfiles} files, cluster of 2 workers / single-threaded: {s / c:.2f} x ({c:.2f} vs "
                 f"{s:.2f} s, median of {len(rows['cluster'])}; the machine's own 2-process speed-up before each "
                 f"run: median {u.median(rows['capacity']):.2f} x; target >= 1.7 x: {u.verdict(s / c >= 1.7)})")
    print("cached re-run, median: cluster %.3f s (runs %s), single-threaded %.3f s (runs %s)" % (
        cc, " ".join(f"{x:.3f}" for x in rows["cluster cached"]), sc,
        " ".join(f"{x:.3f}" for x in rows["single cached"])))
    figures.line("cached", f"a fully cached re-run: {cc / c:.1%} of the cold run on the cluster ({cc:.3f} s), "
                 f"{sc / s:.1%} single-threaded ({sc:.3f} s) (target <= 5 %: {u.verdict(cc / c <= 0.05)}, "
                 f"{u.verdict(sc / s <= 0.05)})")


if __name__ == "__main__":
    sys.exit(main())
