"""Reprojection of datasets onto pyku's areas or user-defined grids (``project``).

:func:`project` finds the source's horizontal grid (CF grid mapping with 1-D
coordinates, regular 1-D lat/lon, or curvilinear 2-D lat/lon), gets the
cached neighbour index or weights from :mod:`pyku.regrid` and applies them to
every georeferenced variable — lazily for dask-backed data, keeping time
chunks.  The result is CF: target coordinates, 2-D lat/lon, a grid-mapping
variable (with ``epsg_code`` and ``proj4`` where known) and ``grid_mapping``
on each projected variable; ``CORDEX_domain`` names the target.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyproj
import xarray as xr

from pyku import cfcoords, regrid
from pyku.areas import get_grid
from pyku.errors import GridError, OptionError

# pyku's method names, its explicit library variants, and a few common spellings.
_METHOD_ALIASES = {
    "nearest_neighbor": "nearest_neighbor", "nearest_neighbour": "nearest_neighbor",
    "nearest": "nearest_neighbor", "nn": "nearest_neighbor",
    "pyresample_nearest_neighbor": "nearest_neighbor", "esmf_nearest_d2s": "nearest_neighbor",
    "bilinear": "bilinear", "linear": "bilinear", "pyresample_bilinear": "bilinear",
    "esmf_bilinear": "bilinear",
    "idw": "idw", "pyresample_idw": "idw",
    "conservative": "conservative", "esmf_conservative": "conservative",
    "esmf_conservative_normed": "conservative",
}
# Encodings that describe the source's on-disk layout, wrong after regridding.
_STALE_ENCODING = ("chunksizes", "preferred_chunks", "original_shape", "contiguous",
                   "coordinates", "grid_mapping", "source")


def project(ds, area_def=None, roi=1e6, method="nearest_neighbor", use_dask=True, area_file=None,
            keep_mask=False, power_parameter=None, neighbours=None):
    """Reproject every georeferenced variable of ``ds`` onto ``area_def`` (pyku.geo.project).

    Parameters
    ----------
    ds : xarray.Dataset
        Source on a regular lat/lon, rotated-pole, projected (CF grid
        mapping) or curvilinear (2-D lat/lon) grid.
    area_def : str, AreaDefinition, dict or pyku.grids.Grid
        One of pyku's area names (:func:`pyku.geo.list_standard_areas`), an
        area definition (pyku's or pyresample's: anything with ``crs``,
        ``width``, ``height``, ``area_extent``), a dict with ``crs``,
        ``shape`` (ny, nx) and ``extent`` (outer edges), or a Grid.
    roi : float
        Radius of influence in metres (pyku's default 1000 km): nearest
        neighbour and idw fill a target cell from source centres at most this
        far away, also beyond the source domain.  Smaller: NaN beyond it.
    method : {"nearest_neighbor", "bilinear", "idw", "conservative"}
        Also pyku's explicit names (``pyresample_bilinear``,
        ``esmf_conservative``, ...), served by the same implementations.
        bilinear and conservative leave target cells outside the source NaN.
    use_dask : bool
        True: dask-backed input stays lazy.  False: computed here.
    area_file : str, optional
        pyresample-style YAML file in which to look up ``area_def`` by name.
    keep_mask : bool
        NaN wherever the target centre is not inside a valid source cell
        (the source's mask carried over), whatever ``roi`` allows.
    power_parameter : float
        idw only, required: weights are distance ** -power_parameter.
    neighbours : int, optional
        idw: number of source cells averaged (default 8).  bilinear: accepted
        for pyku's sake and not needed (the 4 surrounding cells are exact).

    Returns
    -------
    xarray.Dataset
        Same variables and attributes; lazy if the input was.
    """
    method = _check_options(area_def, roi, method, power_parameter, neighbours)
    grid = get_grid(area_def, area_file=area_file)
    source, mapping_name, aux_names = source_grid(ds)
    index = regrid.get_index(source, grid, method, roi=roi, neighbours=neighbours, power=power_parameter)
    cell = regrid.get_index(source, grid, "source_cell") if keep_mask else None
    apply = _applier(index, cell)
    if not use_dask:
        ds = ds.compute()
    spatial = set(source.dims)
    target_ds = grid.to_dataset()

    replaced = {mapping_name, *aux_names, *target_ds.variables}  # the source grid's description
    variables = {}
    for name, var in ds.data_vars.items():
        if name in replaced:
            continue
        if spatial <= set(var.dims):
            variables[name] = _regrid_variable(var, source, grid, apply)
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
    attrs = {**ds.attrs, "CORDEX_domain": grid.cordex_domain or "undefined"}
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _check_options(area_def, roi, method, power_parameter, neighbours):
    """pyku's checks of project()'s arguments; returns the canonical method name."""
    if area_def is None:
        raise GridError("project: area_def is missing; give an area name such as 'HYR-LAEA-5', "
                        "an area definition, or a dict with crs, shape and extent")
    try:
        canonical = _METHOD_ALIASES[method]
    except (KeyError, TypeError):
        raise OptionError(f"project: unknown method {method!r}; use one of nearest_neighbor, bilinear, "
                        "idw, conservative") from None
    if not (isinstance(roi, (int, float)) and roi > 0):
        raise OptionError(f"project: roi must be a positive distance in metres, got {roi!r}")
    if canonical == "idw" and power_parameter is None:
        raise OptionError("project: method='idw' needs power_parameter (e.g. power_parameter=2)")
    if neighbours is not None and canonical not in ("bilinear", "idw"):
        raise OptionError(f"project: neighbours applies to bilinear and idw, not to {method!r}")
    if neighbours is not None and not (isinstance(neighbours, int) and neighbours >= 1):
        raise OptionError(f"project: neighbours must be a positive integer, got {neighbours!r}")
    return canonical


def _applier(index, cell):
    """The per-block function: regrid, then NaN where the target centre is outside a
    valid source cell (``cell``, the source_cell index; None: no keep_mask)."""
    if cell is None:
        return index.apply

    def apply(data):
        out = index.apply(data)
        out[np.isnan(cell.apply(data))] = np.nan  # outside the source, or on a NaN source cell
        return out
    return apply


def _regrid_variable(var, source, grid, apply):
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
        apply, var,
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
    mapping_name = cfcoords.grid_mapping_name(ds)
    aux = cfcoords.horizontal_names(ds)
    if mapping_name is not None:
        attrs = ds[mapping_name].attrs
        try:
            crs = pyproj.CRS.from_cf(attrs)
        except pyproj.exceptions.CRSError as exc:
            crs = None
            warnings.warn(f"project: cannot read grid mapping {mapping_name!r} ({exc}); "
                          "falling back to lat/lon", stacklevel=3)
        if crs is not None:
            xname, yname = cfcoords.axis_name(ds, "X"), cfcoords.axis_name(ds, "Y")
            if xname and yname:
                x, y = _in_crs_units(ds[xname], crs), _in_crs_units(ds[yname], crs)
                grid = regrid.SourceGrid.from_crs((yname, xname), crs, x, y)
                return grid, mapping_name, aux
    latname, lonname = cfcoords.latlon_names(ds)
    if lonname is None or latname is None:
        raise GridError("cannot find the horizontal grid: no CF grid mapping with x/y "
                        "coordinates and no latitude/longitude variables")
    lon, lat = ds[lonname], ds[latname]
    if lon.ndim == 1 and lat.ndim == 1 and lon.dims[0] in ds.dims and lat.dims[0] in ds.dims:
        crs = pyproj.CRS.from_proj4("+proj=longlat +datum=WGS84 +no_defs")
        grid = regrid.SourceGrid.from_crs((lat.dims[0], lon.dims[0]), crs, lon.values, lat.values)
        return grid, mapping_name, aux
    if lon.ndim == 2 and lon.dims == lat.dims:
        return regrid.SourceGrid.from_lonlat(lon.dims, lon.values, lat.values), mapping_name, aux
    raise GridError(f"unsupported latitude/longitude layout: {lonname}{lon.dims}, {latname}{lat.dims}")


def _in_crs_units(coord, crs):
    """Coordinate values in the CRS's units (projected coordinates may be in km)."""
    values = np.asarray(coord.values, dtype="f8")
    units = str(coord.attrs.get("units", "")).strip().lower()
    if not crs.is_geographic and units in ("km", "kilometre", "kilometer", "kilometres", "kilometers"):
        values = values * 1000.0
    return values
