"""Persistent, restartable processing of file collections.

:func:`persistent_processing` applies a function to each input file and
keeps the results as NetCDF files in a directory, so a long preprocessing
chain survives crashes and re-runs cost nothing for files already done.
With a current ``distributed`` client each file is one task on the cluster
(the worker reads the input and writes the output itself); without one the
files are processed one after another.  The output files are the same
either way.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import xarray as xr

from pyku.errors import ProcessingError, PykuError
from pyku.fingerprint import cache_key, func_token, host_tag

CHUNK_BYTES = 4 * 1024 * 1024
STALE_PART_SECONDS = 24 * 3600
# Encodings of the input that still describe the values (storage type, packing,
# fill value, time units); the layout (chunks, compression) is chosen anew.
_KEEP_ENCODING = ("dtype", "_FillValue", "missing_value", "scale_factor", "add_offset",
                  "units", "calendar")


def persistent_processing(func, files, tmpdir, chunks=None, *, compression=1, open_kwargs=None,
                          parallel=None, progress=None):
    """Apply ``func`` to every file and keep the results in ``tmpdir``.

    Parameters
    ----------
    func : callable
        ``xarray.Dataset -> xarray.Dataset``.  Its code (and the code and
        values it uses) is part of the cache key: an edit recomputes.
    files : iterable of str or Path
        Input NetCDF files.
    tmpdir : str or Path
        Output directory, created if missing; reused across runs.
    chunks : dict, optional
        On-disk chunk size per dimension of the outputs (-1 or None: the
        whole dimension).  Default: the whole time series per chunk in time
        and about 4 MiB per chunk, which suits per-cell time-series work.
    compression : int
        zlib level of the outputs, 0 for none.
    open_kwargs : dict, optional
        Passed to :func:`xarray.open_dataset` (e.g. ``{"chunks": {}}``).
    parallel : bool, optional
        Default: one task per file on the current distributed client if
        there is one, else sequential.  False forces sequential.
    progress : bool, optional
        Show a progress bar; default only when stderr is a terminal.

    Returns
    -------
    list of str
        Output paths in input order.

    Raises
    ------
    ProcessingError
        After every file was tried, if some failed; it names each failed
        file, and the outputs of the others are kept.

    Notes
    -----
    An output is reused when its name, ``<input stem>.<key>.nc``, exists.
    The key hashes the input's absolute path, size, mtime and whole content
    with a token of ``func`` and of the settings above (see
    :mod:`pyku.fingerprint`): its bytecode, constants, closure and the
    globals it uses, recursively for functions and ``module.attr`` of the
    user's own modules; other captured values (a Grid, a path, a dataclass,
    ``functools.partial`` arguments) by value, plus pyku's own source.  The
    content hash is remembered in a hidden ``.<input>.<path hash>.hash``
    sidecar in ``tmpdir`` with the stat identity it holds for (path, size,
    mtime, ctime, inode), so a re-run of finished work stats the inputs
    instead of reading them.
    Outputs of older keys are left in ``tmpdir``.
    """
    paths = [os.path.abspath(os.fspath(f)) for f in files]
    outdir = Path(tmpdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(outdir, ".*.part")
    settings = (_normalise_chunks(chunks), int(compression), sorted((open_kwargs or {}).items(), key=str))
    token = func_token(func, settings)
    unique = list(dict.fromkeys(paths))
    client = _current_client() if parallel in (None, True) else None
    if parallel and client is None:
        raise PykuError("parallel=True needs a distributed client, and none is current")
    args = (func, str(outdir), token, chunks, int(compression), open_kwargs or {})

    done, failures = {}, {}
    with _Progress(len(unique), progress) as bar:
        if client is not None:
            from distributed import as_completed

            futures = {client.submit(process_file, path, *args, pure=False,
                                     key=f"pyku-process-{Path(path).name}-{uuid.uuid4().hex[:8]}"): path
                       for path in unique}
            for future in as_completed(futures):
                path = futures[future]
                try:
                    done[path] = future.result()
                except Exception as exc:
                    failures[path] = exc
                bar.advance(Path(path).name)
                future.release()
        else:
            for path in unique:
                try:
                    done[path] = process_file(path, *args)
                except Exception as exc:
                    failures[path] = exc
                bar.advance(Path(path).name)

    outputs = [done.get(path) for path in paths]
    if failures:
        failed = {path: failures[path] for path in unique if path in failures}
        raise ProcessingError(failed, outputs) from next(iter(failed.values()))
    return outputs


def process_file(path, func, outdir, token, chunks=None, compression=1, open_kwargs=None):
    """Process one file unless its output exists; return the output path.

    This is the unit of work (one distributed task).  The output appears
    under its final name only when complete: it is written to a hidden
    ``.part`` file, flushed to disk and renamed atomically.
    """
    outdir = Path(outdir)
    key = cache_key(path, token, cache_dir=outdir)  # a stat, not a read, once hashed
    final = outdir / f"{Path(path).stem}.{key}.nc"
    if final.exists():
        return str(final)
    _remove_stale_parts(outdir, f".{final.name}.*.part")
    part = outdir / f".{final.name}.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    try:
        with xr.open_dataset(path, **(open_kwargs or {})) as ds:
            result = func(ds)
            if not isinstance(result, xr.Dataset):
                raise TypeError(f"func must return an xarray.Dataset, not {type(result).__name__}")
            result, encoding = _prepare(result, chunks, compression)
            _write(result, part, encoding)
        with open(part, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.replace(part, final)
        except FileNotFoundError:
            if not final.exists():  # our part was removed and nobody finished it
                raise
        _fsync_directory(outdir)  # make the rename itself durable
    except BaseException as exc:
        part.unlink(missing_ok=True)
        if isinstance(exc, Exception):
            exc.add_note(f"while processing {path}")
        raise
    return str(final)


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write(ds, path, encoding):
    """Write with dask's synchronous scheduler on a worker: never nest cluster tasks."""
    import dask

    on_worker = _on_worker()
    with dask.config.set(scheduler="synchronous") if on_worker else contextlib.nullcontext():
        ds.to_netcdf(path, format="NETCDF4", encoding=encoding)


