"""Neighbour indices and weights for reprojection, built once and cached.

Reprojecting a time series is one gather per time step with the same
indices, so the expensive part — finding, for every target cell, the source
cells it reads and with which weights — is done once per (source grid,
target grid, method) and kept in an in-process LRU cache.  Every time step,
every variable and every file on the same grid reuses it; on a dask worker
the cache lives in the worker process, so it is built once per worker.

* ``nearest_neighbor``: a :class:`scipy.spatial.cKDTree` on 3-D unit-sphere
  (ECEF) coordinates, so no seam at the antimeridian and no distortion near
  the poles.  A target cell further from its nearest source centre than that
  cell's half diagonal is outside the source domain and gets NaN.
* ``bilinear``: weights in the source's native index space.  With a CRS and
  1-D coordinates the fractional indices are exact (target lon/lat → source
  CRS → position along the coordinates); a curvilinear source (2-D lat/lon
  only) inverts the bilinear map of the surrounding cells by Newton steps in
  the plane tangent to the sphere at the target point.  Target points
  outside the hull of source cell centres get NaN.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from dataclasses import dataclass

import numpy as np
import pyproj
from scipy.spatial import cKDTree

CACHE_SIZE = 8
METHODS = ("nearest_neighbor", "bilinear")

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
    """Which source cells (``index``, k × n) with which ``weights`` feed each target cell."""

    method: str
    shape: tuple[int, int]
    index: np.ndarray
    weights: np.ndarray | None
    valid: np.ndarray

    def apply(self, data):
        """Regrid ``data`` (..., ny_src, nx_src) to (..., ny, nx); NaN where invalid."""
        data = np.asarray(data)
        lead = data.shape[:-2]
        flat = data.reshape(lead + (-1,))
        dtype = np.result_type(data.dtype, np.float32)
        if self.weights is None:
            out = flat[..., self.index[0]].astype(dtype, copy=False)
        else:
            out = np.zeros(lead + (self.index.shape[1],), dtype=dtype)
            for idx, w in zip(self.index, self.weights.astype(dtype), strict=True):
                out += flat[..., idx] * w
        out[..., ~self.valid] = np.nan
        return out.reshape(lead + self.shape)

    @property
    def nbytes(self):
        w = 0 if self.weights is None else self.weights.nbytes
        return self.index.nbytes + w + self.valid.nbytes


def get_index(source, target, method):
    """Cached :class:`NeighbourIndex` from ``source`` (SourceGrid) to ``target`` (Grid)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    key = (source.fingerprint, target.fingerprint, method)
    # One lock for lookups and builds: threads of a worker that need the same
    # index wait for the first build instead of repeating it.
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            _stats["hits"] += 1
            return _cache[key]
        tlon, tlat = target.lonlat()
        if method == "nearest_neighbor":
            index = _build_nearest(source, tlon, tlat)
        elif source.crs is not None:
            index = _build_bilinear_native(source, tlon, tlat)
        else:
            index = _build_bilinear_curvilinear(source, tlon, tlat)
        _cache[key] = index
        _stats["builds"] += 1
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return index


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


def _unit_vectors(lon, lat):
    """ECEF coordinates on the unit sphere, shape (..., 3)."""
    lon, lat = np.radians(lon), np.radians(lat)
    coslat = np.cos(lat)
    return np.stack([coslat * np.cos(lon), coslat * np.sin(lon), np.sin(lat)], axis=-1)


def _index_dtype(n):
    return np.int32 if n < 2**31 else np.int64


def _half_diagonals(xyz):
    """Half the longer diagonal of each source cell (chord length), shape (ny, nx)."""
    if min(xyz.shape[:2]) < 2:
        raise ValueError("a source grid needs at least 2 cells along each axis")
    gx = np.gradient(xyz, axis=1)
    gy = np.gradient(xyz, axis=0)
    d1 = np.linalg.norm(gx + gy, axis=-1)
    d2 = np.linalg.norm(gx - gy, axis=-1)
    return 0.5 * np.fmax(d1, d2)


def _build_nearest(source, tlon, tlat):
    slon, slat = source.lonlat()
    sxyz = _unit_vectors(slon, slat)
    radius = _half_diagonals(sxyz).ravel()
    points = sxyz.reshape(-1, 3)
    usable = np.flatnonzero(np.isfinite(points).all(axis=1) & np.isfinite(radius))
    tree = cKDTree(points[usable], balanced_tree=False)  # faster to build, as fast to query
    txyz = _unit_vectors(tlon.ravel(), tlat.ravel())
    # 1 % slack: the half diagonal is the farthest a point inside a cell can be.
    bound = float(np.nanmax(radius[usable])) * 1.01
    dist, nearest = tree.query(txyz, k=1, distance_upper_bound=bound, workers=-1)
    found = nearest < usable.size
    index = np.zeros(nearest.shape, dtype=_index_dtype(points.shape[0]))
    index[found] = usable[nearest[found]]
    valid = found & (dist <= radius[index] * 1.01)
    index[~valid] = 0
    return NeighbourIndex("nearest_neighbor", tlon.shape, index[None, :], None, valid)


def _fractional(coord, values):
    """Fractional position of ``values`` along a monotonic 1-D ``coord``; NaN outside."""
    order = np.arange(coord.size, dtype="f8")
    if coord[0] > coord[-1]:
        coord, order = coord[::-1], order[::-1]
    return np.interp(values, coord, order, left=np.nan, right=np.nan)


