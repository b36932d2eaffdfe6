"""Cache keys of persistent_processing: what a scientist changes must recompute, nothing else.

Values captured by ``func`` (a user-defined Grid, a path, a dataclass,
``functools.partial`` arguments) count by value; helpers reached as
``module.helper`` count by their code; a fully cached re-run stats its
inputs instead of reading them again.
"""

import dataclasses
import functools
import importlib.util
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import pyku
import pyku.compute as compute
import pyku.resources as resources
from pyku import cache_key

REPO = Path(__file__).resolve().parents[1]
SMALL = pyku.Grid.from_extent("EPSG:3035", (20, 30), (4200000, 2900000, 4500000, 3100000))


def shifted(grid, metres):
    return dataclasses.replace(grid, x0=grid.x0 + metres)


def projector(grid):
    """A func whose target grid is a closure value."""
    def func(ds):
        return ds.pyku.project(grid).pyku.to_cmor_varnames()
    return func


def project_onto(ds, grid):
    return ds.pyku.project(grid).pyku.to_cmor_varnames()


@dataclasses.dataclass
class Settings:
    offset: float
    target: Path


def with_settings(settings):
    def func(ds):
        return ds.assign(T_2M=ds.T_2M + settings.offset)
    return func


def inputs(tmp_path, years=(1980,)):
    return resources.write_sample_files(tmp_path / "in", variables=("tas",), years=years, days=2, coarsen=8)


def stamps(paths):
    return [os.stat(p).st_mtime_ns for p in paths]


@pytest.mark.parametrize("make", [projector, lambda grid: functools.partial(project_onto, grid=grid)],
                         ids=["closure", "partial"])
def test_an_edited_grid_recomputes_and_an_equal_one_does_not(tmp_path, make):
    files, out = inputs(tmp_path), tmp_path / "out"
    first = compute.persistent_processing(make(SMALL), files, out)
    before = stamps(first)
    # An equal Grid built anew (another object): the same outputs, not redone.
    same = compute.persistent_processing(make(dataclasses.replace(SMALL)), files, out)
    assert same == first and stamps(same) == before
    # The same grid moved by one cell: recomputed onto the new cells.
    moved = compute.persistent_processing(make(shifted(SMALL, 10_000)), files, out)
    assert moved != first
    np.testing.assert_array_equal(xr.open_dataset(moved[0]).x.values,
                                  xr.open_dataset(first[0]).x.values + 10_000)


def test_captured_values_count_by_value():
    token = cache_key.func_token
    a = Settings(1.0, Path("/data/a"))
    assert token(with_settings(a)) == token(with_settings(Settings(1.0, Path("/data/a"))))
    assert token(with_settings(a)) != token(with_settings(Settings(2.0, Path("/data/a"))))
    assert token(with_settings(a)) != token(with_settings(Settings(1.0, Path("/data/b"))))
    assert token(functools.partial(project_onto, grid=SMALL)) != token(
        functools.partial(project_onto, grid=shifted(SMALL, 1.0)))
    field = np.arange(4.0)
    assert token(functools.partial(project_onto, grid=field)) != token(
        functools.partial(project_onto, grid=field + 1))


def test_value_without_a_deterministic_token_counts_by_type_with_a_warning():
    lock = threading.Lock()

    def func(ds):
        with lock:
            return ds

    with pytest.warns(UserWarning, match="_thread.lock.*by its type only"):
        first = cache_key.func_token(func)
    with pytest.warns(UserWarning):
        assert cache_key.func_token(func) == first


HELPERS = """
FACTOR = {factor}


def scale(ds):
    return ds * FACTOR + {offset}
"""


def test_helpers_reached_through_a_module_attribute_count(tmp_path, monkeypatch):
    name = f"pyku_test_helpers_{os.getpid()}"
    source = tmp_path / f"{name}.py"
    source.write_text(HELPERS.format(factor=2, offset=0))
    spec = importlib.util.spec_from_file_location(name, source)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)

    namespace = {"helpers": module, "np": np}
    exec("def func(ds):\n    return np.sqrt(helpers.scale(ds))\n", namespace)
    func = namespace["func"]
    tokens = [cache_key.func_token(func)]
    for factor, offset in ((2, 1), (3, 1)):  # the helper's code, then the module constant
        source.write_text(HELPERS.format(factor=factor, offset=offset))
        spec.loader.exec_module(module)
        tokens.append(cache_key.func_token(func))
    assert len(set(tokens)) == 3
    assert cache_key.func_token(func) == tokens[-1]


