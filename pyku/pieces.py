"""Pieces of one input file: CMOR calendar groups, cut further to fit in memory.

:func:`plan_pieces` splits a dataset along time the way DWD's pyku does
(hourly to 6-hourly data in 1-year pieces, 12-hourly and daily in 5-year
pieces, monthly and seasonal in 10-year pieces, yearly in 100-year pieces;
years grouped as ``(year - 1) // n``, so 5-year pieces are 1981-1985,
1986-1990, ...), then cuts each group into equal runs of time steps small
enough that one piece's working set fits a memory budget.

The working set of ``n`` steps is ``fixed + n * per_step``: both are
measured by :func:`measure` (the function run on one and on a few time
steps under :mod:`tracemalloc`, which sees numpy's buffers), so a function
that makes many temporaries gets smaller pieces than one that makes none.
The budget comes from the memory limit of the worker that plans and
distributed's own thresholds (see :func:`memory_budget`).
"""

from __future__ import annotations

import dataclasses
import math
import tracemalloc
import warnings

import numpy as np

from pyku.errors import StepTooLargeError

# Single-threaded (no worker, no memory_limit): the fraction of the RAM
# available now that one piece may use.
LIMIT_FRACTION = 0.5
# On a worker the fractions of memory_limit come from distributed's own
# thresholds (dask config ``distributed.worker.memory.*``, as the worker
# and its nanny read them): pieces aim to keep the process below ``target``
# (0.6; the 0.1 to ``spill`` covers what tracemalloc does not see: HDF5's
# buffers, freed memory the allocator keeps), and a step is refused only
# when it cannot fit below ``pause`` (0.8), where the worker stops taking
# tasks; ``terminate`` (0.95) is where its nanny kills it.
THRESHOLDS = ("target", "spill", "pause", "terminate")
# A function that cannot be measured (it fails on one step) is assumed to
# hold this many copies of its input step.
DEFAULT_FACTOR = 6.0
# A calendar group this many times smaller than the budget is one piece
# without measuring func: even a projection onto a grid 50 times finer
# (output and temporaries) fits.
UNMEASURED_FACTOR = 100.0
# The larger sample of a measurement holds about this much input (at least
# 4 steps), so the per-step slope is not lost in the noise of small objects.
SAMPLE_BYTES = 8 * 2**20
_GIB = 2.0 ** 30
# (func token, variable signature) -> (fixed, per_step): measured once per process.
_MEASURED: dict = {}


@dataclasses.dataclass(frozen=True)
class Piece:
    """Time steps ``[start, stop)`` of one input; ``nbytes`` of input values in memory."""

    index: int
    start: int
    stop: int
    nbytes: int


@dataclasses.dataclass(frozen=True)
class Budget:
    """Bytes one piece may use, and where the figures come from (for messages).

    Pieces aim at ``nbytes``; ``most`` is what one piece may use at worst
    (below a worker's pause threshold): a time step that needs more is
    refused, one that needs more than ``nbytes`` but fits ``most`` gets
    pieces sized by half of ``most``.  ``held`` is the process's RSS when taken.
    """

    nbytes: int
    most: int
    limit: int | None  # the worker's memory_limit; None single-threaded
    source: str
    held: int = 0


def memory_budget(override=None):
    """The bytes one piece may use in this process (a :class:`Budget`).

    On a distributed worker with a ``memory_limit``: what is left below
    distributed's ``target`` fraction of the limit (``spill`` if target is
    off) once the process's RSS is counted (after handing freed heap back
    to the OS: :func:`release_freed_memory`), per thread; at worst what is
    left below ``pause`` (``terminate`` if pause is off).  Counting the RSS
    matters: a worker that has imported pyku's stack holds ~170 MiB, more
    than half of a 300 MiB limit.  Single-threaded: ``LIMIT_FRACTION`` of
    the RAM available now.
    """
    import psutil

    if override is not None:
        return Budget(int(override), int(override), None, f"a budget of {_mib(override)}")
    worker = _worker()
    if worker is not None:
        release_freed_memory()
    held = psutil.Process().memory_info().rss
    if worker is not None and worker.memory_manager.memory_limit:
        limit = int(worker.memory_manager.memory_limit)
        threads = max(1, worker.state.nthreads)
        fraction = worker_thresholds()
        aim = fraction["target"] or fraction["spill"] or fraction["pause"] or 1.0
        worst_name = "pause" if fraction["pause"] else "terminate" if fraction["terminate"] else "memory_limit"
        worst = max(aim, fraction["pause"] or fraction["terminate"] or 1.0)

        def left(f):
            return max(int((f * limit - held) / threads), 0)

        source = (f"workers with memory_limit {limit / _GIB:.2f} GiB and {threads} thread(s): below its "
                  f"{worst_name} threshold, {worst:g} x the limit = {_mib(worst * limit)}, of which the "
                  f"worker process holds {_mib(held)} already")
        return Budget(left(aim), left(worst), limit, source, held)
    available = psutil.virtual_memory().available
    nbytes = int(LIMIT_FRACTION * available)
    return Budget(nbytes, nbytes, None, f"{available / _GIB:.1f} GiB of available RAM", held)


