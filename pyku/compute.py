"""Persistent, restartable processing of file collections, piece by piece.

:func:`persistent_processing` applies a function to each input file and
keeps the results in a directory, so a long preprocessing chain survives
crashes and re-runs cost nothing for the work already done.  Each input is
cut along time into pieces (pyku's CMOR grouping, cut further to fit a
worker's memory: :mod:`pyku.pieces`), one output per piece.  With a current
``distributed`` client every piece is one task on the cluster (the worker
reads its part of the input and writes the output itself), so the pieces
of one big file run on all workers at once; without one they run one after
another.  The output files are the same either way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import uuid
import warnings
from pathlib import Path

import xarray as xr

from pyku.cache_key import cache_key, func_token, host_tag
from pyku.errors import ProcessingError, PykuError
from pyku.pieces import Piece, plan_pieces
from pyku.progress import Progress
from pyku.shared import warn_if_unshared
from pyku.worker_memory import WorkerMemory
from pyku.writing import remove_stale_parts, write_atomic

EXTENSIONS = ("nc", "zarr")
MANIFEST_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Job:
    """Everything a worker needs to plan or process a piece (sent with each task)."""

    func: object
    outdir: str
    identifier: str
    token: str
    engine: str | None = None
    unify_chunks: bool = True
    chunks: dict | None = None
    extension: str = "nc"
    compression: int = 1
    open_kwargs: dict = dataclasses.field(default_factory=dict)
    budget: int | None = None

    def open(self, path):
        return xr.open_dataset(path, engine=self.engine, **self.open_kwargs)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The pieces of one input, their output paths and which of them are still missing."""

    path: str
    pieces: tuple[Piece, ...]
    outputs: tuple[str, ...]
    missing: tuple[int, ...]


