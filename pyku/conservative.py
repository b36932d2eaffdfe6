"""First-order conservative weights: each target cell is the area-weighted mean
of the source cells it overlaps.

Cells are polygons in an equal-area working plane: cylindrical equal-area
when both grids are regular latitude/longitude (their cells are then exact
rectangles, so overlaps are exact, across the antimeridian too), else Lambert
azimuthal equal-area centred on the target (cell edges taken as straight
lines between corners there).
Candidate pairs come from shapely's STRtree on bounding boxes; overlap areas
from a vectorised Sutherland-Hodgman clip of each source quadrilateral by
its (convex) target cell, in numpy.

The weight of source cell i in target cell j is overlap(i, j) / covered(j),
where covered(j) is the part of target cell j that source cells cover; a
target cell less than half covered is NaN.  Where the source covers the
target completely, sum_j a_j out_j = sum_i overlap_i v_i: the area integral
is preserved (precipitation totals stay totals).  Cells that straddle the
working plane's antimeridian are left out.
"""

from __future__ import annotations

import numpy as np
import pyproj
import shapely
from scipy import sparse

from pyku.weights import EARTH_RADIUS, WeightMatrix, unit_vectors

MIN_COVER = 0.5


def build(source, target):
    """:class:`pyku.weights.WeightMatrix` of conservative weights from ``source`` to ``target`` (Grid)."""
    if _regular(source.crs) and _regular(target.pyproj_crs):
        sring, sok, owner, tring, tok = _cea_rings(source, target)
    else:
        tlon, tlat = _target_corners(target)
        slon, slat = _source_corners(source)
        plane = _laea_plane(tlon, tlat)
        tring, tok = _rings(plane, tlon, tlat)
        sring, sok = _rings(plane, slon, slat)
        sok &= _near(slon, slat, tlon, tlat)  # the azimuthal plane is only sound near the target
        owner = np.arange(sok.size)
    j, k = _candidate_pairs(sring, sok, tring, tok)
    tarea = np.abs(_shoelace(tring, np.full(len(tring), 4)))
    overlap = _overlap_areas(sring[k], tring[j])
    keep = overlap > 1e-12 * tarea[j]
    j, i, overlap = j[keep], owner[k[keep]], overlap[keep]
    covered = np.bincount(j, weights=overlap, minlength=len(tring))
    valid = tok & (covered >= MIN_COVER * np.where(tok, tarea, np.inf))
    use = valid[j]
    nsource = source.shape[0] * source.shape[1]
    matrix = sparse.csr_matrix((overlap[use] / covered[j[use]], (j[use], i[use])),
                               shape=(len(tring), nsource))
    matrix.sum_duplicates()
    return WeightMatrix("conservative", target.shape, matrix, valid)


def _candidate_pairs(sring, sok, tring, tok):
    """(target, source) index pairs whose bounding boxes intersect (shapely's STRtree)."""
    def boxes(ring):
        lo, hi = ring.min(axis=1), ring.max(axis=1)
        return shapely.box(lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1])

    sidx, tidx = np.flatnonzero(sok), np.flatnonzero(tok)
    tree = shapely.STRtree(boxes(sring[sidx]))
    pairs = tree.query(boxes(tring[tidx]), predicate="intersects")
    return tidx[pairs[0]], sidx[pairs[1]]


def _cross(a, b):
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _shoelace(ring, count):
    """Signed area of polygons (n, m, 2) whose first ``count`` vertices are used."""
    m = ring.shape[1]
    nxt = np.where(np.arange(m)[None] + 1 < count[:, None], np.arange(m)[None] + 1, 0)
    used = np.arange(m)[None] < count[:, None]
    following = np.take_along_axis(ring, nxt[..., None], axis=1)
    return 0.5 * np.where(used, _cross(ring, following), 0.0).sum(axis=1)