def release_freed_memory():
    """Give the heap this process freed back to the OS (glibc ``malloc_trim``), so its RSS is what it holds.

    Without it the RSS also counts memory freed by earlier tasks (and by
    :func:`measure`'s tracemalloc) that glibc keeps for reuse: a piece would
    reuse that memory, yet it would be counted once as held and once in
    the piece's estimate.  distributed's docs give the same remedy for
    "Unmanaged memory use is high".  Elsewhere than glibc: nothing done.
    """
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def worker_thresholds():
    """distributed's memory thresholds as fractions of memory_limit (False: switched off)."""
    import dask

    return {name: dask.config.get(f"distributed.worker.memory.{name}") or False for name in THRESHOLDS}


def calendar_groups(times):
    """``[(start, stop), ...]`` of pyku's CMOR grouping of the time labels ``times``.

    ``times`` is the decoded time coordinate (a DataArray).  Fewer than two
    steps, or a spacing that is not a known frequency: one group.
    """
    n = times.size
    if n < 2:
        return [(0, n)]
    years_per_group = _years_per_group(times)
    if years_per_group is None:
        return [(0, n)]
    years = np.asarray(times.dt.year.values, dtype=np.int64)
    keys = (years - 1) // years_per_group
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    edges = [0, *cuts.tolist(), n]
    return list(zip(edges[:-1], edges[1:]))


def _years_per_group(times):
    """Years per piece from the median spacing of the labels (robust to gaps and mid-month labels)."""
    step = np.median(np.diff(_as_days(times)))
    if step <= 0.26:       # 1-, 3-, 6-hourly
        return 1
    if step <= 1.01:       # 12-hourly, daily
        return 5
    if 27.5 <= step <= 92.5:  # monthly, seasonal
        return 10
    if 359 <= step <= 367:  # yearly
        return 100
    if step < 27.5:
        warnings.warn(f"time step of {step:.2f} days is no CMOR frequency; 5-year pieces, as pyku does",
                      stacklevel=3)
        return 5
    return None


def _as_days(times):
    values = times.values
    if np.issubdtype(values.dtype, np.datetime64):
        return values.astype("datetime64[s]").astype(np.float64) / 86400.0
    import cftime  # non-standard calendars decode to cftime objects

    return np.asarray(cftime.date2num(list(values), "days since 1-1-1", calendar=values[0].calendar))


def step_bytes(ds):
    """(bytes of one time step of every time-dependent variable, of the largest one, its name)."""
    total, largest, name = 0, 0, None
    for var_name, var in ds.variables.items():
        if "time" not in var.dims or var.ndim < 2:
            continue
        size = var.dtype.itemsize * math.prod(s for d, s in var.sizes.items() if d != "time")
        total += size
        if size > largest:
            largest, name = size, var_name
    return total, largest, name


def signature(ds):
    """What the measured memory of a function depends on: variables, their dtypes and step shapes."""
    return tuple(sorted((str(k), str(v.dtype), tuple((d, s) for d, s in v.sizes.items() if d != "time"))
                        for k, v in ds.variables.items()))


