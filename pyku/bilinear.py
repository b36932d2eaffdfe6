"""Bilinear weights, in the source's native index space.

With a CRS and 1-D coordinates the fractional indices are exact (target
lon/lat -> source CRS -> position along the coordinates); a curvilinear
source (2-D lat/lon only) inverts the bilinear map of the surrounding cells
by Newton steps in the plane tangent to the sphere at the target point.
Target points outside the hull of source cell centres get NaN.  The result is
a sparse weight matrix (:class:`pyku.weights.WeightMatrix`) that stores only
non-zero weights, so a NaN source cell spoils only the target cells that
really read it.
"""

from __future__ import annotations

import numpy as np
import pyproj
from scipy.spatial import cKDTree

from pyku.weights import WeightMatrix, index_dtype, unit_vectors


def build(source, tlon, tlat):
    """:class:`WeightMatrix` of bilinear weights from ``source`` to target points."""
    if source.crs is not None:
        return _build_native(source, tlon, tlat)
    return _build_curvilinear(source, tlon, tlat)


def _fractional(coord, values, slack=1e-6):
    """Fractional position of ``values`` along a monotonic 1-D ``coord``; NaN outside.

    A value within ``slack`` of a cell beyond the first or last centre counts as
    on it: a target centre on the source's edge centre comes back from the CRS
    round trip a few ulp outside, and must not be lost.
    """
    order = np.arange(coord.size, dtype="f8")
    if coord[0] > coord[-1]:
        coord, order = coord[::-1], order[::-1]
    step = abs(coord[-1] - coord[0]) / max(coord.size - 1, 1)
    lo, hi = coord[0] - slack * step, coord[-1] + slack * step
    inside = (values >= lo) & (values <= hi)
    return np.where(inside, np.interp(values, coord, order), np.nan)


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
    index = index.astype(index_dtype(nx * ny))
    weights = np.stack([(1 - s) * (1 - t), s * (1 - t), (1 - s) * t, s * t])
    weights[:, ~valid] = 0.0
    return WeightMatrix.from_neighbours("bilinear", tshape, nx * ny, index, weights)


def _build_native(source, tlon, tlat):
    fi, fj, cyclic = native_fractions(source, tlon, tlat)
    return _bilinear_from_fractions(fi, fj, source.shape, tlon.shape, cyclic=cyclic)


def native_fractions(source, tlon, tlat):
    """Fractional (column, row) positions of target points in a CRS source's index space.

    NaN outside the hull of source centres; ``cyclic`` is True for a global
    angular source, whose column nx - 1 + s then lies between the last and
    the first column.
    """
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
    return _fractional(x, xs), _fractional(source.y, ys), cyclic


def _outside(values, coord):
    lo, hi = min(coord[0], coord[-1]), max(coord[0], coord[-1])
    return (values < lo) | (values > hi)


def _build_curvilinear(source, tlon, tlat, iterations=12):
    slon, slat = source.lonlat()
    ny, nx = source.shape
    sxyz = unit_vectors(slon, slat)
    points = sxyz.reshape(-1, 3)
    usable = np.flatnonzero(np.isfinite(points).all(axis=1))
    tree = cKDTree(points[usable], balanced_tree=False)
    lon, lat = np.radians(tlon.ravel()), np.radians(tlat.ravel())
    txyz = unit_vectors(tlon.ravel(), tlat.ravel())
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