def _overlap_areas(subject, clip, block=32768):
    """Areas of subject (n, 4, 2) quads clipped by convex clip (n, 4, 2) quads.

    Pairs with the subject wholly inside the clip (its own area) or wholly
    beyond one clip edge (0) are settled at once; the rest are clipped, a
    block at a time so that the work arrays stay in cache.
    """
    n = len(subject)
    clip = np.where((_shoelace(clip, np.full(n, 4)) < 0)[:, None, None], clip[:, ::-1], clip)
    inside = np.ones((n, 4), bool)
    areas = np.zeros(n)
    outside = np.zeros(n, bool)
    for edge in range(4):
        a, b = clip[:, edge][:, None], clip[:, (edge + 1) % 4][:, None]
        side = _cross(b - a, subject - a) >= 0
        inside &= side
        outside |= ~side.any(axis=1)
    whole = inside.all(axis=1)
    areas[whole] = np.abs(_shoelace(subject[whole], np.full(whole.sum(), 4)))
    rest = np.flatnonzero(~whole & ~outside)
    for start in range(0, rest.size, block):
        part = rest[start:start + block]
        areas[part] = _clip_areas(subject[part], clip[part])
    return areas


def _clip_areas(subject, clip):
    """Sutherland-Hodgman, vectorised over pairs; clip quads convex and counter-clockwise.

    At most 8 vertices survive clipping a quadrilateral by a convex quadrilateral.
    """
    n = len(subject)
    poly, count = np.zeros((n, 8, 2)), np.full(n, 4)
    poly[:, :4] = subject
    rows = np.arange(n)[:, None]
    for edge in range(4):
        a, b = clip[:, edge][:, None], clip[:, (edge + 1) % 4][:, None]
        cur = poly
        prev = np.take_along_axis(poly, ((np.arange(8)[None] - 1) % np.maximum(count, 1)[:, None])[..., None], 1)
        side_cur, side_prev = _cross(b - a, cur - a) >= 0, _cross(b - a, prev - a) >= 0
        used = np.arange(8)[None] < count[:, None]
        d = cur - prev
        den = _cross(b - a, d)  # 0 only for edges parallel to the clip edge: no crossing used
        s = np.divide(_cross(b - a, a - prev), den, out=np.zeros_like(den), where=den != 0)
        crossing = prev + np.clip(s, 0.0, 1.0)[..., None] * d
        # Each input vertex emits (crossing if the side changes) then (itself if inside).
        out = np.stack([crossing, cur], axis=2).reshape(n, 16, 2)
        emit = np.stack([used & (side_cur != side_prev), used & side_cur], axis=2).reshape(n, 16)
        order = np.argsort(~emit, axis=1, kind="stable")[:, :8]
        poly = out[rows, order]
        count = np.minimum(emit.sum(axis=1), 8)
    return np.abs(_shoelace(poly, count))


def _regular(crs):
    return (crs is not None and crs.is_geographic
            and crs.to_cf().get("grid_mapping_name") == "latitude_longitude")


def _cea_rings(source, target):
    """Cells of two regular lat/lon grids as exact rectangles of the cylindrical equal-area plane.

    Longitudes are not wrapped: each source cell also appears shifted by
    +-360 degrees, so a target on -180..180 meets a source on 0..360.
    """
    def rectangles(x, y):
        xe, ye = _edges(x), np.clip(_edges(y), -90, 90)
        xe, ye = np.radians(xe) * EARTH_RADIUS, np.sin(np.radians(ye)) * EARTH_RADIUS
        x0, y0 = np.meshgrid(xe[:-1], ye[:-1])
        x1, y1 = np.meshgrid(xe[1:], ye[1:])
        ring = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1),
                         np.stack([x1, y1], -1), np.stack([x0, y1], -1)], axis=2)
        return ring.reshape(-1, 4, 2)

    turn = np.array([2 * np.pi * EARTH_RADIUS, 0.0])
    base = rectangles(source.x, source.y)
    sring = np.concatenate([base, base + turn, base - turn])
    owner = np.tile(np.arange(len(base)), 3)
    tring = rectangles(target.x, target.y)
    return sring, np.ones(len(sring), bool), owner, tring, np.ones(len(tring), bool)


