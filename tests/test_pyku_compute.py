"""persistent_processing: the seed's preprocessing of a file collection, kept on disk.

The same outputs single-threaded and on a LocalCluster, re-runs that only
redo what changed, and a run killed mid-write that a re-run completes.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from pathlib import Path

import cloudpickle
import netCDF4
import numpy as np
import pytest
import xarray as xr

import pyku
import pyku.compute as compute
import pyku.resources as resources
import pyku.writing as writing
from pyku import regrid
from launcher.testing.example import load_preprocess

REPO = Path(__file__).resolve().parents[1]


# The seed's preprocessing, exactly as examples/preprocess.py ships it.
preprocess = load_preprocess()


def counting(calls_dir):
    """A cheap func that leaves one marker file per call, wherever it runs."""
    def func(ds):
        (Path(calls_dir) / uuid.uuid4().hex).touch()
        return ds.pyku.to_cmor_varnames().pyku.to_cmor_units()
    return func


def in_kelvin(celsius):
    return (celsius.astype("f8") + 273.15).astype("f4")


def sample_files(directory, **kwargs):
    options = {"variables": ("tas", "pr"), "years": (1980, 1981), "days": 4, "coarsen": 8, **kwargs}
    return resources.write_sample_files(directory, **options)


def test_same_bytes_single_threaded_and_on_a_local_cluster(tmp_path):
    import dask
    import distributed

    files = sample_files(tmp_path / "in")
    sequential = compute.persistent_processing(preprocess, files, tmp_path / "seq")

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import tests/
    try:
        # Worker and scheduler scratch space under tmp_path, not /tmp/dask-scratch-space.
        with dask.config.set({"temporary-directory": str(tmp_path / "dask")}), \
                distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                         dashboard_address=":0", local_directory=tmp_path / "dask") as cluster, \
                distributed.Client(cluster) as client:
            client.run(regrid.clear_cache)
            parallel = compute.persistent_processing(preprocess, files, tmp_path / "par")
            per_worker = client.run(regrid.cache_info)
            # A file that fails on a worker is named; the others' results are kept.
            broken = tmp_path / "in" / "tas_broken.nc"
            broken.write_text("not a NetCDF file")
            with pytest.raises(pyku.ProcessingError, match="tas_broken.nc") as info:
                compute.persistent_processing(counting(str(tmp_path)), [files[0], str(broken), files[2]],
                                              tmp_path / "failing")
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])

    # Each worker process built the neighbour index at most once for 4 files.
    assert sum(info["builds"] for info in per_worker.values()) >= 1
    assert all(info["builds"] <= 1 for info in per_worker.values())
    assert sum(info["builds"] + info["hits"] for info in per_worker.values()) == len(files)
    assert [Path(p).name for p in sequential] == [Path(p).name for p in parallel]
    for a, b in zip(sequential, parallel):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    out = xr.open_dataset(sequential[1])
    assert set(out.data_vars) >= {"pr", "crs"} and out.pr.attrs["units"] == "kg m-2 s-1"
    assert out.time.values[0] == np.datetime64("1980-01-01T00:00")
    assert out.pr.encoding["chunksizes"][0] == out.sizes["time"]  # whole series per chunk
    outputs = info.value.outputs
    assert list(info.value.failures) == [str(broken)] and outputs[1] is None
    assert Path(outputs[0]).exists() and Path(outputs[2]).exists()
    assert xr.open_dataset(outputs[2]).tas.attrs["units"] == "K"


def units_only(ds):
    return ds.pyku.to_cmor_varnames().pyku.to_cmor_units()


def test_decode_coords_all_keeps_time_bounds_and_their_links(tmp_path):
    files = sample_files(tmp_path / "in", variables=("tas",), years=(1980,))
    opened = {"decode_coords": "all"}  # time_bnds and rotated_pole become coordinates
    [seed] = compute.persistent_processing(preprocess, files, tmp_path / "seed", open_kwargs=opened)
    [plain] = compute.persistent_processing(units_only, files, tmp_path / "plain", open_kwargs=opened)
    src = xr.open_dataset(files[0])
    with netCDF4.Dataset(seed) as nc:
        assert nc["time"].getncattr("bounds") == "time_bnds"
        assert nc["tas"].getncattr("grid_mapping") == "crs" and "rotated_pole" not in nc.variables
    out = xr.open_dataset(seed)
    np.testing.assert_array_equal(out.time.values, src.time_bnds.values[:, 0])  # lower bounds
    np.testing.assert_array_equal(out.time_bnds.values, src.time_bnds.values)
    with netCDF4.Dataset(plain) as nc:  # not projected: the source's links are written back
        assert nc["time"].getncattr("bounds") == "time_bnds"
        assert nc["tas"].getncattr("grid_mapping") == "rotated_pole" and "rotated_pole" in nc.variables


def project_only(ds):
    """The seed's chain without the units step, so the stored packing still fits the values."""
    ds = ds.pyku.project("HYR-LAEA-5", keep_mask=True)  # NaN outside the source: needs a fill value
    ds = ds.pyku.set_time_labels_from_time_bounds(how="lower")
    return ds.pyku.to_cmor_varnames()


