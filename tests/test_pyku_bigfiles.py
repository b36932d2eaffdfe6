"""persistent_processing of files bigger than a worker's memory (issue 13).

A user's story: one input larger than each worker's memory_limit goes
through CMOR names and units on 2 small workers and completes, cut into
pieces that follow pyku's calendar convention and run on both workers; a
worker killed mid-piece loses nothing; an input whose single time step
cannot fit is refused before anything is computed; a full disk is named.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import cloudpickle
import netCDF4
import numpy as np
import pytest
import xarray as xr

import pyku
import pyku.compute as compute
import pyku.resources as resources
from launcher.testing.clusters import ssh_inventory
from launcher.testing.example import load_preprocess
from pyku.errors import DiskFullError, StepTooLargeError
from pyku.pieces import calendar_groups

preprocess = load_preprocess()


def _cmor_chain():
    def cmor(ds):
        return ds.pyku.to_cmor_varnames().pyku.to_cmor_units()
    return cmor


# The cheap part of the seed's chain (names and units, no projection): the big-file tests are
# about memory and pieces, and a projection onto the finer grid would double the bytes written.
# A local function, so it is shipped by value, as a user's script's function is, to hosts that
# cannot import tests/.
cmor = _cmor_chain()

LIMIT = "550MiB"          # per worker; the big input is larger than that in memory
BIG_DAYS = 5200           # GER-0275 every 2nd cell: 0.11 MiB a step, 587 MiB in all


@pytest.fixture(scope="module")
def big_input(tmp_path_factory):
    """One daily file of 1980-01-01 .. 1994-03-27, larger in memory than a worker's LIMIT."""
    path = tmp_path_factory.mktemp("big") / "tas_big.nc"
    ds = resources.sample_dataset("tas", 1980, days=BIG_DAYS, coarsen=2)
    assert ds.nbytes > 2**20 * int(LIMIT.removesuffix("MiB"))
    ds.to_netcdf(path)
    return str(path)