def _edges(centres):
    """Cell edges of 1-D centres: midpoints, the ends extrapolated by half a step."""
    c = np.asarray(centres, dtype="f8")
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def _to_lonlat(crs, x, y):
    xx, yy = np.meshgrid(x, y)
    to_geo = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return to_geo.transform(xx, yy)


def _target_corners(grid):
    return _to_lonlat(grid.pyproj_crs, _edges(grid.x), _edges(grid.y))


def _source_corners(source):
    """(ny+1, nx+1) corner lon/lat: from the CRS edges, or averaged from 2-D centres."""
    if source.crs is not None:
        return _to_lonlat(source.crs, _edges(source.x), _edges(source.y))
    xyz = unit_vectors(source.lon, source.lat)
    xyz = np.concatenate([2 * xyz[:1] - xyz[1:2], xyz, 2 * xyz[-1:] - xyz[-2:-1]], axis=0)
    xyz = np.concatenate([2 * xyz[:, :1] - xyz[:, 1:2], xyz, 2 * xyz[:, -1:] - xyz[:, -2:-1]], axis=1)
    corner = 0.25 * (xyz[1:, 1:] + xyz[:-1, 1:] + xyz[1:, :-1] + xyz[:-1, :-1])
    corner /= np.linalg.norm(corner, axis=-1, keepdims=True)
    return (np.degrees(np.arctan2(corner[..., 1], corner[..., 0])),
            np.degrees(np.arcsin(np.clip(corner[..., 2], -1, 1))))


def _laea_plane(tlon, tlat):
    """Transformer lon/lat -> the Lambert azimuthal equal-area plane centred on the target."""
    centre = unit_vectors(tlon, tlat).reshape(-1, 3).mean(axis=0)
    lon0 = float(np.degrees(np.arctan2(centre[1], centre[0])))
    lat0 = float(np.degrees(np.arcsin(centre[2] / np.linalg.norm(centre))))
    proj = f"+proj=laea +lat_0={lat0} +lon_0={lon0} +R={EARTH_RADIUS}"
    return pyproj.Transformer.from_crs("EPSG:4326", proj, always_xy=True)


def _rings(plane, lon, lat):
    """One quadrilateral (n, 4, 2) per cell from (ny+1, nx+1) corners, and which are usable."""
    x, y = plane.transform(lon, lat)
    ring = np.stack([np.stack([x[:-1, :-1], x[:-1, 1:], x[1:, 1:], x[1:, :-1]], -1),
                     np.stack([y[:-1, :-1], y[:-1, 1:], y[1:, 1:], y[1:, :-1]], -1)], -1)
    ring = ring.reshape(-1, 4, 2)
    ok = np.isfinite(ring).all(axis=(1, 2))
    # A cell wider than half the plane wraps around its antimeridian: leave it out.
    ok &= np.ptp(np.where(ok[:, None], ring[..., 0], 0.0), axis=1) < np.pi * EARTH_RADIUS
    ring = np.where(ok[:, None, None], ring, 0.0)
    return ring, ok & (np.abs(_shoelace(ring, np.full(len(ring), 4))) > 0)


def _near(slon, slat, tlon, tlat):
    """Source cells within reach of the target (less than a hemisphere from its centre)."""
    txyz = unit_vectors(tlon, tlat).reshape(-1, 3)
    centre = txyz.mean(axis=0)
    centre /= np.linalg.norm(centre)
    reach = np.arccos(np.clip(txyz @ centre, -1, 1)).max()
    sxyz = unit_vectors(slon, slat)
    cells = 0.25 * (sxyz[1:, 1:] + sxyz[:-1, 1:] + sxyz[1:, :-1] + sxyz[:-1, :-1])
    cells /= np.linalg.norm(cells, axis=-1, keepdims=True)
    size = np.linalg.norm(sxyz[1:, 1:] - sxyz[:-1, :-1], axis=-1)
    angle = np.arccos(np.clip(cells @ centre, -1, 1))
    return (angle <= min(reach + 2 * size.max() + 1e-9, np.radians(89.0))).ravel()
