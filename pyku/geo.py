"""Reprojection of datasets onto named or user-defined grids.

:func:`project` finds the source's horizontal grid (CF grid mapping with 1-D
coordinates, regular 1-D lat/lon, or curvilinear 2-D lat/lon), gets the
cached neighbour index from :mod:`pyku.regrid` and applies it to every
georeferenced variable — lazily for dask-backed data, keeping time chunks.
The result is CF: target coordinates, 2-D lat/lon, a grid-mapping variable
and ``grid_mapping`` on each projected variable.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyproj
import xarray as xr

from pyku import regrid
from pyku.errors import GridError
from pyku.grids import get_grid

_METHOD_ALIASES = {
    "nearest_neighbor": "nearest_neighbor", "nearest_neighbour": "nearest_neighbor",
    "nearest": "nearest_neighbor", "nn": "nearest_neighbor",
    "bilinear": "bilinear", "linear": "bilinear",
}
_X_NAMES = {"projection_x_coordinate", "grid_longitude", "longitude"}
_Y_NAMES = {"projection_y_coordinate", "grid_latitude", "latitude"}
# Encodings that describe the source's on-disk layout, wrong after regridding.
_STALE_ENCODING = ("chunksizes", "preferred_chunks", "original_shape", "contiguous",
                   "coordinates", "grid_mapping", "source")


def project(ds, target, method="nearest_neighbor"):
    """Reproject every georeferenced variable of ``ds`` onto ``target``.

    Parameters
    ----------
    ds : xarray.Dataset
        Source on a regular lat/lon, rotated-pole, projected (CF grid
        mapping) or curvilinear (2-D lat/lon) grid.
    target : str, dict or pyku.grids.Grid
        A catalogue name (see :func:`pyku.grids.list_grids`), a
        :class:`~pyku.grids.Grid`, or a dict with ``crs``, ``shape`` (ny, nx)
        and ``extent`` (xmin, ymin, xmax, ymax outer edges).
    method : {"nearest_neighbor", "bilinear"}
        Target cells outside the source domain are NaN with either.

    Returns
    -------
    xarray.Dataset
        Same variables and attributes; lazy if the input was.
    """
    grid = get_grid(target)
    try:
        method = _METHOD_ALIASES[method]
    except KeyError:
        raise ValueError(f"unknown method {method!r}; use 'nearest_neighbor' or 'bilinear'") from None
    source, mapping_name, aux_names = source_grid(ds)
    index = regrid.get_index(source, grid, method)
    spatial = set(source.dims)
    target_ds = grid.to_dataset()

    replaced = {mapping_name, *aux_names, *target_ds.variables}  # the source grid's description
    variables = {}
    for name, var in ds.data_vars.items():
        if name in replaced:
            continue
        if spatial <= set(var.dims):
            variables[name] = _regrid_variable(var, source, grid, index)
        elif spatial & set(var.dims):
            warnings.warn(f"project: dropping {name!r}, which has only one horizontal dimension",
                          stacklevel=2)
        else:
            variables[name] = var.variable  # time_bnds, station counts, ...: kept as they are
    # Every non-spatial coordinate stays (time_bnds opened with decode_coords="all",
    # scalar height, ...); coordinates on the source grid are replaced by the target's.
    coords = {name: c.variable for name, c in ds.coords.items()
              if not (spatial & set(c.dims)) and name not in replaced}
    coords.update(target_ds.coords.variables)
    # Built in one go rather than subset afterwards: ``ds[[names]]`` would drop
    # coordinates with a dimension of their own, such as time_bnds' "bnds".
    variables[grid.mapping_name] = target_ds[grid.mapping_name].variable
    return xr.Dataset(variables, coords=coords, attrs=ds.attrs)


def _regrid_variable(var, source, grid, index):
    ydim, xdim = source.dims
    tydim, txdim = grid.dims
    attrs, encoding = dict(var.attrs), dict(var.encoding)
    var = var.transpose(..., ydim, xdim)
    # Only the variable itself: its coordinates are the dataset's (project() keeps
    # the non-spatial ones and replaces the source grid's, including a grid
    # mapping that decode_coords="all" made a coordinate).
    var = xr.DataArray(var.variable, dims=var.dims, name=var.name)
    core = ("_pyku_src_y", "_pyku_src_x")
    var = var.rename({ydim: core[0], xdim: core[1]})
    if var.chunks is not None:
        var = var.chunk({core[0]: -1, core[1]: -1})  # one spatial block, time chunks kept
    out = xr.apply_ufunc(
        index.apply, var,
        input_core_dims=[list(core)], output_core_dims=[[tydim, txdim]],
        dask="parallelized",
        output_dtypes=[np.result_type(var.dtype, np.float32)],
        dask_gufunc_kwargs={"output_sizes": {tydim: grid.ny, txdim: grid.nx}},
        keep_attrs=True,
    )
    out.attrs = {k: v for k, v in attrs.items() if k != "coordinates"}
    out.attrs["grid_mapping"] = grid.mapping_name
    out.encoding = {k: v for k, v in encoding.items() if k not in _STALE_ENCODING}
    return out


def source_grid(ds):
    """Describe the horizontal grid of ``ds``.

    Returns
    -------
    (regrid.SourceGrid, str or None, set of str)
        The grid, the name of its grid-mapping variable (if any) and the
        names of the auxiliary variables that only describe it (2-D lat/lon,
        bounds), which :func:`project` replaces.
    """
    mapping_name = _grid_mapping_name(ds)
    aux = _auxiliary_names(ds)
    if mapping_name is not None:
        attrs = ds[mapping_name].attrs
        try:
            crs = pyproj.CRS.from_cf(attrs)
        except pyproj.exceptions.CRSError as exc:
            crs = None
            warnings.warn(f"project: cannot read grid mapping {mapping_name!r} ({exc}); "
                          "falling back to lat/lon", stacklevel=3)
        if crs is not None:
            xname, yname = _axis_coord(ds, "X", _X_NAMES), _axis_coord(ds, "Y", _Y_NAMES)
            if xname and yname:
                x, y = _in_crs_units(ds[xname], crs), _in_crs_units(ds[yname], crs)
                grid = regrid.SourceGrid.from_crs((yname, xname), crs, x, y)
                return grid, mapping_name, aux
    lon, lat = _find_lonlat(ds)
    if lon is None or lat is None:
        raise GridError("cannot find the horizontal grid: no CF grid mapping with x/y "
                        "coordinates and no latitude/longitude variables")
    if lon.ndim == 1 and lat.ndim == 1 and lon.dims[0] in ds.dims and lat.dims[0] in ds.dims:
        crs = pyproj.CRS.from_proj4("+proj=longlat +datum=WGS84 +no_defs")
        grid = regrid.SourceGrid.from_crs((lat.dims[0], lon.dims[0]), crs, lon.values, lat.values)
        return grid, mapping_name, aux
    if lon.ndim == 2 and lon.dims == lat.dims:
        return regrid.SourceGrid.from_lonlat(lon.dims, lon.values, lat.values), mapping_name, aux
    raise GridError(f"unsupported latitude/longitude layout: lon{lon.dims}, lat{lat.dims}")


def _grid_mapping_name(ds):
    """Name of the grid-mapping variable referenced by the data, if any."""
    for var in ds.variables.values():
        ref = var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping")
        if ref:
            name = str(ref).split(":")[0].split()[0]
            if name in ds.variables:
                return name
    for name, var in ds.variables.items():
        if "grid_mapping_name" in var.attrs:
            return name
    return None


def _axis_coord(ds, axis, standard_names):
    """The 1-D dimension coordinate for axis X or Y."""
    fallbacks = {"X": ("x", "rlon", "lon", "longitude"), "Y": ("y", "rlat", "lat", "latitude")}[axis]
    dim_coords = [n for n in ds.dims if n in ds.coords and ds[n].ndim == 1]
    for name in dim_coords:
        attrs = ds[name].attrs
        if attrs.get("axis", "").upper() == axis or attrs.get("standard_name") in standard_names:
            return name
    for name in fallbacks:
        if name in dim_coords:
            return name
    return None


def _in_crs_units(coord, crs):
    """Coordinate values in the CRS's units (projected coordinates may be in km)."""
    values = np.asarray(coord.values, dtype="f8")
    units = str(coord.attrs.get("units", "")).strip().lower()
    if not crs.is_geographic and units in ("km", "kilometre", "kilometer", "kilometres", "kilometers"):
        values = values * 1000.0
    return values