def persistent_processing(func, files=None, tmpdir=None, identifier="pyku", persist=False, engine=None,
                          unify_chunks=True, chunks={"time": -1}, extension="nc", *,  # noqa: B006 (pyku's default)
                          compression=1, open_kwargs=None, parallel=None, progress=None, budget=None):
    """Apply ``func`` to every file, piece by piece, and keep the results in ``tmpdir``.

    The signature and output names are those of DWD's pyku 1.1.x; what
    this version does better than pyku: outputs are reused only for the
    same input *content* and the same *code* (pyku keys on the first 2000
    bytes of the input only, and never sees an edited ``func``); outputs
    appear atomically (pyku can leave a truncated file that a re-run then
    takes as done); failures are listed per file and piece after every
    other piece was done; outputs are compressed and chunked for
    time-series access; pieces are also cut to fit a worker's memory and
    run on every worker at once (pyku runs one file's pieces in one task).

    Parameters
    ----------
    func : callable
        ``xarray.Dataset -> xarray.Dataset``, applied to each piece.  Its
        code (and the code and values it uses) is part of the cache key: an
        edit recomputes.
    files : iterable of str or Path
        Input NetCDF files (required).
    tmpdir : str or Path
        Output directory (required), created if missing; reused across runs.
    identifier : str
        Goes into the output names, as in pyku.
    persist : bool
        Accepted for pyku's callers and ignored with a warning, as in pyku.
    engine : str, optional
        The reader's engine (:func:`xarray.open_dataset`).
    unify_chunks : bool
        Unify the dask chunks of ``func``'s result before writing, as pyku.
    chunks : dict
        Dask chunks of ``func``'s (dask-backed) result before writing, as in
        pyku, and the on-disk chunk size per dimension (-1 or None: the
        whole dimension of the piece; other dimensions about 4 MiB per
        chunk).  Default: the whole piece along time, which suits per-cell
        time-series work.
    extension : {'nc', 'zarr'}
        NetCDF-4 files or Zarr stores.
    compression : int
        zlib level of NetCDF outputs, 0 for none.
    open_kwargs : dict, optional
        More arguments of :func:`xarray.open_dataset` (e.g. ``decode_coords``).
    parallel : bool, optional
        Default: one task per piece on the current distributed client if
        there is one, else sequential.  False forces sequential.
    progress : bool, optional
        Show progress (pieces and bytes); default only on a terminal.
    budget : int, optional
        Bytes one piece may use; default from the executing worker's
        ``memory_limit`` (single-threaded: from the available RAM).

    Returns
    -------
    list of str
        Output paths in input order, then time order; ``xr.open_mfdataset``
        of the outputs of one input yields each of its time steps once.

    Raises
    ------
    ProcessingError
        After everything else was done, if some files or pieces failed; it
        names each, and the other outputs are kept.  A piece whose worker
        died is reported as :class:`WorkerDiedError` (memory limit and the
        worker's last memory figure), a full disk as ``DiskFullError``, an
        input with one time step too big to fit as ``StepTooLargeError``
        (before anything of that file is computed).

    Notes
    -----
    Outputs are named ``<stem>-<identifier>-<key>-<index:08d>.<extension>``.
    The key hashes the input's absolute path, size, mtime and whole content
    with a token of ``func`` and of the settings above (see
    :mod:`pyku.cache_key`).  The pieces of an input are recorded in a hidden
    ``.<stem>-<identifier>-<key>.pieces`` file when first planned, so a
    re-run (even with another memory limit) does only the missing pieces
    of the same plan.  Outputs of older keys are left in ``tmpdir``.
    """
    if files is None or tmpdir is None:
        raise PykuError("persistent_processing needs files= (the inputs) and tmpdir= (where outputs go)")
    if not identifier or "/" in str(identifier):
        raise PykuError(f"identifier={identifier!r}: give a non-empty name without '/'; it goes into file names")
    if extension not in EXTENSIONS:
        raise PykuError(f"extension={extension!r}: use 'nc' (NetCDF-4) or 'zarr'")
    if persist:
        warnings.warn("persistent_processing: 'persist' is deprecated (as in pyku) and has no effect",
                      stacklevel=2)
    paths = list(dict.fromkeys(os.path.abspath(os.fspath(f)) for f in files))
    outdir = Path(tmpdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(outdir, ".*.part")
    chunks = dict(chunks) if chunks else None
    settings = (_normalise_chunks(chunks), int(compression), sorted((open_kwargs or {}).items(), key=str),
                engine, bool(unify_chunks), extension)
    job = Job(func, str(outdir), str(identifier), func_token(func, settings), engine, bool(unify_chunks),
              chunks, extension, int(compression), dict(open_kwargs or {}), budget)
    client = _current_client() if parallel in (None, True) else None
    if parallel and client is None:
        raise PykuError("parallel=True needs a distributed client, and none is current")

    if client is not None:
        warn_if_unshared(client, outdir)
    run = _Run(job, progress)
    with run.bar:
        if client is None:
            run.here(paths)
        else:
            run.on_cluster(client, paths)
    # A writer that died during this run (its task was retried elsewhere)
    # left its temporary file: each host removes those of its dead writers.
    remove_stale_parts(outdir, ".*.part")
    if client is not None:
        client.run(remove_stale_parts, str(outdir), ".*.part", on_error="ignore")
    outputs = run.outputs(paths)
    if run.failures:
        raise ProcessingError(run.failures, outputs) from next(iter(run.failures.values()))
    return outputs


class _Run:
    """The plans, results and failures of one call, sequential or on a cluster."""

    def __init__(self, job, progress):
        self.job = job
        self.plans: dict[str, Plan] = {}
        self.failures: dict[str, BaseException] = {}
        self.bar = Progress(progress)

    def here(self, paths):
        for path in paths:
            if not self._planned(path, _attempt(plan_file, path, self.job)):
                continue
            plan = self.plans[path]
            for index in plan.missing:
                result = _attempt(process_piece, path, plan.pieces[index], plan.outputs[index], self.job)
                self._finished(path, index, result)

    def on_cluster(self, client, paths):
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        tags, pending = {}, as_completed()
        for path in paths:
            future = client.submit(plan_file, path, self.job, pure=False, key=_task_key("plan", path))
            tags[future] = (path, None)
            pending.add(future)
        with WorkerMemory(client) as memory:
            for future in pending:
                path, index = tags.pop(future)
                try:
                    result = future.result()
                except KilledWorker as exc:
                    result = memory.died(exc, path, index)
                except Exception as exc:
                    result = exc
                future.release()
                if index is not None:
                    self._finished(path, index, result)
                elif self._planned(path, result):
                    plan = self.plans[path]
                    for i in plan.missing:  # before the plans of later files: outputs come in order
                        piece = client.submit(process_piece, path, plan.pieces[i], plan.outputs[i], self.job,
                                              pure=False, priority=1, key=_task_key(f"piece{i}", path))
                        tags[piece] = (path, i)
                        pending.add(piece)

    def _planned(self, path, result):
        if isinstance(result, BaseException):
            self.failures[path] = result
            self.bar.failed(Path(path).name)
            return False
        self.plans[path] = result
        self.bar.planned(result)
        return True

    def _finished(self, path, index, result):
        plan = self.plans[path]
        if isinstance(result, BaseException):
            self.failures[f"{path} piece {index}"] = result
        self.bar.piece_done(plan, index)

    def outputs(self, paths):
        out = []
        for path in paths:
            plan = self.plans.get(path)
            if plan is None:
                out.append(None)
                continue
            out += [None if f"{path} piece {i}" in self.failures else name for i, name in enumerate(plan.outputs)]
        return out


def _attempt(step, *args):
    try:
        return step(*args)
    except Exception as exc:
        return exc


def plan_file(path, job):
    """Plan ``path`` (or read the plan a former run recorded); process it at once if it is one piece.

    A task of its own on a cluster.  Small inputs, one piece each, are thus
    one task and one read of the input; big ones return their plan, and the
    client submits one task per missing piece.
    """
    try:
        outdir = Path(job.outdir)
        key = cache_key(path, job.token, cache_dir=outdir)  # a stat, not a read, once hashed
        prefix = f"{Path(path).stem}-{job.identifier}-{key}"
        manifest = outdir / f".{prefix}.pieces"
        pieces = _read_manifest(manifest)
        with contextlib.ExitStack() as stack:
            ds = None
            if pieces is None:
                ds = stack.enter_context(job.open(path))
                pieces = plan_pieces(ds, job.func, job.token, path, job.budget)
                _write_manifest(manifest, pieces)
            outputs = tuple(str(outdir / f"{prefix}-{p.index:08d}.{job.extension}") for p in pieces)
            missing = tuple(i for i, name in enumerate(outputs) if not os.path.exists(name))
            if len(pieces) == 1 and missing:
                process_piece(path, pieces[0], outputs[0], job, ds)
                missing = ()
    except Exception as exc:
        exc.add_note(f"while planning {path}")
        raise
    return Plan(path, tuple(pieces), outputs, missing)


def process_piece(path, piece, output, job, ds=None):
    """Process one piece of ``path`` unless ``output`` exists; return ``output``.

    The unit of work (one distributed task): the worker reads the piece's
    time steps itself and writes ``output`` atomically
    (:func:`pyku.writing.write_atomic`).
    """
    if os.path.exists(output):
        return output
    try:
        with contextlib.nullcontext(ds) if ds is not None else job.open(path) as src:
            part = src.isel(time=slice(piece.start, piece.stop)) if "time" in src.dims else src
            result = job.func(part)
            if not isinstance(result, xr.Dataset):
                raise TypeError(f"func must return an xarray.Dataset, not {type(result).__name__}")
            if job.unify_chunks:
                result = result.unify_chunks()
            if job.chunks and result.chunks:  # dask-backed: pyku's rechunk before writing
                result = result.chunk({d: c for d, c in job.chunks.items() if d in result.dims})
            write_atomic(result, output, job.chunks, job.compression, job.extension)
    except Exception as exc:
        exc.add_note(f"while processing {path} piece {piece.index} (time steps {piece.start}-{piece.stop - 1})")
        raise
    return output


def _read_manifest(manifest):
    try:
        record = json.loads(Path(manifest).read_text())
        if record.get("version") != MANIFEST_VERSION:
            return None
        return [Piece(i, int(a), int(b), int(n)) for i, (a, b, n) in enumerate(record["pieces"])]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_manifest(manifest, pieces):
    """Record the plan atomically; the first writer's plan wins (a racing one is identical in use)."""
    part = manifest.with_name(f"{manifest.name}.{host_tag()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    record = {"version": MANIFEST_VERSION, "pieces": [[p.start, p.stop, p.nbytes] for p in pieces]}
    try:
        part.write_text(json.dumps(record))
        os.replace(part, manifest)
    finally:
        part.unlink(missing_ok=True)


def _task_key(kind, path):
    return f"pyku-{kind}-{Path(path).name}-{uuid.uuid4().hex[:8]}"


def _normalise_chunks(chunks):
    return tuple(sorted((str(k), -1 if v is None else int(v)) for k, v in (chunks or {}).items()))


def _current_client():
    """The current distributed client, or None."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None
