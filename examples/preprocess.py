"""The seed's preprocessing example, on generated CCLM-like sample files.

    python examples/preprocess.py                 # single-threaded
    python examples/preprocess.py --local         # LocalCluster, 2 workers x 1 thread
    python examples/preprocess.py --cluster [NAME]      # the cluster started by `pyku-launch`
    PYKU_CLUSTER=NAME python examples/preprocess.py     # the same (launcher.connect reads it)

The pyku code is the same in every mode: ``persistent_processing`` uses the
current distributed client if there is one.  The printed checksums let you
check that every mode writes identical files.  With ``--outdir`` the inputs
and outputs are kept, and a second run skips the work already done; on a
multi-host cluster that directory must be visible to every worker.
"""

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

try:
    import pyku  # noqa: F401
except ImportError:  # a checkout without `pip install -e ./pyku-bundled`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xarray as xr

import pyku  # noqa: F401,E402  (registers the .pyku accessor)
import pyku.compute as compute  # noqa: E402
import pyku.resources as resources  # noqa: E402


def preprocess(ds):
    ds = ds.pyku.project('HYR-LAEA-5')
    ds = ds.pyku.set_time_labels_from_time_bounds(how='lower')
    ds = ds.pyku.to_cmor_varnames()
    ds = ds.pyku.to_cmor_units()
    return ds


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--cluster", nargs="?", const="", default=None, metavar="NAME",
                      help="connect to the cluster started by pyku-launch (launcher.connect)")
    mode.add_argument("--local", action="store_true", help="run on a LocalCluster(2 workers x 1 thread)")
    parser.add_argument("--outdir", help="keep inputs and outputs here (default: a temporary directory)")
    parser.add_argument("--years", type=int, default=2, help="years of sample data (default 2)")
    parser.add_argument("--days", type=int, default=31, help="days per sample file (default 31)")
    args = parser.parse_args(argv)
    if args.cluster is None and not args.local and os.environ.get("PYKU_CLUSTER") is not None:
        args.cluster = ""  # launcher.connect() takes the name from PYKU_CLUSTER itself
    return args


def start_client(args):
    """(client, description); client is None for single-threaded runs."""
    if args.cluster is not None:
        try:
            from launcher import connect
        except ImportError as exc:
            raise SystemExit(f"--cluster/PYKU_CLUSTER needs the launcher package "
                             f"(pip install -e .): {exc}") from None
        try:
            client = connect(args.cluster or None)
        except Exception as exc:  # the launcher's errors name the cluster and what to do
            raise SystemExit(f"cannot connect to the cluster: {exc}") from None
        return client, f"cluster at {client.scheduler.address}"
    if args.local:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
        return Client(cluster), "LocalCluster (2 workers x 1 thread)"
    return None, "single-threaded"


def summary(path):
    with xr.open_dataset(path) as ds:
        name = next(n for n in ds.data_vars if "grid_mapping" in ds[n].attrs)
        var = ds[name]
        valid = float(var.notnull().mean())
        stats = f"min {float(var.min()):.4g} mean {float(var.mean()):.4g} max {float(var.max()):.4g}"
        digest = hashlib.blake2b(Path(path).read_bytes(), digest_size=8).hexdigest()
        return (f"{name:>4} {dict(var.sizes)} [{var.attrs.get('units')}] {stats}, "
                f"{valid:.0%} of cells with a value (pyku fills up to roi = 1000 km beyond the source), blake2b {digest}")


def main(argv=None):
    args = parse_args(argv)
    tempdir = tempfile.TemporaryDirectory(prefix="pyku-example-")
    workdir = Path(args.outdir) if args.outdir else Path(tempdir.name)
    files = resources.write_sample_files(workdir / "input", variables=("tas", "pr"),
                                         years=range(1980, 1980 + args.years), days=args.days,
                                         overwrite=False)
    # Dask's scratch space (LocalCluster, spilling) in our temporary directory, not /tmp.
    import dask

    dask.config.set({"temporary-directory": tempdir.name})
    client, mode = start_client(args)
    try:
        started = time.perf_counter()
        processed_files = compute.persistent_processing(func=preprocess, files=files,
                                                        tmpdir=str(workdir / "output"))
        elapsed = time.perf_counter() - started
    finally:
        if client is not None:
            cluster = getattr(client, "cluster", None)
            client.close()
            if args.local and cluster is not None:
                cluster.close()
    print(f"{len(files)} files of {args.days} days on GER-0275 -> HYR-LAEA-5, {mode}, {elapsed:.1f} s")
    for path in processed_files:
        print(path)
        print("    " + summary(path))
    tempdir.cleanup()


if __name__ == "__main__":
    main()
