"""First-order conservative weights: each target cell is the area-weighted mean
of the source cells it overlaps.

Cells are polygons in an equal-area working plane: cylindrical equal-area
when both grids are regular latitude/longitude (their cells are then exact
rectangles, so overlaps are exact, across the antimeridian too), else Lambert
azimuthal equal-area centred on the target (cell edges taken as straight
lines between corners there).
Overlap areas come from shapely's vectorised intersection with an STRtree.

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

from pyku.regrid import EARTH_RADIUS, WeightMatrix, unit_vectors

MIN_COVER = 0.5


def build(source, target):
    """:class:`pyku.regrid.WeightMatrix` of conservative weights from ``source`` to ``target`` (Grid)."""
    if _regular(source.crs) and _regular(target.pyproj_crs):
        spoly, sok, owner, tpoly, tok = _cea_polygons(source, target)
    else:
        tlon, tlat = _target_corners(target)
        slon, slat = _source_corners(source)
        plane = _laea_plane(tlon, tlat)
        tpoly, tok = _polygons(plane, tlon, tlat)
        spoly, sok = _polygons(plane, slon, slat)
        sok &= _near(slon, slat, tlon, tlat)  # the azimuthal plane is only sound near the target
        owner = np.arange(spoly.size)
    sidx, tidx = np.flatnonzero(sok), np.flatnonzero(tok)
    tree = shapely.STRtree(spoly[sidx])
    pairs = tree.query(tpoly[tidx], predicate="intersects")
    j, k = tidx[pairs[0]], sidx[pairs[1]]
    overlap = shapely.area(shapely.intersection(spoly[k], tpoly[j]))
    tarea = shapely.area(tpoly)
    keep = overlap > 1e-12 * tarea[j]
    j, i, overlap = j[keep], owner[k[keep]], overlap[keep]
    covered = np.bincount(j, weights=overlap, minlength=tpoly.size)
    valid = tok & (covered >= MIN_COVER * np.where(tok, tarea, np.inf))
    use = valid[j]
    nsource = source.shape[0] * source.shape[1]
    matrix = sparse.csr_matrix((overlap[use] / covered[j[use]], (j[use], i[use])),
                               shape=(tpoly.size, nsource))
    matrix.sum_duplicates()
    return WeightMatrix("conservative", target.shape, matrix, valid)


def _regular(crs):
    return (crs is not None and crs.is_geographic
            and crs.to_cf().get("grid_mapping_name") == "latitude_longitude")


def _cea_polygons(source, target):
    """Cells of two regular lat/lon grids as exact rectangles of the cylindrical equal-area plane.

    Longitudes are not wrapped: each source cell also appears shifted by
    +-360 degrees, so a target on -180..180 meets a source on 0..360.
    """
    def rectangles(x, y):
        xe, ye = _edges(x), np.clip(_edges(y), -90, 90)
        xe, ye = np.radians(xe) * EARTH_RADIUS, np.sin(np.radians(ye)) * EARTH_RADIUS
        x0, y0 = np.meshgrid(np.minimum(xe[:-1], xe[1:]), np.minimum(ye[:-1], ye[1:]))
        x1, y1 = np.meshgrid(np.maximum(xe[:-1], xe[1:]), np.maximum(ye[:-1], ye[1:]))
        return shapely.box(x0.ravel(), y0.ravel(), x1.ravel(), y1.ravel())

    turn = 2 * np.pi * EARTH_RADIUS
    base = rectangles(source.x, source.y)
    copies = [base, shapely.transform(base, lambda xy: xy + [turn, 0]),
              shapely.transform(base, lambda xy: xy - [turn, 0])]
    spoly = np.concatenate(copies)
    owner = np.tile(np.arange(base.size), 3)
    tpoly = rectangles(target.x, target.y)
    return spoly, shapely.area(spoly) > 0, owner, tpoly, shapely.area(tpoly) > 0


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


def _polygons(plane, lon, lat):
    """One polygon per cell from (ny+1, nx+1) corners, and which are usable."""
    x, y = plane.transform(lon, lat)
    ring = np.stack([np.stack([x[:-1, :-1], x[:-1, 1:], x[1:, 1:], x[1:, :-1]], -1),
                     np.stack([y[:-1, :-1], y[:-1, 1:], y[1:, 1:], y[1:, :-1]], -1)], -1)
    ring = ring.reshape(-1, 4, 2)
    ok = np.isfinite(ring).all(axis=(1, 2))
    # A cell wider than half the plane wraps around its antimeridian: leave it out.
    width = np.ptp(np.where(ok[:, None], ring[..., 0], 0.0), axis=1)
    ok &= width < np.pi * EARTH_RADIUS
    ring = np.where(ok[:, None, None], ring, 0.0)
    polys = shapely.polygons(np.concatenate([ring, ring[:, :1]], axis=1))
    polys = shapely.make_valid(polys)  # a cell given clockwise or twisted still has its area
    return polys, ok & (shapely.area(polys) > 0)


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
    return ((angle <= min(reach + 2 * size.max() + 1e-9, np.radians(89.0)))).ravel()