TOKEN_SCRIPT = """
import functools, sys
from pathlib import Path
sys.path[:0] = [{tests!r}, {repo!r}]
import test_pyku_cache_key as t
from pyku import cache_key
print(cache_key.func_token(functools.partial(t.project_onto, grid=t.SMALL), Path("/data/x")))
print(cache_key.func_token(t.with_settings(t.Settings(1.5, Path("/data/a")))))
"""


def test_tokens_are_the_same_in_another_process():
    script = TOKEN_SCRIPT.format(tests=str(REPO / "tests"), repo=str(REPO))
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    lines = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, check=True,
                           capture_output=True, text=True, timeout=120).stdout.split()
    here = [cache_key.func_token(functools.partial(project_onto, grid=SMALL), Path("/data/x")),
            cache_key.func_token(with_settings(Settings(1.5, Path("/data/a"))))]
    assert lines == here


def _clock_ticked_past(paths, scratch, timeout: float = 5.0) -> None:
    """Until the file system's clock has moved past the ctime of ``paths`` (its tick may be coarse)."""
    newest = max(os.stat(p).st_ctime_ns for p in paths)
    probe = Path(scratch) / ".clock-probe"
    deadline = time.monotonic() + timeout
    while True:
        probe.touch()
        if os.stat(probe).st_ctime_ns > newest:
            probe.unlink()
            return
        assert time.monotonic() < deadline, "the file system clock did not move"
        time.sleep(0.001)


def test_cached_rerun_stats_inputs_instead_of_reading_them(tmp_path, monkeypatch):
    files, out = inputs(tmp_path, years=(1980, 1981)), tmp_path / "out"
    _clock_ticked_past(files, tmp_path)  # a content hash taken in the inputs' own clock tick is not trusted
    reads = []
    real = cache_key._hash_content
    monkeypatch.setattr(cache_key, "_hash_content", lambda path: reads.append(path) or real(path))
    func = projector(SMALL)

    first = compute.persistent_processing(func, files, out)
    assert sorted(reads) == sorted(files)
    assert len(list(out.glob(".*.hash"))) == len(files)
    reads.clear()
    assert compute.persistent_processing(func, files, out) == first
    assert reads == []  # nothing read: one stat and a tiny sidecar per input

    # New content of the same size under the same mtime: the stat identity
    # (ctime, and the inode when replaced) differs, so it is hashed again.
    st = os.stat(files[0])
    resources.sample_dataset("tas", days=2, coarsen=8, seed=7).to_netcdf(files[0])
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(files[0]).st_size == st.st_size
    again = compute.persistent_processing(func, files, out)
    assert reads == [files[0]] and again[0] != first[0] and again[1] == first[1]
    assert len(list(out.glob(".*.hash"))) == len(files)  # one sidecar per input, updated


def test_racy_or_corrupt_sidecar_is_not_trusted(tmp_path, monkeypatch):
    path = tmp_path / "input.bin"
    path.write_bytes(b"x" * 1000)
    digest = cache_key.content_digest(path, cache_dir=tmp_path)
    [sidecar] = tmp_path.glob(".input.bin.*.hash")
    reads = []
    real = cache_key._hash_content
    monkeypatch.setattr(cache_key, "_hash_content", lambda p: reads.append(p) or real(p))

    ctime = os.stat(path).st_ctime_ns
    os.utime(sidecar, ns=(ctime, ctime))  # written in the file's own clock tick
    assert cache_key.content_digest(path, cache_dir=tmp_path) == digest and len(reads) == 1
    sidecar.write_text("{not json")
    _clock_ticked_past([sidecar], tmp_path)
    assert cache_key.content_digest(path, cache_dir=tmp_path) == digest and len(reads) == 2
    assert cache_key.content_digest(path, cache_dir=tmp_path) == digest and len(reads) == 2
