"""Benchmark: pyku's nearest-neighbour project() against pyresample's kd_tree.

A year of daily float32 fields (365 steps) on the seed's 0.0275° rotated-pole
CCLM grid (328 x 346) goes to HYR-LAEA-5 (258 x 220), with the same radius
of influence in both libraries: pyku's default of 1000 km (project() as
pyku users call it; pyku 1.1.x hands that roi to pyresample).
Two timings each, medians of --repeats runs:

* one-shot: neighbour search included (pyku with an empty cache;
  ``pyresample.kd_tree.resample_nearest``);
* reuse: neighbours already known (pyku's cached index;
  ``get_sample_from_neighbour_info`` with precomputed neighbour info),
  which is what every further file on the same grid costs.

pyresample gets its preferred (rows, cols, time) layout prepared outside the
timing.  The script also checks that repeated project() calls build the
neighbour index once, and how often the two libraries pick the same cell.

    python bench/bench_project.py [--repeats 3] [--days 365] [--smoke]
"""

import statistics
import sys
import time

import numpy as np

import _report  # bench/ is the script's directory, so on sys.path

import pyku  # noqa: F401  (the accessor)
from pyku import regrid, resources

TARGET = "HYR-LAEA-5"


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def bench_pyku(ds, repeats):
    def one_shot():
        regrid.clear_cache()
        return ds.pyku.project(TARGET).T_2M.values

    one, one_all, out = timed(one_shot, repeats)
    regrid.clear_cache()
    ds.pyku.project(TARGET)  # builds the index, untimed
    reuse, reuse_all, _ = timed(lambda: ds.pyku.project(TARGET).T_2M.values, repeats)
    info = regrid.cache_info()
    assert info["builds"] == 1 and info["hits"] == repeats, info
    return one, reuse, one_all, reuse_all, out, info


def bench_pyresample(ds, repeats):
    from pyresample import geometry, kd_tree

    grid = pyku.get_grid(TARGET)
    lon, lat = ds.lon.values, ds.lat.values
    source = geometry.SwathDefinition(lons=lon, lats=lat)
    target = geometry.AreaDefinition(
        TARGET, TARGET, "laea", grid.pyproj_crs, grid.nx, grid.ny,
        (grid.x0 - grid.dx / 2, grid.y[-1] + grid.dy / 2, grid.x[-1] + grid.dx / 2, grid.y0 - grid.dy / 2))
    # The same radius of influence: pyku's default, which pyku 1.1.x passes to pyresample.
    radius = regrid.DEFAULT_ROI
    data = np.ascontiguousarray(np.moveaxis(ds.T_2M.values, 0, -1))  # (rows, cols, time)

    one, one_all, out = timed(lambda: kd_tree.resample_nearest(
        source, data, target, radius_of_influence=radius, fill_value=np.nan), repeats)
    info = kd_tree.get_neighbour_info(source, target, radius, neighbours=1)
    reuse, reuse_all, _ = timed(lambda: kd_tree.get_sample_from_neighbour_info(
        "nn", target.shape, data, *info, fill_value=np.nan), repeats)
    return one, reuse, one_all, reuse_all, np.moveaxis(out, -1, 0)


def main(argv=None):
    parser = _report.arguments(__doc__, smoke="10 daily steps")
    parser.add_argument("--days", type=int, default=365)
    args = _report.smoke_defaults(parser, argv, days=10)
    if args.repeats < 3:
        parser.error("--repeats must be at least 3")
    figures = _report.Figures("project", ("nearest",))

    start = time.perf_counter()
    ds = resources.sample_dataset("tas", days=args.days)
    print(f"source CCLM 0.0275° {ds.sizes['rlon']} x {ds.sizes['rlat']}, {args.days} daily float32 steps "
          f"({ds.T_2M.nbytes / 2**20:.0f} MiB), made in {time.perf_counter() - start:.1f} s; "
          f"target {TARGET}; medians of {args.repeats} runs")

    p_one, p_reuse, p_one_all, p_reuse_all, p_out, info = bench_pyku(ds, args.repeats)
    print(f"pyku project(), one-shot (index built) : {p_one:7.3f} s   runs {fmt(p_one_all)}")
    print(f"pyku project(), index reused           : {p_reuse:7.3f} s   runs {fmt(p_reuse_all)}")
    print(f"pyku neighbour index: built {info['builds']} time(s) for {args.repeats + 1} calls "
          f"({info['hits']} cache hits, {info['nbytes'] / 2**20:.1f} MiB)")

    try:
        import pyresample
    except ImportError:
        print("pyresample is NOT installed: no comparison (pip install pyresample)")
        return figures.exit_code()
    r_one, r_reuse, r_one_all, r_reuse_all, r_out = bench_pyresample(ds, args.repeats)
    print(f"pyresample {pyresample.__version__} resample_nearest       : {r_one:7.3f} s   runs {fmt(r_one_all)}")
    print(f"pyresample get_sample_from_neighbour_info: {r_reuse:7.3f} s   runs {fmt(r_reuse_all)}")
    both = np.isfinite(p_out) & np.isfinite(r_out)
    same_mask = np.mean(np.isfinite(p_out[0]) == np.isfinite(r_out[0]))
    same_value = np.mean(p_out[both] == r_out[both])
    print(f"agreement: valid-cell masks {same_mask:.4%}, identical values where both valid {same_value:.4%}")
    ratio = r_one / p_one
    figures.line("nearest", f"{args.days} daily steps, pyresample {pyresample.__version__} / pyku: one-shot "
                 f"{ratio:.2f} x ({r_one:.3f} vs {p_one:.3f} s), reuse {r_reuse / p_reuse:.2f} x ({r_reuse:.3f} vs "
                 f"{p_reuse:.3f} s), medians of {args.repeats}; index built {info['builds']} time(s); identical "
                 f"values {same_value:.4%} (target one-shot >= 1.5 x: {_report.verdict(ratio >= 1.5)})")
    return figures.exit_code()


def fmt(times):
    return " ".join(f"{t:.3f}" for t in times)


if __name__ == "__main__":
    sys.exit(main())