def _is_lat(var):
    return (var.attrs.get("standard_name") == "latitude"
            or str(var.attrs.get("units", "")).lower() in ("degrees_north", "degree_north", "degree_n"))


def _is_lon(var):
    return (var.attrs.get("standard_name") == "longitude"
            or str(var.attrs.get("units", "")).lower() in ("degrees_east", "degree_east", "degree_e"))


def _find_lonlat(ds):
    lon = lat = None
    for name, var in ds.variables.items():
        if lon is None and (_is_lon(var) or name in ("lon", "longitude", "nav_lon")):
            lon = ds[name]
        elif lat is None and (_is_lat(var) or name in ("lat", "latitude", "nav_lat")):
            lat = ds[name]
    return lon, lat


def _auxiliary_names(ds):
    """2-D lat/lon and the bounds of horizontal coordinates: replaced, not regridded."""
    names = {n for n, v in ds.variables.items()
             if v.ndim >= 2 and (_is_lat(v) or _is_lon(v) or n in ("lat", "lon"))}
    horizontal = set(names)
    for name, var in ds.variables.items():
        if (var.attrs.get("standard_name") in _X_NAMES | _Y_NAMES
                or str(var.attrs.get("axis", "")).upper() in ("X", "Y")):
            horizontal.add(name)
    for name in horizontal:
        bounds = ds[name].attrs.get("bounds") or ds[name].encoding.get("bounds")
        if bounds in ds.variables:
            names.add(bounds)
    return names