@contextlib.contextmanager
def local_cluster(tmp_path, memory_limit=LIMIT):
    import dask
    import distributed

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import tests/
    try:
        with dask.config.set({"temporary-directory": str(tmp_path / "dask")}), \
                distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                         memory_limit=memory_limit, dashboard_address=":0",
                                         local_directory=tmp_path / "dask") as cluster, \
                distributed.Client(cluster) as client:
            yield client
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def assert_complete(outputs, source, func=cmor):
    """Every time step of ``source`` once, in order, with the values ``func`` gives it."""
    with xr.open_dataset(source) as src, \
            xr.open_mfdataset(outputs, combine="nested", concat_dim="time", data_vars="minimal",
                              coords="minimal", compat="override") as got:
        np.testing.assert_array_equal(got.time_bnds.values, src.time_bnds.values)
        for step in (0, src.sizes["time"] // 2, src.sizes["time"] - 1):
            expected = func(src.isel(time=slice(step, step + 1)))
            np.testing.assert_array_equal(got.tas.isel(time=step).values, expected.tas.isel(time=0).values)


def piece_workers(records):
    return {r["worker"] for r in records if str(r["key"]).startswith("pyku-piece")}


def test_file_larger_than_the_limit_completes_on_both_workers(tmp_path, big_input):
    with local_cluster(tmp_path) as client:
        pids = client.run(os.getpid)
        from distributed import get_task_stream

        with get_task_stream(client) as stream:
            outputs = compute.persistent_processing(cmor, [big_input], tmp_path / "out")
        assert client.run(os.getpid) == pids  # no worker was restarted by its nanny
        assert len(piece_workers(stream.data)) == 2  # the pieces of one file ran on both workers
    assert len(outputs) > 4  # cut further than pyku's 4 calendar pieces
    names = [Path(p).name for p in outputs]
    assert names == sorted(names) and names[0].startswith("tas_big-pyku-") and names[0].endswith("-00000000.nc")
    assert names[-1].endswith(f"-{len(outputs) - 1:08d}.nc")
    assert_complete(outputs, big_input)
    assert not list((tmp_path / "out").glob(".*.part"))


def test_pieces_follow_pyku_calendar_groups(tmp_path, capsys):
    # Daily 1979-1992: pyku's 5-year groups are (year - 1) // 5, i.e. ..-1980, 1981-1985, 1986-1990, 1991-..
    path = tmp_path / "tas_daily.nc"
    resources.sample_dataset("tas", 1979, days=5114, coarsen=16).to_netcdf(path)
    outputs = compute.persistent_processing(preprocess, [path], tmp_path / "out", identifier="daily")
    years = [sorted(set(xr.open_dataset(p).time.dt.year.values.tolist())) for p in outputs]
    assert years == [[1979, 1980], [1981, 1982, 1983, 1984, 1985], [1986, 1987, 1988, 1989, 1990], [1991, 1992]]
    assert all("-daily-" in Path(p).name for p in outputs)

    # A small memory budget cuts further, never across a calendar group.
    cut = compute.persistent_processing(cmor, [path], tmp_path / "cut", budget=2_000_000, progress=True)
    assert len(cut) > len(outputs)
    # Progress counts pieces and bytes: the last line has every piece and every MiB done.
    last = capsys.readouterr().err.strip().splitlines()[-1]
    done, known, mib_done, mib_known = map(int, re.match(r"\[(\d+)/(\d+) pieces, (\d+)/(\d+) MiB\]", last).groups())
    assert done == known == len(cut) and mib_done == mib_known
    assert abs(mib_known - xr.open_dataset(path).nbytes / 2**20) <= 1  # the input's size in memory
    groups = [set(y) for y in years]
    for p in cut:
        in_piece = set(xr.open_dataset(p).time.dt.year.values.tolist())
        assert any(in_piece <= g for g in groups), in_piece
    assert_complete(outputs, path, preprocess)
    assert_complete(cut, path)


@pytest.mark.parametrize("freq, calendar, per_group", [
    ("h", "standard", 1), ("3h", "standard", 1), ("6h", "noleap", 1),
    ("12h", "standard", 5), ("D", "360_day", 5),
    ("MS", "standard", 10), ("QS-DEC", "standard", 10), ("YS", "standard", 100)])
def test_calendar_groups_are_pykus_cmor_pieces(freq, calendar, per_group):
    periods = {"h": 3 * 8760, "3h": 3 * 2920, "6h": 3 * 1460, "12h": 12 * 730, "D": 12 * 360, "MS": 25 * 12,
               "QS-DEC": 25 * 4, "YS": 250}[freq]
    times = xr.DataArray(xr.date_range("1979-01-01", periods=periods, freq=freq, calendar=calendar,
                                       use_cftime=calendar != "standard"), dims="time")
    groups = calendar_groups(times)
    years = times.dt.year.values
    assert groups[0][0] == 0 and groups[-1][1] == times.size
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:]))  # contiguous, each step once
    for start, stop in groups:
        keys = set((years[start:stop] - 1) // per_group)
        assert len(keys) == 1  # one pyku group per piece ...
    assert len(groups) == len(set((years - 1) // per_group))  # ... and one piece per group


def test_one_step_too_big_is_refused_before_computing(tmp_path):
    path = tmp_path / "tas_huge_steps.nc"
    with netCDF4.Dataset(path, "w") as nc:  # 2 steps of 5000 x 5000 float32: 95 MiB each
        nc.createDimension("time", 2)
        nc.createDimension("y", 5000)
        nc.createDimension("x", 5000)
        nc.createVariable("time", "f8", ("time",)).setncatts({"units": "days since 2000-01-01"})
        nc["time"][:] = [0, 1]
        var = nc.createVariable("tas", "f4", ("time", "y", "x"))
        for i in range(2):
            var[i] = np.zeros((5000, 5000), "f4")
    calls = tmp_path / "calls"
    calls.mkdir()

    def func(ds):
        (calls / uuid.uuid4().hex).touch()
        return ds

    with local_cluster(tmp_path, memory_limit="300MiB") as client:
        client.run(lambda: None)
        with pytest.raises(pyku.ProcessingError) as info:
            compute.persistent_processing(func, [path], tmp_path / "out")
    [(what, err)] = info.value.failures.items()
    assert what == str(path) and isinstance(err, StepTooLargeError)
    message = str(err)
    assert str(path) in message and "95.4 MiB" in message and "memory_limit 0.29 GiB" in message
    assert "more memory" in message and "fewer workers per host" in message
    assert not list(calls.iterdir()) and not list((tmp_path / "out").glob("*.nc"))


def test_worker_killed_mid_piece_loses_nothing(tmp_path, big_input):
    out = tmp_path / "out"
    killed = []

    def kill_a_writer():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for part in out.glob(".*.nc.*.part"):  # a piece being written
                pid = int(part.name.rsplit(".", 4)[-3])  # .<name>.<host>.<pid>.<nonce>.part
                if pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
                    killed.append((pid, part.name))
                    return
            time.sleep(0.01)

    with local_cluster(tmp_path) as client:
        before = set(client.run(os.getpid).values())
        killer = threading.Thread(target=kill_a_writer)
        killer.start()
        try:
            outputs = compute.persistent_processing(cmor, [big_input], out)
        finally:
            killer.join()
        after = set(client.run(os.getpid).values())
    assert killed and killed[0][0] in before and killed[0][0] not in after  # a worker died mid-write
    assert_complete(outputs, big_input)
    assert not list(out.glob(".*.part"))  # the dead writer's temporary files are gone too


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_names_the_directory_and_leaves_no_temporary_file(tmp_path):
    files = resources.write_sample_files(tmp_path / "in", variables=("tas",), years=(1980,), days=8)
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        with pytest.raises(pyku.ProcessingError) as info:
            compute.persistent_processing(preprocess, files, small)
        [err] = info.value.failures.values()
        assert isinstance(err, DiskFullError)
        assert str(small) in str(err) and "bytes are free" in str(err)
        assert "needs up to" in str(err)
        assert not [p for p in small.iterdir() if p.name.endswith(".part")]
        open_here = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                     if os.path.exists(f"/proc/self/fd/{fd}")]
        assert not [p for p in open_here if p.startswith(str(small))]
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_file_larger_than_the_limit_on_a_launched_cluster(sshd, state_dir, tmp_path, big_input):
    import launcher

    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="bigfile", workers=(1,), nworkers=2,
                        memory_limit=LIMIT)
    launcher.launch(inv)
    try:
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        with launcher.connect("bigfile") as client:
            from distributed import get_task_stream

            with get_task_stream(client) as stream:
                outputs = compute.persistent_processing(cmor, [big_input], tmp_path / "out")
            assert len(piece_workers(stream.data)) == 2
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        launcher.stop("bigfile")
    assert len(outputs) > 4
    assert_complete(outputs, big_input)


def test_rerun_redoes_only_the_missing_piece_even_with_another_budget(tmp_path):
    path = tmp_path / "tas_three_years.nc"
    resources.sample_dataset("tas", 1981, days=3 * 365, coarsen=16).to_netcdf(path)
    calls = tmp_path / "calls"
    calls.mkdir()

    def func(ds):
        (calls / uuid.uuid4().hex).touch()
        return cmor(ds)

    first = compute.persistent_processing(func, [path], tmp_path / "out", budget=1_000_000)
    assert len(first) > 3
    stamps = {p: os.stat(p).st_mtime_ns for p in first}
    Path(first[2]).unlink()
    for p in calls.iterdir():
        p.unlink()
    again = compute.persistent_processing(func, [path], tmp_path / "out", budget=50_000_000)
    assert again == first  # the recorded plan, not one for the new budget
    assert len(list(calls.iterdir())) == 1  # only the missing piece was computed
    assert all(os.stat(p).st_mtime_ns == stamps[p] for p in first if p != first[2])
    assert_complete(again, path)
