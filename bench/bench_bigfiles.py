"""Benchmark: persistent_processing at scale (issue 13), three figures in one run.

1. Per-file cost against a hand-written floor.  ``--files`` yearly daily
   GER-0275 files (365 steps, 166 MiB in memory each) through the seed's
   ``preprocess`` (examples/preprocess.py), single-threaded, against a floor
   that does the same work by hand without xarray: netCDF4 read of T_2M and
   its time bounds, the same nearest-neighbour gather (pyku's own index,
   built beforehand, as pyku's is cached), Celsius to Kelvin, a zlib-1
   chunked write with the same chunk shape and the same static variables
   (copied from a pyku output made beforehand); no fsync.  Interleaved
   repeats, medians.  Target: <= 1.25 x.
2. A file 3 x one worker's memory_limit: 2 LocalCluster workers x
   ``--limit`` MiB, one daily input of ``--big-years`` years (~2 GiB in
   memory), the same ``preprocess``.  Every worker's RSS is sampled every
   50 ms (psutil, from this process); the task stream says which worker ran
   which piece; worker pids before and after tell restarts.  The same
   workers then process yearly files of the same grid, whose time per input
   byte is the reference.  Targets: completes, peak RSS <= 70 % of the
   limit, no restart, both workers used, wall <= 1.3 x the per-byte time of
   the yearly files.
3. The client's memory over 100 files: a separate client process (so the
   in-process scheduler of the LocalCluster is not counted) runs
   persistent_processing over ``--client-files`` small files on the same 2
   workers and samples its own RSS every 50 ms.  Target: flat, < 200 MiB
   of growth.

    python bench/bench_bigfiles.py [--repeats 3] [--files 3] [--limit 700] [--big-years 13] [--client-files 100]
                                   [--smoke]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import _report  # bench/ is the script's directory, so on sys.path
from launcher.testing.example import load_preprocess

ROOT = Path(__file__).resolve().parent.parent

MIB = 2**20


def main(argv=None) -> int:
    ap = _report.arguments(__doc__, smoke="1 repeat; files of 31 days instead of years; 1 for the floor, 2 as "
                                          "the big input; 3 for the client")
    ap.add_argument("--files", type=int, default=3, help="yearly files for the floor comparison")
    ap.add_argument("--days", type=int, default=None, help="days of each yearly file (default: the whole year)")
    ap.add_argument("--limit", type=int, default=700, help="memory_limit of each worker, MiB")
    ap.add_argument("--big-years", type=int, default=13, help="years of the big daily input")
    ap.add_argument("--client-files", type=int, default=100, help="files of the client-memory run")
    ap.add_argument("--only", default="floor,big,client")
    args = _report.smoke_defaults(ap, argv, repeats=1, files=1, big_years=2, days=31, client_files=3)
    parts = args.only.split(",")
    figures = _report.Figures("bigfiles", [k for part, keys in (("floor", ("floor",)), ("big", ("big", "per-byte")),
                                                                ("client", ("client",)))
                                           if part in parts for k in keys])
    print(_report.machine_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-bigfiles-") as tmp:
        tmp = Path(tmp)
        # The workers' temporary files too (a worker its nanny had to kill leaves its pymp-* directory).
        os.environ["TMPDIR"] = str(tmp)
        tempfile.tempdir = None
        if "floor" in parts:
            floor(figures, tmp / "floor", args)
        if "big" in parts or "client" in parts:
            on_cluster(figures, tmp / "cluster", args, parts)
    return figures.exit_code()


# --------------------------------------------------------------------------- 1. floor


def floor(figures, tmp, args):
    import pyku  # noqa: F401
    import pyku.compute as compute
    import pyku.resources as resources

    preprocess = load_preprocess()
    files = resources.write_sample_files(tmp / "in", variables=("tas",), years=range(1980, 1980 + args.files),
                                         days=args.days)
    reference = compute.persistent_processing(preprocess, files[:1], tmp / "reference", parallel=False)[0]
    static, index = floor_setup(files[0], reference)
    pyku_s, floor_s = [], []
    for r in range(args.repeats):
        for mode in ("pyku", "floor") if r % 2 == 0 else ("floor", "pyku"):
            out = tmp / f"out-{mode}-{r}"
            out.mkdir()
            t0 = time.perf_counter()
            if mode == "pyku":
                compute.persistent_processing(preprocess, files, out, parallel=False)
            else:
                for f in files:
                    floor_one(f, out / Path(f).name, static, index)
            elapsed = (time.perf_counter() - t0) / len(files)
            (pyku_s if mode == "pyku" else floor_s).append(elapsed)
            print(f"  repeat {r + 1} {mode:5s}: {elapsed:.2f} s per file", flush=True)
            shutil.rmtree(out)
    p, f = _report.median(pyku_s), _report.median(floor_s)
    steps = f"{args.days} days" if args.days else "a year"
    figures.line("floor", f"per daily file ({steps} of 346 x 328 -> HYR-LAEA-5), pyku / hand-written floor "
                 f"{p / f:.2f} x ({p:.2f} vs {f:.2f} s, median of {args.repeats}: pyku {_report.fmt_runs(pyku_s)}, "
                 f"floor {_report.fmt_runs(floor_s)}; target <= 1.25 x: {_report.verdict(p / f <= 1.25)})")


def floor_setup(first_input, reference):
    """The static variables of a pyku output, and the neighbour index pyku uses (built once, as pyku's)."""
    import netCDF4
    import xarray as xr

    from pyku import geo, get_grid, regrid

    with xr.open_dataset(first_input) as ds:
        source, _, _ = geo.source_grid(ds)
    index = regrid.get_index(source, get_grid("HYR-LAEA-5"), "nearest_neighbor")
    static = {}
    with netCDF4.Dataset(reference) as nc:
        for name, var in nc.variables.items():
            if "time" not in var.dimensions:
                static[name] = (var.dimensions, var.dtype, var[...].data if var.ndim else var.getValue(),
                                {a: var.getncattr(a) for a in var.ncattrs()})
        dims = {d: len(v) for d, v in nc.dimensions.items()}
        tas = nc["tas"]
        layout = (tas.chunking(), {a: tas.getncattr(a) for a in tas.ncattrs()},
                  {a: nc["time"].getncattr(a) for a in nc["time"].ncattrs()}, dims)
    return (static, layout), index


def floor_one(src, dst, static_layout, index):
    """The seed's preprocess by hand: read, gather, K, time labels from the lower bounds, write zlib-1."""
    import netCDF4
    import numpy as np

    static, (chunks, tas_attrs, time_attrs, dims) = static_layout
    with netCDF4.Dataset(src) as nc:
        nc.set_auto_mask(False)
        t2m = nc["T_2M"][...]
        bounds = nc["time_bnds"][...]
    out = index.apply(t2m)  # the gather, NaN where no neighbour: pyku's index applied as pyku does
    out = (out.astype("f8") + 273.15).astype("f4")
    with netCDF4.Dataset(dst, "w", format="NETCDF4") as nc:
        for d, n in dims.items():
            nc.createDimension(d, t2m.shape[0] if d == "time" else n)
        t = nc.createVariable("time", "f8", ("time",))
        t.setncatts(time_attrs)
        t[:] = bounds[:, 0]
        tb = nc.createVariable("time_bnds", "f8", ("time", "bnds"))
        tb[:] = bounds
        for name, (vdims, dtype, values, attrs) in static.items():
            v = nc.createVariable(name, dtype, vdims)
            v.setncatts({k: a for k, a in attrs.items() if k != "_FillValue"})
            v[...] = values
        fill = tas_attrs.get("_FillValue", np.float32(np.nan))
        v = nc.createVariable("tas", "f4", ("time", "y", "x"), zlib=True, complevel=1, shuffle=True,
                              chunksizes=(t2m.shape[0],) + tuple(chunks[1:]), fill_value=fill)
        v.setncatts({k: a for k, a in tas_attrs.items() if k != "_FillValue"})
        v[:] = out


# --------------------------------------------------------------------------- 2./3. on a cluster


def on_cluster(figures, tmp, args, parts):
    import dask
    import distributed

    preprocess = load_preprocess()
    with dask.config.set({"temporary-directory": str(tmp / "dask")}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=f"{args.limit}MiB",
                                     dashboard_address=":0", local_directory=tmp / "dask") as cluster, \
            distributed.Client(cluster) as client:
        client.run(lambda: __import__("pyku.compute"))
        if "big" in parts:
            big_file(figures, tmp, args, client, preprocess)
        if "client" in parts:
            client_memory(figures, tmp, cluster.scheduler_address, args.client_files)


def write_big_input(tmp, years, days=None):
    """One daily file of ``years`` years (``days`` of each), written year by year (never all in memory here)."""
    import dask
    import xarray as xr

    import pyku.resources as resources

    yearly = resources.write_sample_files(tmp / "years", variables=("tas",), years=range(1980, 1980 + years),
                                          days=days)
    big = tmp / "tas_big.nc"
    with xr.open_mfdataset(yearly, combine="nested", concat_dim="time", data_vars="minimal",
                           coords="minimal", compat="override", chunks={"time": days or 365}) as ds, \
            dask.config.set(scheduler="synchronous"):  # here, not on the workers being measured
        ds.to_netcdf(big)
    return str(big), yearly


def big_file(figures, tmp, args, client, preprocess):
    import psutil
    import xarray as xr
    from distributed import get_task_stream

    import pyku.compute as compute

    t0 = time.perf_counter()
    big, yearly = write_big_input(tmp, args.big_years, args.days)
    with xr.open_dataset(big) as ds:
        nbytes = ds.nbytes
    limit = args.limit * MIB
    print(f"big input: {nbytes / MIB:.0f} MiB in memory = {nbytes / limit:.1f} x a worker's limit "
          f"({args.limit} MiB); written in {time.perf_counter() - t0:.0f} s", flush=True)
    pids = client.run(os.getpid)
    sampler = RssSampler({a: psutil.Process(p) for a, p in pids.items()})
    with sampler, get_task_stream(client) as stream:
        t0 = time.perf_counter()
        outputs = compute.persistent_processing(preprocess, [big], tmp / "out-big")
        big_wall = time.perf_counter() - t0
    restarted = client.run(os.getpid) != pids
    workers = {r["worker"] for r in stream.data if str(r["key"]).startswith("pyku-piece")}
    small_n = min(len(yearly), 4)
    with xr.open_mfdataset(yearly[:small_n], combine="nested", concat_dim="time", data_vars="minimal",
                           coords="minimal", compat="override") as ds:
        small_bytes = ds.nbytes
    t0 = time.perf_counter()
    compute.persistent_processing(preprocess, yearly[:small_n], tmp / "out-small")
    small_wall = time.perf_counter() - t0
    per_byte_big, per_byte_small = big_wall / nbytes, small_wall / small_bytes
    peak = max(sampler.peak.values())
    ok = peak <= 0.7 * limit and not restarted and len(workers) == 2
    figures.line("big", f"{nbytes / MIB:.0f} MiB in memory = {nbytes / limit:.1f} x a worker's limit on 2 workers x "
                 f"{args.limit} MiB: {len(outputs)} pieces in {big_wall:.1f} s; peak RSS per worker "
                 + ", ".join(f"{v / MIB:.0f} MiB" for v in sampler.peak.values())
                 + f" = {peak / limit:.0%} of the limit; restarted: {restarted}; workers that ran pieces: "
                 f"{len(workers)} (targets <= 70 %, no restart, both workers: {_report.verdict(ok)})")
    ratio = per_byte_big / per_byte_small
    figures.line("per-byte", f"big file {per_byte_big * MIB:.3f} s/MiB, {small_n} yearly files "
                 f"{per_byte_small * MIB:.3f} s/MiB ({small_wall:.1f} s) -> {ratio:.2f} x "
                 f"(target <= 1.3 x: {_report.verdict(ratio <= 1.3)})")


class RssSampler:
    """Peak RSS of some processes, sampled every ``interval`` s in a thread."""

    def __init__(self, processes, interval=0.05):
        self.processes, self.interval = processes, interval
        self.peak = {k: 0 for k in processes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for key, proc in self.processes.items():
                try:
                    self.peak[key] = max(self.peak[key], proc.memory_info().rss)
                except Exception:
                    pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


CLIENT = """
import os, sys, threading, time
sys.path[:0] = [{root!r}]
import psutil
from distributed import Client
import pyku, pyku.compute as compute, pyku.resources as resources
from launcher.testing.example import load_preprocess

files = resources.write_sample_files({inputs!r}, variables=("tas",), years=range(1900, 1900 + {nfiles}), days=30,
                                     coarsen=4)
me, samples, done = psutil.Process(), [], threading.Event()
def sample():
    while not done.is_set():
        samples.append((time.monotonic(), me.memory_info().rss))
        done.wait(0.05)
with Client({address!r}) as client:
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    outputs = compute.persistent_processing(load_preprocess(), files, {out!r}, progress=False)
    done.set(); sampler.join()
first = [r for t, r in samples if t - t0 < 0.1 * (samples[-1][0] - t0)]
print(len(files), len(outputs), first[0] if first else samples[0][1], max(first) if first else samples[0][1],
      max(r for t, r in samples), samples[-1][1], samples[-1][0] - t0)
"""


def client_memory(figures, tmp, address, nfiles):
    script = CLIENT.format(root=str(ROOT), inputs=str(tmp / "small-in"), address=address, out=str(tmp / "small-out"),
                           nfiles=nfiles)
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                         timeout=900)
    if run.returncode != 0:
        print("CLIENT run failed:\n" + run.stderr[-3000:])
        return
    n, pieces, start, early, peak, end, wall = run.stdout.split()[-7:]
    start, early, peak, end = (int(x) / MIB for x in (start, early, peak, end))
    growth = peak - early
    figures.line("client", f"{n} files ({pieces} pieces) in {float(wall):.1f} s: client RSS {start:.0f} MiB at the start, {early:.0f} MiB "
                 f"peak in the first 10 % of the run, {peak:.0f} MiB peak, {end:.0f} MiB at the end -> growth "
                 f"{growth:.0f} MiB (target flat, < 200 MiB: {_report.verdict(growth < 200)})")


if __name__ == "__main__":
    sys.exit(main())
