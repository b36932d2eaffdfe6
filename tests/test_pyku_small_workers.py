"""persistent_processing on small workers: the memory budget follows distributed's own thresholds (issue 22).

A worker that has imported pyku's stack holds ~170 MiB, more than half of a
300 MiB memory_limit, so a budget of a fixed half of the limit minus the
process's RSS was 0 and the seed's example was refused on such workers.
The budget now aims below distributed's ``target`` and refuses a step only
when it cannot fit below ``pause`` (pyku/pieces.py ``memory_budget``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import pyku
import pyku.compute as compute
from launcher.testing.clusters import ssh_inventory
from launcher.testing.example import EXAMPLE, load_preprocess
from pyku.errors import StepTooLargeError
from pyku.pieces import memory_budget

MIB = 2**20
SMALL = "300MiB"


def test_seed_example_on_300_mib_workers_launched_over_ssh(sshd, state_dir, tmp_path):
    """The seed's notebook as a user runs it: examples/preprocess.py --cluster on 2 workers x 300 MiB."""
    import launcher

    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="small", workers=(1,), nworkers=2, memory_limit=SMALL)
    launcher.launch(inv)
    try:
        with launcher.connect("small") as client:
            pids = client.run(os.getpid)
            run = subprocess.run([sys.executable, str(EXAMPLE), "--cluster", "small", "--outdir", str(tmp_path / "work")],
                                 capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
            after = client.run(os.getpid)
            limits = {w["memory_limit"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
    finally:
        launcher.stop("small")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert limits == {300 * MIB}
    assert after == pids  # no worker was restarted by its nanny (terminate threshold)
    outputs = [line for line in run.stdout.splitlines() if line.endswith(".nc")]
    inputs = sorted((tmp_path / "work" / "input").glob("*.nc"))
    assert len(inputs) == 4  # tas and pr, 2 years of 31 days: the example's defaults
    preprocess = load_preprocess()
    for source in inputs:
        mine = sorted(p for p in outputs if Path(p).name.startswith(source.stem + "-"))
        assert mine, f"no output of {source.name} in:\n{run.stdout}"
        with xr.open_dataset(source) as src, \
                xr.open_mfdataset(mine, combine="nested", concat_dim="time", data_vars="minimal",
                                  coords="minimal", compat="override") as got:
            expected = preprocess(src.load())
            np.testing.assert_array_equal(got.time.values, expected.time.values)  # every step once, in order
            for name in expected.data_vars:
                np.testing.assert_array_equal(got[name].values, expected[name].values)


@contextlib.contextmanager
def small_worker(tmp_path, threads=1, **memory):
    """A client of one LocalCluster worker with memory_limit SMALL and these ``distributed.worker.memory`` settings."""
    import dask
    import distributed

    settings = {f"distributed.worker.memory.{k}": v for k, v in memory.items()}
    with dask.config.set({"temporary-directory": str(tmp_path / "dask"), **settings}), \
            distributed.LocalCluster(n_workers=1, threads_per_worker=threads, processes=True, memory_limit=SMALL,
                                     dashboard_address=":0", local_directory=tmp_path / "dask") as cluster, \
            distributed.Client(cluster) as client:
        yield client


def test_the_budget_follows_distributeds_thresholds(tmp_path):
    with small_worker(tmp_path, threads=2, target=0.5, pause=0.9) as client:
        budget = client.submit(memory_budget, pure=False).result()
    limit = 300 * MIB
    assert budget.limit == limit and budget.held > 0
    assert budget.nbytes == max(int((0.5 * limit - budget.held) / 2), 0)  # below target, per thread
    assert budget.most == max(int((0.9 * limit - budget.held) / 2), 0)  # at worst below pause
    assert "pause threshold, 0.9 x the limit = 270 MiB" in budget.source
    assert f"holds {budget.held / MIB:.0f} MiB already" in budget.source


def test_a_step_that_cannot_fit_below_pause_is_refused_with_the_figures_it_used(tmp_path):
    path = tmp_path / "tas_small_grid.nc"
    pyku.resources.sample_dataset("tas", 1980, days=40, coarsen=2).to_netcdf(path)

    def hog(ds):  # 250 MiB a step by tracemalloc, never touched (calloc): the estimate alone is too big
        buffer = np.zeros((ds.sizes["time"], 250 * MIB // 4), "f4")
        assert buffer.nbytes
        return ds

    with small_worker(tmp_path) as client:
        client.run(lambda: None)
        with pytest.raises(pyku.ProcessingError) as info:
            compute.persistent_processing(hog, [path], tmp_path / "out")
    [(what, err)] = info.value.failures.items()
    assert what == str(path) and isinstance(err, StepTooLargeError)
    message = str(err)
    assert "one time step needs 2" in message and "by the measured estimate" in message  # ~250 MiB
    assert "memory_limit 0.29 GiB" in message and "pause threshold, 0.8 x the limit = 240 MiB" in message
    assert "worker process holds" in message and "more memory" in message
    assert not list((tmp_path / "out").glob("*.nc"))
