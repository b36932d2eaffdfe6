"""Which variable is what, by CF conventions: the one place pyku asks.

Axes, latitude/longitude, bounds and grid mappings are looked up through
cf-xarray (attributes *and* encodings, so files opened with
``decode_coords="all"`` work too), with a short list of conventional names
as the fallback for files with incomplete metadata.  :mod:`pyku.project`,
:mod:`pyku.timekit`, :mod:`pyku.meta` and :mod:`pyku.compute` use these
functions rather than reading ``bounds`` or ``grid_mapping`` themselves.
"""

from __future__ import annotations

import warnings

import cf_xarray  # noqa: F401  (registers the .cf accessor)

_AXIS_FALLBACKS = {"X": ("x", "rlon", "lon", "longitude"), "Y": ("y", "rlat", "lat", "latitude")}
_LATLON_FALLBACKS = {"latitude": ("lat", "latitude", "nav_lat"),
                     "longitude": ("lon", "longitude", "nav_lon")}


def _associated(ds, name, key):
    """Names in ``ds`` that ``ds[name]`` refers to under ``key`` (bounds, grid_mapping, ...)."""
    try:
        with warnings.catch_warnings():  # a dangling reference is simply not returned
            warnings.simplefilter("ignore", UserWarning)
            refs = ds.cf.get_associated_variable_names(name, error=False)[key]
    except (KeyError, ValueError):  # malformed attributes: nothing usable
        return []
    return [str(r).rstrip(":") for r in refs if str(r).rstrip(":") in ds.variables]


def bounds_name(ds, name):
    """Name of the bounds variable of ``ds[name]``, or None.

    The ``bounds`` attribute (or encoding) wins; ``<name>_bnds`` and
    ``<name>_bounds`` are the usual names when it is missing.
    """
    if name not in ds.variables:
        return None
    for candidate in (*_associated(ds, name, "bounds"), f"{name}_bnds", f"{name}_bounds"):
        if candidate in ds.variables:
            return candidate
    return None


def grid_mapping_name(ds):
    """Name of the grid-mapping variable the data refer to, else any with ``grid_mapping_name``."""
    for name in list(ds.data_vars) + [n for n in ds.variables if n not in ds.data_vars]:
        found = _associated(ds, name, "grid_mapping")
        if found:
            return found[0]
    for names in ds.cf.grid_mapping_names.values():
        for name in names:
            if name in ds.variables:
                return name
    return None


def axis_name(ds, axis):
    """The 1-D dimension coordinate along ``axis`` ("X" or "Y"), or None."""
    dim_coords = [n for n in ds.dims if n in ds.coords and ds[n].ndim == 1]
    for name in ds.cf.axes.get(axis, []):
        if name in dim_coords:
            return name
    for name in _AXIS_FALLBACKS[axis]:
        if name in dim_coords:
            return name
    return None


def latlon_names(ds):
    """(latitude, longitude) variable names, either may be None."""
    coords = ds.cf.coordinates
    found = []
    for key in ("latitude", "longitude"):
        names = [n for n in coords.get(key, []) if n in ds.variables]
        if not names:  # cf-xarray only looks at coordinates: also accept data variables
            names = [n for n, v in ds.variables.items() if _is(v, key)]
        names += [n for n in _LATLON_FALLBACKS[key] if n in ds.variables]
        found.append(names[0] if names else None)
    return tuple(found)


def _is(var, key):
    units = {"latitude": ("degrees_north", "degree_north", "degree_n"),
             "longitude": ("degrees_east", "degree_east", "degree_e")}[key]
    return var.attrs.get("standard_name") == key or str(var.attrs.get("units", "")).lower() in units


def horizontal_names(ds):
    """Variables that only describe the horizontal grid: 2-D lat/lon, x/y, their bounds.

    :func:`pyku.project.project` replaces these rather than regridding them.
    """
    names = set()
    for key in ("latitude", "longitude"):
        names |= {n for n, v in ds.variables.items() if v.ndim >= 2 and (_is(v, key) or n in _LATLON_FALLBACKS[key])}
    horizontal = set(names) | set(latlon_names(ds)) - {None}
    for axis in ("X", "Y"):
        horizontal |= set(ds.cf.axes.get(axis, []))
    for name in horizontal:
        bounds = bounds_name(ds, name)
        if bounds is not None and bounds not in ds.dims:
            names.add(bounds)
    return names