def _prepare(ds, chunks, compression):
    """Copy of ``ds`` and the complete ``to_netcdf`` encoding of every variable.

    xarray replaces a variable's encoding by the entry passed to
    ``to_netcdf``, so each entry is built whole: the kept part of the
    original encoding (on-disk dtype, packing, fill value, time units) plus
    the chunking and compression chosen here, with the chunk budget counted
    in the dtype actually written.  Coordinates and bounds get no fill value
    (CF), where xarray would otherwise add ``_FillValue = NaN`` to floats.
    """
    ds = ds.copy(deep=False)
    no_fill = _coordinate_like(ds)
    encoding = {}
    for name, var in ds.variables.items():
        entry = {k: v for k, v in var.encoding.items() if k in _KEEP_ENCODING}
        for key in ("bounds", "grid_mapping"):  # links decode_coords="all" moved to the encoding
            ref = var.encoding.get(key)
            if ref and key not in var.attrs and str(ref).split(":")[0].split()[0] in ds.variables:
                entry[key] = ref
        if name in ds.dims or (name in no_fill and "_FillValue" not in entry):
            entry["_FillValue"] = None
        elif (_integer_dtype(entry) and var.dtype.kind == "f"
              and not {"_FillValue", "missing_value"} & set(entry)):
            # Float data (NaN outside a projected domain) packed into integers
            # needs a fill value, or NaN would be cast to an arbitrary integer.
            entry["_FillValue"] = _default_fill(entry["dtype"])
        if name not in ds.dims and var.ndim > 0 and var.dtype.kind in "biuf":
            itemsize = np.dtype(entry.get("dtype", var.dtype)).itemsize
            entry["chunksizes"] = _chunk_shape(var, chunks, itemsize)
            if compression:
                entry.update(zlib=True, complevel=int(compression), shuffle=True)
        encoding[name] = entry
    return ds, encoding


def _coordinate_like(ds):
    """Coordinates and the bounds of any variable: values that must not be missing."""
    names = set(ds.coords)
    for var in ds.variables.values():
        bounds = var.attrs.get("bounds") or var.encoding.get("bounds")
        if bounds in ds.variables:
            names.add(bounds)
    return names


def _integer_dtype(entry):
    return "dtype" in entry and np.dtype(entry["dtype"]).kind in "iu"


def _default_fill(dtype):
    """netCDF's default fill value of ``dtype`` (e.g. -32767 for int16)."""
    import netCDF4

    dtype = np.dtype(dtype)
    return dtype.type(netCDF4.default_fillvals[f"{dtype.kind}{dtype.itemsize}"])


def _normalise_chunks(chunks):
    return tuple(sorted((str(k), -1 if v is None else int(v)) for k, v in (chunks or {}).items()))


def _chunk_shape(var, chunks, itemsize):
    """Whole time series, given sizes, then ~CHUNK_BYTES split evenly over the rest."""
    chunks = chunks or {}
    shape, free = {}, []
    for dim, size in var.sizes.items():
        if dim in chunks:
            want = chunks[dim]
            shape[dim] = size if want in (None, -1) else max(1, min(int(want), size))
        elif dim == "time" or size <= 4:
            shape[dim] = size
        else:
            free.append(dim)
    fixed = math.prod(shape.values()) * itemsize
    budget = max(1.0, CHUNK_BYTES / max(fixed, 1))
    side = budget ** (1.0 / len(free)) if free else 1
    for dim in free:
        shape[dim] = max(1, min(var.sizes[dim], int(side)))
    return tuple(max(1, shape[d]) for d in var.dims)


def _remove_stale_parts(outdir, pattern):
    """Delete ``.part`` files of dead writers on this host, or very old ones."""
    host, now = _host(), time.time()
    for part in outdir.glob(pattern):
        fields = part.name.rsplit(".", 4)  # <name>.<host>.<pid>.<nonce>.part
        try:
            owner, pid = fields[-4], int(fields[-3])
            old = now - part.stat().st_mtime > STALE_PART_SECONDS
        except (IndexError, ValueError, OSError):
            continue
        if old or (owner == host and not _alive(pid)):
            part.unlink(missing_ok=True)


_host = host_tag


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def _on_worker():
    try:
        from distributed import get_worker
        get_worker()
        return True
    except (ImportError, ValueError):
        return False


class _Progress:
    """A rich progress bar on a terminal, plain lines when forced elsewhere, else silent."""

    def __init__(self, total, enabled):
        self.total, self.count = total, 0
        self.enabled = sys.stderr.isatty() if enabled is None else bool(enabled)
        self._rich = None

    def __enter__(self):
        if self.enabled and sys.stderr.isatty():
            try:
                from rich.console import Console
                from rich.progress import Progress
                self._rich = Progress(console=Console(stderr=True), transient=False)
                self._rich.start()
                self._task = self._rich.add_task("persistent_processing", total=self.total)
            except ImportError:
                self._rich = None
        return self

    def advance(self, name):
        self.count += 1
        if self._rich is not None:
            self._rich.update(self._task, advance=1, description=name[:40])
        elif self.enabled:
            print(f"[{self.count}/{self.total}] {name}", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._rich is not None:
            self._rich.stop()
        return False
