"""Neighbour indices and weights for reprojection, built once and cached.

Reprojecting a time series is one gather per time step with the same
indices, so the expensive part — finding, for every target cell, the source
cells it reads and with which weights — is done once per (source grid,
target grid, method) and kept in an in-process LRU cache.  Every time step,
every variable and every file on the same grid reuses it; on a dask worker
the cache lives in the worker process, so it is built once per worker.

Nearest neighbour and idw search a :class:`scipy.spatial.cKDTree` of the
source centres in 3-D unit-sphere (ECEF) coordinates: no seam at the
antimeridian, no distortion near the poles.  ``roi`` is pyresample's (and
so pyku's) radius of influence: the straight-line distance in metres on a
sphere of 6370997 m.

* ``nearest_neighbor``: every target cell whose nearest source centre is
  within ``roi`` gets its value, also outside the source domain (pyku's
  default roi of 1000 km fills far beyond it).
* ``source_cell`` (internal): nearest, but only where the target centre lies
  within that source cell; ``keep_mask`` in :func:`pyku.project.project`
  uses it to carry the source's mask over to any method.
* ``idw``: the ``neighbours`` nearest source centres within ``roi``,
  weighted by distance ** -power.
* ``bilinear`` (:mod:`pyku.bilinear`), ``conservative``
  (:mod:`pyku.conservative`): see there.

Weighted methods are sparse matrices holding only non-zero weights.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from dataclasses import dataclass

import numpy as np
import pyproj
from scipy.spatial import cKDTree

from pyku.weights import EARTH_RADIUS, WeightMatrix, index_dtype, unit_vectors  # noqa: F401  (re-exported)

CACHE_SIZE = 8
METHODS = ("nearest_neighbor", "bilinear", "idw", "conservative")
DEFAULT_ROI = 1e6              # metres, pyku's default radius of influence

_cache: collections.OrderedDict = collections.OrderedDict()
_lock = threading.Lock()
_stats = {"builds": 0, "hits": 0}


@dataclass(frozen=True, eq=False)
class SourceGrid:
    """The horizontal grid of a source dataset.

    Either ``crs`` with 1-D native coordinates ``x``/``y`` (regular lat/lon,
    rotated pole, projected), or 2-D ``lon``/``lat`` (curvilinear).
    """

    dims: tuple[str, str]
    shape: tuple[int, int]
    fingerprint: str
    crs: pyproj.CRS | None = None
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    lon: np.ndarray | None = None
    lat: np.ndarray | None = None

    @classmethod
    def from_crs(cls, dims, crs, x, y):
        x, y = np.asarray(x, dtype="f8"), np.asarray(y, dtype="f8")
        digest = _digest(crs.to_wkt().encode(), x.tobytes(), y.tobytes())
        return cls(dims=tuple(dims), shape=(y.size, x.size), fingerprint=digest, crs=crs, x=x, y=y)

    @classmethod
    def from_lonlat(cls, dims, lon, lat):
        lon, lat = np.asarray(lon, dtype="f8"), np.asarray(lat, dtype="f8")
        digest = _digest(b"curvilinear", str(lon.shape).encode(), lon.tobytes(), lat.tobytes())
        return cls(dims=tuple(dims), shape=lon.shape, fingerprint=digest, lon=lon, lat=lat)

    def lonlat(self):
        """2-D longitude and latitude of the source cell centres."""
        if self.crs is None:
            return self.lon, self.lat
        xx, yy = np.meshgrid(self.x, self.y)
        to_geo = pyproj.Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)
        return to_geo.transform(xx, yy)


@dataclass(frozen=True, eq=False)
class NeighbourIndex:
    """Nearest neighbour: target cell k reads source cell ``index[k]`` where ``valid[k]``.

    Method ``source_cell`` is the same with ``valid`` = the target centre lies
    within its nearest source cell (its half diagonal): the source's mask,
    which ``keep_mask`` carries over.
    """

    method: str
    shape: tuple[int, int]
    index: np.ndarray
    valid: np.ndarray

    def apply(self, data):
        """Regrid ``data`` (..., ny_src, nx_src) to (..., ny, nx); NaN where invalid."""
        data = np.asarray(data)
        lead = data.shape[:-2]
        flat = data.reshape(lead + (-1,))
        out = flat[..., self.index].astype(np.result_type(data.dtype, np.float32), copy=False)
        out[..., ~self.valid] = np.nan
        return out.reshape(lead + self.shape)

    @property
    def nbytes(self):
        return self.index.nbytes + self.valid.nbytes


def get_index(source, target, method, roi=DEFAULT_ROI, neighbours=None, power=None):
    """Cached neighbour index or weight matrix from ``source`` (SourceGrid) to ``target`` (Grid).

    Parameters
    ----------
    method : {"nearest_neighbor", "bilinear", "idw", "conservative"}
    roi : float
        Radius of influence in metres: nearest neighbour and idw read only
        source cells at most this far from the target centre.
    neighbours : int, optional
        idw: number of nearest source cells averaged (default 8).
    power : float, optional
        idw: weights are distance ** -power (required for idw).
    """
    if method not in METHODS + ("source_cell",):
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    options = {"nearest_neighbor": (float(roi),), "idw": (float(roi), neighbours or 8, float(power or 0)),
               }.get(method, ())
    key = (source.fingerprint, target.fingerprint, method, options)
    # One lock for lookups and builds: threads of a worker that need the same
    # index wait for the first build instead of repeating it.
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            _stats["hits"] += 1
            return _cache[key]
        index = _build(source, target, method, *options)
        _cache[key] = index
        _stats["builds"] += 1
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return index


def _build(source, target, method, *options):
    if method == "conservative":
        from pyku import conservative
        return conservative.build(source, target)
    tlon, tlat = target.lonlat()
    if method == "nearest_neighbor":
        return _build_nearest(source, tlon, tlat, *options)
    if method == "source_cell":
        return _build_source_cell(source, tlon, tlat)
    if method == "idw":
        return _build_idw(source, tlon, tlat, *options)
    from pyku import bilinear
    return bilinear.build(source, tlon, tlat)


def cache_info():
    """Counters of this process's index cache: builds, hits, entries, bytes."""
    with _lock:
        return {**_stats, "entries": len(_cache), "nbytes": sum(i.nbytes for i in _cache.values())}