def test_packed_input_stays_packed_and_coordinates_have_no_fill_value(tmp_path, monkeypatch):
    src = resources.sample_dataset("tas", days=4, coarsen=8)
    src["T_2M_nofill"] = src.T_2M.assign_attrs(long_name="packed without a fill value")
    src.T_2M.encoding.update(dtype="int16", scale_factor=0.01, add_offset=0.0, _FillValue=np.int16(-9999))
    src.T_2M_nofill.encoding = {"dtype": "int16", "scale_factor": 0.01}
    path = tmp_path / "tas_packed.nc"
    with warnings.catch_warnings():  # "... as an integer dtype without any _FillValue": no NaN here
        warnings.simplefilter("ignore", xr.SerializationWarning)
        src.to_netcdf(path)
    budget = 64 * 1024
    monkeypatch.setattr(writing, "CHUNK_BYTES", budget)

    [out] = compute.persistent_processing(project_only, [path], tmp_path / "out")

    with netCDF4.Dataset(out) as nc:
        for name, fill in (("tas", -9999), ("T_2M_nofill", netCDF4.default_fillvals["i2"])):
            var = nc[name]
            assert var.dtype == np.int16 and var.scale_factor == 0.01, name
            assert var._FillValue == fill, name  # NaN outside the source domain needs one
            chunk_bytes = np.prod(var.chunking()) * var.dtype.itemsize
            assert budget / 4 < chunk_bytes <= budget, (name, var.chunking())
            assert var.chunking()[0] == nc.dimensions["time"].size
        for name in ("time", "time_bnds", "x", "y", "lat", "lon"):
            assert "_FillValue" not in nc[name].ncattrs(), name
    expected = project_only(xr.open_dataset(path))
    got = xr.open_dataset(out)
    assert np.isnan(got.tas.values).any() and np.isfinite(got.tas.values).any()
    np.testing.assert_array_equal(got.tas.values, expected.tas.values)
    np.testing.assert_array_equal(got.T_2M_nofill.values, expected.T_2M_nofill.values)


def test_rerun_skips_files_already_done(tmp_path):
    files = sample_files(tmp_path / "in", years=(1980,))
    calls = tmp_path / "calls"
    calls.mkdir()
    first = compute.persistent_processing(counting(str(calls)), files, tmp_path / "out")
    stamps = [os.stat(p).st_mtime_ns for p in first]
    again = compute.persistent_processing(counting(str(calls)), files, tmp_path / "out")
    assert again == first
    assert len(list(calls.iterdir())) == len(files)  # the second run called func on nothing
    assert [os.stat(p).st_mtime_ns for p in again] == stamps


EDITABLE = """
def preprocess(ds):
    ds = ds.pyku.to_cmor_varnames()
    return ds.assign(tas=ds.tas + {offset})  {comment}
"""


def edition(offset, comment=""):
    namespace = {}
    exec(EDITABLE.format(offset=offset, comment=comment), namespace)
    return namespace["preprocess"]


def test_edited_func_recomputes_and_cosmetic_edits_do_not(tmp_path):
    files = sample_files(tmp_path / "in", variables=("tas",), years=(1980,))
    out = tmp_path / "out"
    one = compute.persistent_processing(edition(1), files, out)
    two = compute.persistent_processing(edition(2), files, out)
    assert one != two
    a, b = xr.open_dataset(one[0]), xr.open_dataset(two[0])
    np.testing.assert_allclose(b.tas.values - a.tas.values, 1.0, rtol=0, atol=1e-5)
    stamp = os.stat(one[0]).st_mtime_ns
    assert compute.persistent_processing(edition(1, "# a comment"), files, out) == one
    assert os.stat(one[0]).st_mtime_ns == stamp