def measure(func, ds, token, sample_bytes=SAMPLE_BYTES):
    """``(fixed, per_step)`` bytes of ``func`` on ``ds``, measured once per process and input layout.

    ``func`` runs on 1 step (to warm its caches, e.g. a neighbour index),
    then on 1 step and on ``SAMPLE_BYTES`` of steps; the peaks of traced memory
    give the per-step slope and the fixed part.  The per-step figure is at
    least the input plus the output of a step, plus one more output step
    for the copy the writer makes when it encodes (packing, fill values).
    """
    key = (token, signature(ds))
    if key in _MEASURED:
        return _MEASURED[key]
    n = ds.sizes.get("time", 1)
    in_step, _, _ = step_bytes(ds)
    big = int(min(max(4, sample_bytes // max(in_step, 1)), n))
    try:
        _peak(func, ds, 1)
        one, out_one = _peak(func, ds, 1)
        if big > 1:
            many, out_many = _peak(func, ds, big)
            per_step = max((many - one) / (big - 1), 0.0)
            out_step = max((out_many - out_one) / (big - 1), 0.0)
        else:
            per_step, out_step = float(one), float(out_one)
        fixed = max(one - per_step, 0.0)
        per_step = max(per_step, in_step + out_step) + out_step
    except Exception as exc:  # func needs more steps than a sample, or fails on this input anyway
        warnings.warn(f"could not measure the memory of func on a few time steps ({type(exc).__name__}: "
                      f"{exc}); assuming {DEFAULT_FACTOR:g} x its input", stacklevel=2)
        fixed, per_step = 0.0, DEFAULT_FACTOR * in_step
    _MEASURED[key] = (int(fixed), int(per_step))
    return _MEASURED[key]


def _peak(func, ds, steps):
    """Peak traced bytes and output bytes of ``func`` on the first ``steps`` steps, loaded."""
    sample = ds.isel(time=slice(0, steps)) if "time" in ds.dims else ds
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        result = func(sample.load())
        result = result.load()
        out = sum(v.nbytes for v in result.variables.values() if "time" in v.dims)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if started:
            tracemalloc.stop()
    return peak, out


def plan_pieces(ds, func, token, path, override=None):
    """The pieces of ``ds`` (the opened input at ``path``): calendar groups cut to fit the budget.

    Raises :class:`StepTooLargeError` before any computing when one time
    step of one variable cannot fit, and after measuring when one step of
    the function's working set cannot fit ``budget.most``.  Pieces are
    sized to ``budget.nbytes``, or to half of ``budget.most`` when one step
    needs more than that (a worker whose imports and caches already hold
    more than its target fraction).  The budget is taken again after measuring, so what the
    function's first call keeps (imports, caches such as a neighbour index)
    counts as the process's own.
    """
    if "time" not in ds.dims:
        return [Piece(0, 0, 0, int(ds.nbytes))]
    in_step, largest, name = step_bytes(ds)
    budget = memory_budget(override)
    if 2 * largest > budget.most:  # its input and its output at least
        raise StepTooLargeError(path, name, largest, budget)
    groups = calendar_groups(ds["time"])
    if max(b - a for a, b in groups) * in_step * UNMEASURED_FACTOR <= budget.nbytes:
        fixed, per_step = 0, in_step * UNMEASURED_FACTOR
    else:
        fixed, per_step = measure(func, ds, token, min(SAMPLE_BYTES, budget.most / 50))
        budget = memory_budget(override)
    if fixed + per_step > budget.most:
        raise StepTooLargeError(path, name, largest, budget, working_set=fixed + per_step)
    # Below target if a step fits there; else half of what is left below pause (the other half: what the
    # estimate misses), and one step a piece when even that is too small.
    room = budget.nbytes if fixed + per_step <= budget.nbytes else budget.most // 2
    most = max(1, int((room - fixed) // max(per_step, 1)))
    pieces = []
    for start, stop in groups:
        count = math.ceil((stop - start) / most)
        edges = np.linspace(start, stop, count + 1).round().astype(int)
        for a, b in zip(edges[:-1], edges[1:]):
            pieces.append(Piece(len(pieces), int(a), int(b), int((b - a) * in_step)))
    return pieces


def _mib(nbytes):
    return f"{nbytes / 2**20:.0f} MiB"


def _worker():
    try:
        from distributed import get_worker
        return get_worker()
    except (ImportError, ValueError):
        return None