def clear_cache():
    """Forget every cached index and reset the counters."""
    with _lock:
        _cache.clear()
        _stats.update(builds=0, hits=0)


def _digest(*parts):
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part)
    return h.hexdigest()


def _half_diagonals(xyz):
    """Half the longer diagonal of each source cell (chord length), shape (ny, nx)."""
    if min(xyz.shape[:2]) < 2:
        raise ValueError("a source grid needs at least 2 cells along each axis")
    gx = np.gradient(xyz, axis=1)
    gy = np.gradient(xyz, axis=0)
    d1 = np.linalg.norm(gx + gy, axis=-1)
    d2 = np.linalg.norm(gx - gy, axis=-1)
    return 0.5 * np.fmax(d1, d2)


def _source_tree(source):
    """KD-tree of the usable source centres (unit sphere) and their flat indices."""
    slon, slat = source.lonlat()
    sxyz = unit_vectors(slon, slat)
    points = sxyz.reshape(-1, 3)
    usable = np.flatnonzero(np.isfinite(points).all(axis=1))
    # Unbalanced, non-compact: the fastest to build, and as fast to query on grids.
    return cKDTree(points[usable], balanced_tree=False, compact_nodes=False), usable, sxyz


def _build_nearest(source, tlon, tlat, roi):
    if source.crs is not None:
        found = _nearest_native(source, tlon, tlat)
        if found is not None:
            index, dist = found
            return _nearest_index(index, dist, roi, tlon.shape)
    tree, usable, _ = _source_tree(source)
    txyz = unit_vectors(tlon.ravel(), tlat.ravel())
    # Queried without a bound and cut afterwards: a large bound only slows the search.
    dist, nearest = tree.query(txyz, k=1, workers=-1)
    return _nearest_index(usable[nearest], dist, roi, tlon.shape)


def _nearest_index(index, dist, roi, shape):
    # pyresample's convention: roi is the straight-line (ECEF) distance in metres.
    valid = dist <= roi / EARTH_RADIUS
    index = np.where(valid, index, 0).astype(index_dtype(int(index.max(initial=0)) + 1))
    return NeighbourIndex("nearest_neighbor", shape, index, valid)