def _bilinear_from_fractions(fi, fj, shape, tshape, cyclic=False):
    """Bilinear weights from fractional indices; ``cyclic`` wraps the last x cell to the first."""
    ny, nx = shape
    if ny < 2 or nx < 2:
        raise ValueError("bilinear needs at least 2 source cells along each axis")
    valid = np.isfinite(fi) & np.isfinite(fj)
    fi, fj = np.where(valid, fi, 0.0), np.where(valid, fj, 0.0)
    i0 = np.clip(np.floor(fi), 0, nx - (1 if cyclic else 2)).astype(np.int64)
    j0 = np.clip(np.floor(fj), 0, ny - 2).astype(np.int64)
    s, t = fi - i0, fj - j0
    i1 = (i0 + 1) % nx
    index = np.stack([j0 * nx + i0, j0 * nx + i1, (j0 + 1) * nx + i0, (j0 + 1) * nx + i1])
    index = index.astype(_index_dtype(nx * ny))
    weights = np.stack([(1 - s) * (1 - t), s * (1 - t), (1 - s) * t, s * t])
    index[:, ~valid] = 0
    weights[:, ~valid] = 0.0
    return NeighbourIndex("bilinear", tshape, index, weights, valid)


def _build_bilinear_native(source, tlon, tlat):
    to_src = pyproj.Transformer.from_crs("EPSG:4326", source.crs, always_xy=True)
    xs, ys = to_src.transform(tlon.ravel(), tlat.ravel())
    xs, ys = np.asarray(xs, dtype="f8"), np.asarray(ys, dtype="f8")
    x, cyclic = source.x, False
    if source.crs.is_geographic:
        # Angular x (longitude, rotated longitude) is periodic: bring target
        # values into the 360° window centred on the source's range, and let
        # a global source interpolate across its seam.
        centre = 0.5 * (x.min() + x.max())
        xs = (xs - centre + 180.0) % 360.0 - 180.0 + centre
        step = (x[-1] - x[0]) / (x.size - 1)
        cyclic = x.size > 2 and abs(abs(step) * x.size - 360.0) < 1e-6 * 360
        if cyclic:
            x = np.append(x, x[-1] + step)
            xs = np.where(_outside(xs, x), xs + np.sign(step) * 360.0, xs)
    fi, fj = _fractional(x, xs), _fractional(source.y, ys)
    return _bilinear_from_fractions(fi, fj, source.shape, tlon.shape, cyclic=cyclic)


def _outside(values, coord):
    lo, hi = min(coord[0], coord[-1]), max(coord[0], coord[-1])
    return (values < lo) | (values > hi)


def _build_bilinear_curvilinear(source, tlon, tlat, iterations=12):
    slon, slat = source.lonlat()
    ny, nx = source.shape
    sxyz = _unit_vectors(slon, slat)
    points = sxyz.reshape(-1, 3)
    usable = np.flatnonzero(np.isfinite(points).all(axis=1))
    tree = cKDTree(points[usable], balanced_tree=False)
    lon, lat = np.radians(tlon.ravel()), np.radians(tlat.ravel())
    txyz = _unit_vectors(tlon.ravel(), tlat.ravel())
    east = np.stack([-np.sin(lon), np.cos(lon), np.zeros_like(lon)], axis=-1)
    north = np.stack([-np.sin(lat) * np.cos(lon), -np.sin(lat) * np.sin(lon), np.cos(lat)], axis=-1)
    node = usable[tree.query(txyz, k=1, workers=-1)[1]]
    jn, in_ = np.divmod(node, nx)
    fi = np.full(node.shape, np.nan)
    fj = np.full(node.shape, np.nan)
    for dj in (-1, 0):
        for di in (-1, 0):
            j0 = np.clip(jn + dj, 0, ny - 2)
            i0 = np.clip(in_ + di, 0, nx - 2)

            def plane(j, i):
                d = sxyz[j, i] - txyz
                return np.stack([(d * east).sum(-1), (d * north).sum(-1)], axis=-1)

            p00, p10, p01, p11 = plane(j0, i0), plane(j0, i0 + 1), plane(j0 + 1, i0), plane(j0 + 1, i0 + 1)
            b, c, d = p10 - p00, p01 - p00, p11 - p10 - p01 + p00
            s = np.full(node.shape, 0.5)
            t = np.full(node.shape, 0.5)
            for _ in range(iterations):  # Newton on p00 + b s + c t + d s t = 0
                f = p00 + b * s[:, None] + c * t[:, None] + d * (s * t)[:, None]
                js = b + d * t[:, None]
                jt = c + d * s[:, None]
                det = js[:, 0] * jt[:, 1] - js[:, 1] * jt[:, 0]
                with np.errstate(divide="ignore", invalid="ignore"):
                    s = s - (f[:, 0] * jt[:, 1] - f[:, 1] * jt[:, 0]) / det
                    t = t - (js[:, 0] * f[:, 1] - js[:, 1] * f[:, 0]) / det
            eps = 1e-6
            inside = (np.isnan(fi) & (s >= -eps) & (s <= 1 + eps) & (t >= -eps) & (t <= 1 + eps))
            fi = np.where(inside, i0 + np.clip(s, 0, 1), fi)
            fj = np.where(inside, j0 + np.clip(t, 0, 1), fj)
    return _bilinear_from_fractions(fi, fj, source.shape, tlon.shape)
