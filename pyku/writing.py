"""Writing one output of :func:`pyku.compute.persistent_processing`: encoding, atomically.

An output appears under its final name only when complete: it is written
under a hidden ``.<name>.<host>.<pid>.<nonce>.part`` name (a file for
NetCDF, a directory for Zarr), flushed to disk and renamed.  A writer that
dies leaves only its ``.part``, which the next run on that host removes
(its pid is dead) or any run removes after a day.  A full disk is reported
as :class:`DiskFullError` naming the directory and the bytes needed,
before a ``.part`` is opened.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from pyku.cache_key import host_tag
from pyku.errors import DiskFullError

CHUNK_BYTES = 4 * 1024 * 1024
STALE_PART_SECONDS = 24 * 3600
# Below this much free space a failed write is taken for a full disk even when
# the library reports it as something else (HDF5 says "NetCDF: HDF error").
_NEARLY_FULL = 1024 * 1024
# Encodings of the input that still describe the values (storage type, packing,
# fill value, time units); the layout (chunks, compression) is chosen anew.
_KEEP_ENCODING = ("dtype", "_FillValue", "missing_value", "scale_factor", "add_offset",
                  "units", "calendar")


def write_atomic(ds, final, chunks=None, compression=1, extension="nc"):
    """Write ``ds`` to ``final`` (a ``.nc`` file or ``.zarr`` store) so that it appears complete or not at all.

    A piece is started only where its uncompressed size is free (pieces
    are sized to memory, so this asks for little), because HDF5 cannot
    close a file it failed to flush: a write that meets a full disk anyway
    (someone else filled it meanwhile) is emptied, removed and reported the
    same way, but netCDF keeps its handle of the emptied file open.
    """
    final = Path(final)
    outdir = final.parent
    remove_stale_parts(outdir, f".{final.name}.*.part")
    part = outdir / f".{final.name}.{host_tag()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    ds, encoding = prepare(ds, chunks, compression, extension)
    needed = _written_bytes(ds, encoding)
    free = shutil.disk_usage(outdir).free
    if free < needed:
        raise DiskFullError(str(outdir), needed, free)
    try:
        with _synchronous_on_worker():
            if extension == "zarr":
                ds.to_zarr(part, mode="w-", encoding=encoding, zarr_format=2, consolidated=True,
                           safe_chunks=False)  # v2: consolidated metadata every reader knows
            else:
                ds.to_netcdf(part, format="NETCDF4", encoding=encoding)
        _fsync_tree(part)
        try:
            os.rename(part, final)
        except OSError:  # another writer finished first (a store cannot replace a store)
            if not final.exists():
                raise
        _fsync_directory(outdir)  # make the rename itself durable
    except Exception as exc:
        free = shutil.disk_usage(outdir).free
        if part.is_file():
            with contextlib.suppress(OSError):
                os.truncate(part, 0)  # give the space back even if the library still holds the file
        _remove(part)
        if _disk_full(exc) or free < _NEARLY_FULL:
            raise DiskFullError(str(outdir), needed, free) from exc
        raise
    finally:
        _remove(part)


def _written_bytes(ds, encoding):
    """Uncompressed bytes of ``ds`` in the dtypes it is written in, plus room for metadata."""
    total = 64 * 1024
    for name, var in ds.variables.items():
        dtype = np.dtype(encoding.get(name, {}).get("dtype", var.dtype))
        total += var.size * (dtype.itemsize if dtype.kind in "biufc" else 8)
    return int(total)


def _disk_full(exc):
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _synchronous_on_worker():
    """dask's synchronous scheduler on a worker: never nest cluster tasks."""
    import dask

    return dask.config.set(scheduler="synchronous") if _on_worker() else contextlib.nullcontext()


def _remove(part):
    if part.is_dir():
        shutil.rmtree(part, ignore_errors=True)
    else:
        part.unlink(missing_ok=True)


def _fsync_tree(path):
    paths = [path] if path.is_file() else [Path(d) / f for d, _, fs in os.walk(path) for f in fs]
    for p in paths:
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    if path.is_dir():
        for d, _, _ in os.walk(path):
            _fsync_directory(d)


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


def prepare(ds, chunks=None, compression=1, extension="nc"):
    """Copy of ``ds`` and the complete encoding of every variable for the writer.

    xarray replaces a variable's encoding by the entry passed to the writer,
    so each entry is built whole: the kept part of the original encoding
    (on-disk dtype, packing, fill value, time units) plus the chunking and
    compression chosen here, with the chunk budget counted in the dtype
    actually written.  Coordinates and bounds get no fill value (CF), where
    xarray would otherwise add ``_FillValue = NaN`` to floats.  Zarr stores
    keep zarr's default compressor.
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
            shape = _chunk_shape(var, chunks, itemsize)
            if extension == "zarr":
                entry["chunks"] = shape
            else:
                entry["chunksizes"] = shape
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


def remove_stale_parts(outdir, pattern):
    """Delete ``.part`` files and stores of dead writers on this host, or very old ones."""
    host, now = host_tag(), time.time()
    for part in Path(outdir).glob(pattern):
        fields = part.name.rsplit(".", 4)  # <name>.<host>.<pid>.<nonce>.part
        try:
            owner, pid = fields[-4], int(fields[-3])
            old = now - part.stat().st_mtime > STALE_PART_SECONDS
        except (IndexError, ValueError, OSError):
            continue
        if old or (owner == host and not _alive(pid)):
            _remove(part)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _on_worker():
    try:
        from distributed import get_worker
        get_worker()
        return True
    except (ImportError, ValueError):
        return False
