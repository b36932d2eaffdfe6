"""Areas and georeferencing, under pyku's names (``pyku.geo``).

:func:`load_area_def` and :func:`get_area_def` give the area a name or a
dataset stands for; :func:`project` (in :mod:`pyku.project`) reprojects;
:func:`get_lonlats` and :func:`wrap_longitudes` as pyku has them.
"""

from __future__ import annotations

import numpy as np

from pyku.areas import AreaDefinition, find_area, list_standard_areas, load_area_def
from pyku.project import project, source_grid

__all__ = ["AreaDefinition", "get_area_def", "get_lonlats", "list_standard_areas", "load_area_def", "project",
           "wrap_longitudes"]


def get_area_def(ds):
    """The :class:`AreaDefinition` of the grid ``ds`` is on.

    Its ``area_id`` is the name of one of pyku's areas when the grid is one
    of them (same CRS, centres within 1e-6 m or 1e-11 degrees), else None.
    Needs a CF grid mapping with 1-D x/y (or regular 1-D lat/lon): a
    curvilinear grid is not an area and raises :class:`pyku.GridError`.
    """
    from pyku.errors import GridError
    from pyku.grids import Grid

    source, _, _ = source_grid(ds)
    if source.crs is None:
        raise GridError("get_area_def: the dataset has only 2-D latitude/longitude (a curvilinear "
                        "grid), which is not an area; give it a CF grid mapping with 1-D x/y")
    x, y = source.x, source.y
    if x.size < 2 or y.size < 2:
        raise GridError(f"get_area_def: need at least 2 cells along x and y, have {x.size} x {y.size}")
    dx, dy = (x[-1] - x[0]) / (x.size - 1), (y[-1] - y[0]) / (y.size - 1)
    grid = Grid(crs=source.crs.to_wkt(), x0=float(x[0]), dx=float(dx), nx=x.size, y0=float(y[0]),
                dy=float(dy), ny=y.size, dims=source.dims)
    if not (abs(grid.x - x).max() <= 1e-6 * abs(dx) and abs(grid.y - y).max() <= 1e-6 * abs(dy)):
        raise GridError("get_area_def: the x/y coordinates are not evenly spaced, so not an area")
    name = find_area(grid)
    if name is not None:
        from pyku.areas import get_grid
        return AreaDefinition(get_grid(name))
    return AreaDefinition(grid)


def get_lonlats(ds, dtype="ndarray"):
    """2-D longitudes and latitudes of the cell centres (pyku.geo.get_lonlats).

    From the dataset's latitude/longitude, or computed from its grid mapping
    and x/y when it has none.  ``dtype="ndarray"`` gives ``(lons, lats)``;
    ``"xarray.Dataset"`` a dataset holding ``lon`` and ``lat`` on the grid's dims.
    """
    import xarray as xr

    from pyku.errors import OptionError

    if dtype not in ("ndarray", "xarray.Dataset", "xarray"):
        raise OptionError(f"get_lonlats: dtype={dtype!r}; use 'ndarray' or 'xarray.Dataset'")
    source, _, _ = source_grid(ds)
    lons, lats = (np.asarray(a) for a in source.lonlat())
    if dtype == "ndarray":
        return lons, lats
    return xr.Dataset(coords={"lon": (source.dims, lons, {"standard_name": "longitude", "units": "degrees_east"}),
                              "lat": (source.dims, lats, {"standard_name": "latitude", "units": "degrees_north"})})


def wrap_longitudes(ds):
    """Longitudes to [-180, 180) and sorted increasing (pyku.geo.wrap_longitudes).

    For regular latitude/longitude data (1-D longitude as a dimension), such
    as ERA5's 0..360.
    """
    from pyku import meta
    from pyku.errors import GridError

    _, lon = meta.get_geographic_latlon_varnames(ds)
    if lon is None or ds[lon].ndim != 1 or ds[lon].dims[0] != lon:
        raise GridError("wrap_longitudes: needs a 1-D longitude dimension coordinate "
                        "(regular latitude/longitude data)")
    wrapped = (ds[lon] + 180.0) % 360.0 - 180.0
    return ds.assign_coords({lon: wrapped.assign_attrs(ds[lon].attrs)}).sortby(lon)