def test_equal_headers_different_data_are_both_processed(tmp_path):
    a, b = tmp_path / "a" / "tas_same.nc", tmp_path / "b" / "tas_same.nc"
    for path, seed in ((a, 1), (b, 2)):
        path.parent.mkdir()
        resources.sample_dataset("tas", days=4, coarsen=8, seed=seed).to_netcdf(path)
        os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    assert a.stat().st_size == b.stat().st_size
    assert a.read_bytes()[:2000] == b.read_bytes()[:2000]  # pyku's old key could not tell them apart

    func = counting(str(tmp_path))
    outs = compute.persistent_processing(func, [a, b], tmp_path / "out")
    assert outs[0] != outs[1]
    for src, out in zip((a, b), outs):
        np.testing.assert_array_equal(xr.open_dataset(out).tas.values,
                                      in_kelvin(xr.open_dataset(src).T_2M.values))

    # Same path, same size, same mtime, new content: recomputed.
    resources.sample_dataset("tas", days=4, coarsen=8, seed=3).to_netcdf(a)
    os.utime(a, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    [new] = compute.persistent_processing(func, [a], tmp_path / "out")
    assert new != outs[0]
    np.testing.assert_array_equal(xr.open_dataset(new).tas.values,
                                  in_kelvin(xr.open_dataset(a).T_2M.values))


def test_failing_file_is_named_and_others_are_kept(tmp_path):
    files = sample_files(tmp_path / "in", variables=("tas",))
    broken = tmp_path / "in" / "tas_broken.nc"
    broken.write_text("not a NetCDF file")
    inputs = [files[0], str(broken), files[1]]
    with pytest.raises(pyku.ProcessingError, match="tas_broken.nc") as info:
        compute.persistent_processing(counting(str(tmp_path)), inputs, tmp_path / "out")
    outputs = info.value.outputs
    assert outputs[1] is None and list(info.value.failures) == [str(broken)]
    assert Path(outputs[0]).exists() and Path(outputs[2]).exists()


CHILD = """
import sys, time
import pyku
import pyku.compute as compute


def _slow(block):
    time.sleep(0.15)
    return block


def slow_preprocess(ds):
    ds = ds.pyku.to_cmor_varnames().pyku.to_cmor_units()
    tas = ds.tas.chunk({"time": 1})
    return ds.assign(tas=tas.copy(data=tas.data.map_blocks(_slow, dtype=tas.dtype)))


if __name__ == "__main__":
    compute.persistent_processing(slow_preprocess, sys.argv[2:], sys.argv[1])
"""


def test_killed_run_then_rerun_gives_complete_correct_outputs(tmp_path):
    files = sample_files(tmp_path / "in", variables=("tas",), years=(1980, 1981, 1982, 1983), days=5)
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, str(script), str(out), *files]

    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (list(out.glob("*.nc")) and list(out.glob(".*.part"))):  # mid-write of file 2+
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never got going"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    done_before = {p: p.stat().st_mtime_ns for p in out.glob("*.nc")}
    assert 1 <= len(done_before) < len(files)
    assert list(out.glob(".*.part"))  # the killed write left its temporary file...
    for path in done_before:            # ...but every file under a final name is complete
        assert xr.open_dataset(path).tas.sizes["time"] == 5

    subprocess.run(command, env=env, check=True, timeout=120, capture_output=True)

    assert not list(out.glob(".*.part"))  # the stale temporary file is gone
    outputs = sorted(out.glob("*.nc"))
    assert len(outputs) == len(files)
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before  # not redone
    for src in files:
        [dst] = out.glob(Path(src).stem + "-pyku-*-00000000.nc")
        got, raw = xr.open_dataset(dst), xr.open_dataset(src)
        np.testing.assert_array_equal(got.tas.values, in_kelvin(raw.T_2M.values))
        assert got.tas.attrs["units"] == "K"


def test_pykus_signature_and_names(tmp_path):
    files = sample_files(tmp_path / "in", variables=("tas",), years=(1980,))
    with pytest.warns(UserWarning, match="'persist' is deprecated"):
        [out] = compute.persistent_processing(func=units_only, files=files, tmpdir=str(tmp_path / "out"),
                                              identifier="my-data", persist=True, engine="netcdf4",
                                              unify_chunks=True, chunks={"time": -1}, extension="nc")
    stem = Path(files[0]).stem
    name = Path(out).name
    assert name.startswith(f"{stem}-my-data-") and name.endswith("-00000000.nc")
    assert len(name.removeprefix(f"{stem}-my-data-").removesuffix("-00000000.nc")) == 32  # the cache key
    with pytest.raises(pyku.ProcessingError, match="bogus"):  # engine goes to the reader
        compute.persistent_processing(units_only, files, tmp_path / "other", engine="bogus")
    with pytest.raises(pyku.PykuError, match="tmpdir"):
        compute.persistent_processing(units_only, files)
    with pytest.raises(pyku.PykuError, match="'nc' .* or 'zarr'"):
        compute.persistent_processing(units_only, files, tmp_path / "x", extension="grib")


