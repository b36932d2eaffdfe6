"""Benchmark: pyku's bilinear, idw and conservative project() against pyresample's closest.

Daily float32 fields on the 0.0275° rotated-pole CCLM grid (328 x 346) go to
HYR-LAEA-5 (258 x 220).  Peers, from the package registries (xESMF, pyku's
own conservative backend, needs ESMF's esmpy, which PyPI does not carry):

* bilinear     - ``pyresample.bilinear.NumpyBilinearResampler``, roi 1000 km, 32 neighbours
                 (pyku 1.1.x uses pyresample's bilinear with these);
* idw          - ``pyresample.kd_tree`` custom weights 1/d**2, 8 neighbours, roi 1000 km (pyku 1.1.x);
* conservative - ``pyresample.bucket.BucketResampler.get_average``: the mean of the source
                 points whose centre falls in a target cell (pyresample has no
                 area-conservative method; this is the nearest in spirit).

Two timings each, medians of --repeats runs: one-shot (weights built) and
reuse (weights known: pyku's cache; pyresample's precomputed neighbour or
bilinear info; the bucket resampler has no reusable state).  Also: mean
absolute difference between the two results where both are valid.

    python bench/bench_regrid_methods.py [--repeats 3] [--days 31] [--smoke]
"""

import sys
import warnings
from pathlib import Path

import numpy as np

try:
    import pyku
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _report  # bench/ is on sys.path when run as a script
import bench_project  # its timer

import pyku
from pyku import regrid, resources

TARGET = "HYR-LAEA-5"
ROI = 1e6
POWER = 2.0


def timed(fn, repeats):
    """Median seconds of ``repeats`` runs, and the last result."""
    median, _, result = bench_project.timed(fn, repeats)
    return median, result


def bench_pyku(ds, method, repeats):
    kwargs = {"power_parameter": POWER} if method == "idw" else {}

    def one_shot():
        regrid.clear_cache()
        return ds.pyku.project(TARGET, method=method, **kwargs).T_2M.values

    one, out = timed(one_shot, repeats)
    reuse, _ = timed(lambda: ds.pyku.project(TARGET, method=method, **kwargs).T_2M.values, repeats)
    return one, reuse, out


def bench_pyresample(ds, method, repeats):
    from pyresample import bilinear, geometry, kd_tree
    from pyresample.bucket import BucketResampler

    area = pyku.geo.load_area_def(TARGET)
    target = geometry.AreaDefinition(TARGET, TARGET, TARGET, area.proj_str, area.width, area.height,
                                     area.area_extent)
    lon, lat = ds.lon.values, ds.lat.values
    source = geometry.SwathDefinition(lons=lon, lats=lat)
    stack = np.ascontiguousarray(np.moveaxis(ds.T_2M.values, 0, -1))  # (rows, cols, time)
    if method == "bilinear":
        def one_shot():  # weights once, then every step (resample() would redo them per step)
            fresh = bilinear.NumpyBilinearResampler(source, target, ROI, neighbours=32)
            fresh.get_bil_info()
            return np.stack([fresh.get_sample_from_bil_info(step, fill_value=np.nan,
                                                            output_shape=target.shape)
                             for step in ds.T_2M.values])

        resampler = bilinear.NumpyBilinearResampler(source, target, ROI, neighbours=32)
        resampler.get_bil_info()

        def reuse():
            return np.stack([resampler.get_sample_from_bil_info(step, fill_value=np.nan,
                                                                output_shape=target.shape)
                             for step in ds.T_2M.values])
    elif method == "idw":
        funcs = [lambda r: 1.0 / np.maximum(r, 1e-6) ** POWER] * stack.shape[-1]

        def one_shot():
            out = kd_tree.resample_custom(source, stack, target, ROI, funcs, neighbours=8, fill_value=np.nan)
            return np.moveaxis(out, -1, 0)

        info = kd_tree.get_neighbour_info(source, target, ROI, neighbours=8)

        def reuse():
            out = kd_tree.get_sample_from_neighbour_info("custom", target.shape, stack, *info,
                                                         weight_funcs=funcs, fill_value=np.nan)
            return np.moveaxis(out, -1, 0)
    else:
        import dask.array as da

        def one_shot():  # the bucket resampler wants dask arrays
            bucket = BucketResampler(target, da.from_array(lon), da.from_array(lat))
            return np.stack([bucket.get_average(da.from_array(step)).compute()
                             for step in ds.T_2M.values])

        reuse = one_shot
    one, out = timed(one_shot, repeats)
    again, _ = timed(reuse, repeats)
    return one, again, out


def main(argv=None):
    parser = _report.arguments(__doc__, smoke="1 repeat of 2 daily steps")
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--methods", default="bilinear,idw,conservative")
    args = _report.smoke_defaults(parser, argv, repeats=1, days=2)
    methods = args.methods.split(",")
    figures = _report.Figures("regrid", methods)
    warnings.filterwarnings("ignore")
    ds = resources.sample_dataset("tas", days=args.days)
    print(f"source {ds.sizes['rlon']} x {ds.sizes['rlat']} rotated pole, {args.days} daily float32 steps; "
          f"target {TARGET}; medians of {args.repeats} runs")
    import pyresample
    print(f"{'method':13s} {'pyku one-shot':>14s} {'pyku reuse':>11s} {'pyresample ' + pyresample.__version__:>18s}"
          f" {'its reuse':>10s} {'ratio 1-shot':>13s} {'ratio reuse':>12s} {'mean |diff|':>12s}")
    for method in methods:
        p_one, p_reuse, p_out = bench_pyku(ds, method, args.repeats)
        r_one, r_reuse, r_out = bench_pyresample(ds, method, args.repeats)
        both = np.isfinite(p_out) & np.isfinite(r_out)
        diff = np.abs(p_out[both] - r_out[both]).mean() if both.any() else float("nan")
        print(f"{method:13s} {p_one:13.3f}s {p_reuse:10.3f}s {r_one:17.3f}s {r_reuse:9.3f}s "
              f"{r_one / p_one:12.2f}x {r_reuse / p_reuse:11.2f}x {diff:11.4f}K")
        figures.line(method, f"{args.days} daily steps, pyresample / pyku: one-shot {r_one / p_one:.2f} x "
                     f"({r_one:.3f} vs {p_one:.3f} s), reuse {r_reuse / p_reuse:.2f} x ({r_reuse:.3f} vs "
                     f"{p_reuse:.3f} s), medians of {args.repeats}; mean |diff| {diff:.4f} K")
    print("ratio = pyresample / pyku time (> 1: pyku faster)")
    return figures.exit_code()


if __name__ == "__main__":
    sys.exit(main())
