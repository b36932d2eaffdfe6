"""Masking by polygons or by another field (``pyku.mask``).

Polygons come from whatever the user has: a GeoDataFrame (duck-typed:
``.geometry`` and ``.crs``), shapely geometries in longitude/latitude, or a
GeoJSON file; shapefiles and GeoPackages are read with geopandas when it is
installed (``pip install geopandas``: an optional extra, because reading
GeoJSON needs nothing beyond shapely).  A cell is kept when its centre lies
inside a polygon.  Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyproj
import shapely
import xarray as xr

from pyku import meta
from pyku.errors import GridError, PykuError


class MaskError(PykuError, ValueError):
    """A mask that cannot be read or does not fit the data."""


def apply_mask(dat, mask, from_nans=False, tolerance=0.001):
    """Set the climate variables of ``dat`` to NaN outside ``mask`` (pyku.mask.apply_mask).

    Parameters
    ----------
    dat : xarray.Dataset
    mask : GeoDataFrame, shapely geometry (or list), str/Path of a GeoJSON
        or shapefile, or an xarray Dataset/DataArray on the same grid.
    from_nans : bool
        Raster masks only: keep cells where the mask is not NaN (rather than
        where it is non-zero).
    tolerance : float
        Raster masks only: how far (in coordinate units) the mask's
        coordinates may be from the data's and still be matched.
    """
    if isinstance(mask, (xr.Dataset, xr.DataArray)):
        keep = _raster_keep(dat, mask, from_nans, tolerance)
    else:
        keep = _polygon_keep(dat, mask)
    out = dat.copy()
    for var in meta.get_geodata_varnames(dat):
        out[var] = dat[var].where(keep)
    return out


def apply_polygon_mask(dat, mask, from_nans=False, tolerance=0.001):
    """:func:`apply_mask` with polygons (pyku's name for that case)."""
    return apply_mask(dat, mask, from_nans=from_nans, tolerance=tolerance)


def apply_raster_mask(dat, mask, from_nans=False, tolerance=0.001):
    """:func:`apply_mask` with a field on the data's grid (pyku's name for that case)."""
    if not isinstance(mask, (xr.Dataset, xr.DataArray)):
        raise MaskError(f"apply_raster_mask: the mask must be an xarray Dataset or DataArray, "
                        f"not {type(mask).__name__}")
    return apply_mask(dat, mask, from_nans=from_nans, tolerance=tolerance)


def _raster_keep(dat, mask, from_nans, tolerance):
    if isinstance(mask, xr.Dataset):
        names = meta.get_geodata_varnames(mask) or list(mask.data_vars)
        if not names:
            raise MaskError("apply_mask: the mask dataset has no data variable")
        mask = mask[names[0]]
    y, x = meta.get_projection_yx_varnames(dat)
    if y is None or x is None:
        raise GridError("apply_mask: the data has no 1-D y/x coordinates to match a raster mask on")
    try:
        mask = mask.reindex({y: dat[y], x: dat[x]}, method="nearest", tolerance=tolerance)
    except (KeyError, ValueError) as exc:
        raise MaskError(f"apply_mask: the mask is not on the data's grid ({y}, {x}): {exc}") from exc
    if mask.isnull().all():
        raise MaskError(f"apply_mask: no mask cell within tolerance={tolerance} of the data's grid")
    return mask.notnull() if from_nans else (mask.fillna(0) != 0)


def _polygon_keep(dat, mask):
    geometry = _geometry_lonlat(mask)
    from pyku.project import source_grid

    source, _, _ = source_grid(dat)
    lon, lat = source.lonlat()
    lon = np.asarray(lon)
    inside = shapely.contains_xy(geometry, lon, np.asarray(lat))
    # Data on 0..360 longitudes, polygons on -180..180: try the shifted longitudes too.
    inside |= shapely.contains_xy(geometry, np.where(lon > 180, lon - 360, lon + 360), np.asarray(lat))
    return xr.DataArray(inside, dims=source.dims)


def _geometry_lonlat(mask):
    """One shapely geometry in longitude/latitude from the accepted mask forms."""
    if isinstance(mask, (str, Path)):
        mask = _read(Path(mask))
    crs = None
    if hasattr(mask, "geometry") and hasattr(mask, "crs"):  # a GeoDataFrame or GeoSeries
        crs, geoms = mask.crs, list(mask.geometry)
    elif isinstance(mask, shapely.Geometry):
        geoms = [mask]
    elif isinstance(mask, (list, tuple)) and all(isinstance(g, shapely.Geometry) for g in mask):
        geoms = list(mask)
    else:
        raise MaskError(f"apply_mask: a mask of type {type(mask).__name__} is not accepted; give a "
                        "GeoDataFrame, shapely geometries, a GeoJSON/shapefile path or an xarray mask")
    geometry = shapely.union_all(geoms)
    if crs is not None and not pyproj.CRS(crs).equals(pyproj.CRS("EPSG:4326")):
        to_geo = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        geometry = shapely.transform(geometry, lambda xy: np.column_stack(to_geo.transform(xy[:, 0], xy[:, 1])))
    return geometry


def _read(path):
    if not path.exists():
        raise MaskError(f"apply_mask: mask file {path} does not exist")
    if path.suffix.lower() in (".geojson", ".json"):
        try:
            data = json.loads(path.read_text())
            features = data["features"] if data.get("type") == "FeatureCollection" else [data]
            return [shapely.geometry.shape(f.get("geometry", f)) for f in features]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MaskError(f"apply_mask: {path} is not valid GeoJSON: {exc}") from exc
    try:
        import geopandas
    except ImportError:
        raise MaskError(f"apply_mask: reading {path.suffix} files needs geopandas "
                        "(pip install geopandas), or convert the file to GeoJSON") from None
    return geopandas.read_file(path)