def test_zarr_outputs_are_written_atomically_with_the_same_values(tmp_path):
    files = sample_files(tmp_path / "in", variables=("tas",), years=(1980,))
    [nc] = compute.persistent_processing(preprocess, files, tmp_path / "out")
    [store] = compute.persistent_processing(preprocess, files, tmp_path / "out", extension="zarr")
    assert store.endswith("-00000000.zarr") and Path(store).is_dir()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".part")]
    a, b = xr.open_dataset(nc), xr.open_zarr(store)
    np.testing.assert_array_equal(a.tas.values, b.tas.values)
    np.testing.assert_array_equal(a.time.values, b.time.values)
    assert compute.persistent_processing(preprocess, files, tmp_path / "out", extension="zarr") == [store]


def hog(ds):
    """A func that grows without bound: its worker is killed by its nanny."""
    keep = []
    while True:
        keep.append(np.ones(16 * 2**20 // 8))
        time.sleep(0.01)


def test_worker_killed_by_memory_is_named_with_its_limit_and_last_figure(tmp_path):
    import dask
    import distributed

    files = sample_files(tmp_path / "in", variables=("tas",), years=(1980,))
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with dask.config.set({"temporary-directory": str(tmp_path / "dask"),
                              "distributed.scheduler.allowed-failures": 0}), \
                distributed.LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="400MiB",
                                         dashboard_address=":0", local_directory=tmp_path / "dask") as cluster, \
                distributed.Client(cluster):
            with pytest.raises(pyku.ProcessingError) as info:
                compute.persistent_processing(hog, files, tmp_path / "out")
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    [(what, err)] = info.value.failures.items()
    assert what == files[0] and isinstance(err, pyku.errors.WorkerDiedError)
    message = str(err)
    assert message.startswith("worker died (memory limit 0.39 GiB?) while processing " + files[0])
    assert "its last memory figure:" in message and "% of its limit" in message


def test_several_failing_files_are_all_named_and_the_good_ones_kept(tmp_path):
    files = sample_files(tmp_path / "in", variables=("tas",))
    broken = [tmp_path / "in" / "tas_broken.nc", tmp_path / "in" / "tas_empty.nc"]
    broken[0].write_text("not a NetCDF file")
    broken[1].write_bytes(b"")
    inputs = [str(broken[0]), files[0], str(broken[1]), files[1]]
    with pytest.raises(pyku.ProcessingError) as info:
        compute.persistent_processing(counting(str(tmp_path)), inputs, tmp_path / "out")
    message = str(info.value)
    assert message.startswith("2 of 4 ") and "tas_broken.nc" in message and "tas_empty.nc" in message, message
    assert sorted(info.value.failures) == sorted(map(str, broken))
    outputs = info.value.outputs
    assert outputs[0] is None and outputs[2] is None
    assert Path(outputs[1]).exists() and Path(outputs[3]).exists()


def test_temporary_files_of_writers_that_died_during_the_run_are_removed(tmp_path):
    """A worker killed while writing (its task retried elsewhere) leaves a ``.part``: the run removes it."""
    from pyku.cache_key import host_tag

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid no process has now
    out = tmp_path / "out"
    orphan = out / f".tas_x.nc.0123abcd.hash.{host_tag()}.{dead.pid}.5eed5eed.part"
    alive = out / f".tas_y.nc.0123abcd.hash.{host_tag()}.{os.getpid()}.5eed5eed.part"

    def dies_while_writing(ds):
        orphan.write_text("half a sidecar")  # as a writer killed mid-write leaves it
        alive.write_text("a live writer's")   # another run's writer, still at work
        return ds.pyku.to_cmor_varnames()

    files = sample_files(tmp_path / "in", variables=("tas",), years=(1980,))
    outputs = compute.persistent_processing(dies_while_writing, files, out)
    assert all(Path(p).exists() for p in outputs)
    assert not orphan.exists() and alive.exists()