def _nearest_native(source, tlon, tlat):
    """Nearest source centres (ECEF) of a CRS grid without a tree, or None if unsuitable.

    A target point inside the source's hull has its nearest centre among the
    3 x 3 centres around its rounded position in the source's index space
    (its fractional index, exact through the CRS); one outside the hull has it
    on the outermost ring of cells, searched with a small tree.  Same answer
    as the tree over all cells, at a fraction of the cost.
    """
    from pyku.bilinear import native_fractions

    ny, nx = source.shape
    slon, slat = source.lonlat()
    sxyz = unit_vectors(slon, slat)
    if ny < 3 or nx < 3 or not np.isfinite(sxyz).all():
        return None
    fi, fj, cyclic = native_fractions(source, tlon, tlat)
    txyz = unit_vectors(tlon.ravel(), tlat.ravel())
    inside = np.flatnonzero(np.isfinite(fi) & np.isfinite(fj))
    index = np.zeros(txyz.shape[0], dtype=np.int64)
    best = np.full(txyz.shape[0], np.inf)
    ic, jc = np.rint(fi[inside]).astype(np.int64), np.rint(fj[inside]).astype(np.int64)
    points, near, near_index = txyz[inside], best[inside], index[inside]
    for dj in (-1, 0, 1):
        j = np.clip(jc + dj, 0, ny - 1)
        for di in (-1, 0, 1):
            i = (ic + di) % nx if cyclic else np.clip(ic + di, 0, nx - 1)
            d2 = ((sxyz[j, i] - points) ** 2).sum(axis=-1)
            closer = d2 < near
            near = np.where(closer, d2, near)
            near_index = np.where(closer, j * nx + i, near_index)
    best[inside], index[inside] = near, near_index
    outside = np.setdiff1d(np.arange(txyz.shape[0]), inside, assume_unique=True)
    if outside.size:
        ring = np.zeros((ny, nx), bool)
        ring[[0, -1], :] = ring[:, [0, -1]] = True
        ring = np.flatnonzero(ring)
        d, k = cKDTree(sxyz.reshape(-1, 3)[ring]).query(txyz[outside], k=1)
        best[outside], index[outside] = d ** 2, ring[k]
    return index, np.sqrt(best)


def _build_source_cell(source, tlon, tlat):
    """Nearest source cell where the target centre lies within it (its half diagonal)."""
    tree, usable, sxyz = _source_tree(source)
    radius = _half_diagonals(sxyz).ravel()
    txyz = unit_vectors(tlon.ravel(), tlat.ravel())
    # 1 % slack: the half diagonal is the farthest a point inside a cell can be.
    bound = float(np.nanmax(radius[usable])) * 1.01
    dist, nearest = tree.query(txyz, k=1, distance_upper_bound=bound, workers=-1)
    found = nearest < usable.size
    index = np.zeros(nearest.shape, dtype=index_dtype(sxyz.shape[0] * sxyz.shape[1]))
    index[found] = usable[nearest[found]]
    valid = found & (dist <= radius[index] * 1.01)
    return NeighbourIndex("source_cell", tlon.shape, index, valid)


def _build_idw(source, tlon, tlat, roi, neighbours, power):
    tree, usable, sxyz = _source_tree(source)
    txyz = unit_vectors(tlon.ravel(), tlat.ravel())
    k = max(1, min(int(neighbours), usable.size))
    dist, nearest = tree.query(txyz, k=k, distance_upper_bound=roi / EARTH_RADIUS, workers=-1)
    dist, nearest = dist.reshape(-1, k).T, nearest.reshape(-1, k).T
    found = nearest < usable.size
    index = np.where(found, usable[np.minimum(nearest, usable.size - 1)], 0)
    metres = dist * EARTH_RADIUS
    with np.errstate(divide="ignore"):
        weights = np.where(found, 1.0 / np.maximum(metres, 1e-6) ** power, 0.0)
    # A target on a source centre takes that value (pyku: weight 1e15 below 1e-15 m).
    exact = found & (metres < 1e-6)
    weights = np.where(exact.any(axis=0), np.where(exact, 1.0, 0.0), weights)
    nsource = sxyz.shape[0] * sxyz.shape[1]
    return WeightMatrix.from_neighbours("idw", tlon.shape, nsource, index, weights)


