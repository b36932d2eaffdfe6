"""Metadata getters under pyku's names (``pyku.meta``): which variable is what,
and the time frequency of a dataset.

Names are resolved through :mod:`pyku.cfcoords` (cf-xarray), so these
getters and :func:`pyku.project.project` always agree on what the grid is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from pyku import cfcoords
from pyku.errors import PykuError

# CMOR frequency attribute -> pandas frequency string, as pyku maps them.
CMOR_FREQUENCIES = {"1hr": "h", "3hr": "3h", "6hr": "6h", "12hr": "12h", "day": "D", "mon": "MS",
                    "sem": "QS-DEC", "year": "YS"}
DTYPES = ("freqstr", "DateOffset", "Timedelta")


class FrequencyError(PykuError, ValueError):
    """The time frequency of a dataset cannot be determined, or is contradictory."""


def get_geographic_latlon_varnames(ds):
    """(latitude, longitude) variable names; either may be None."""
    return cfcoords.latlon_names(ds)


def get_projection_yx_varnames(ds):
    """(y, x) names of the 1-D horizontal dimension coordinates; either may be None."""
    return cfcoords.axis_name(ds, "Y"), cfcoords.axis_name(ds, "X")


def get_crs_varname(ds):
    """Name of the grid-mapping (crs) variable, or None."""
    return cfcoords.grid_mapping_name(ds)


def get_time_bounds_varname(ds):
    """Name of the time-bounds variable, or None."""
    return cfcoords.bounds_name(ds, "time")


def has_time_bounds(ds):
    """True if the time axis has bounds."""
    return get_time_bounds_varname(ds) is not None


def get_spatial_bounds_varnames(ds):
    """Bounds of horizontal coordinates (lat_bnds, x_bnds, ...)."""
    return sorted(n for n in cfcoords.horizontal_names(ds) if n in ds.variables and ds[n].ndim >= 2
                  and n not in cfcoords.latlon_names(ds) and _is_bounds(ds, n))


def _is_bounds(ds, name):
    return any(cfcoords.bounds_name(ds, c) == name for c in ds.variables if c != name)


def _horizontal_dims(ds):
    y, x = get_projection_yx_varnames(ds)
    if y and x:
        return {y, x}
    lat, lon = get_geographic_latlon_varnames(ds)
    if lat is not None and lon is not None:
        return set(ds[lat].dims) | set(ds[lon].dims)
    return set()


def get_geodata_varnames(ds):
    """Data variables on the horizontal grid (the climate data), in dataset order."""
    dims = _horizontal_dims(ds)
    skip = cfcoords.horizontal_names(ds) | {get_crs_varname(ds)}
    return [n for n, v in ds.data_vars.items() if dims and dims <= set(v.dims) and n not in skip]


def get_spatial_varnames(ds):
    """Variables that describe the horizontal grid: lat/lon, x/y, their bounds, the crs."""
    names = set(cfcoords.horizontal_names(ds)) | set(get_geographic_latlon_varnames(ds))
    names |= set(get_projection_yx_varnames(ds)) | {get_crs_varname(ds)}
    return sorted(n for n in names if n is not None and n in ds.variables)


def get_time_dependent_varnames(ds):
    """Data variables with a time dimension."""
    return [n for n, v in ds.data_vars.items() if "time" in v.dims]


def has_geographic_coordinates(ds):
    """True if latitude and longitude are found."""
    return None not in get_geographic_latlon_varnames(ds)


def has_projection_coordinates(ds):
    """True if 1-D y/x (or rlat/rlon) dimension coordinates are found."""
    return None not in get_projection_yx_varnames(ds)


def is_georeferenced(ds):
    """True if the horizontal grid can be located (what project() needs)."""
    return has_projection_coordinates(ds) and get_crs_varname(ds) is not None or has_geographic_coordinates(ds)


def get_geodataset(ds, var):
    """``ds`` reduced to ``var`` with everything that describes it (grid, bounds, crs)."""
    keep = {var, *get_spatial_varnames(ds), get_time_bounds_varname(ds)} - {None}
    return ds.drop_vars([n for n in ds.data_vars if n not in keep])


def get_time_bounds(ds, which=None):
    """Time bounds as a (time, 2) array, its lower or upper column (``which``), or None."""
    name = get_time_bounds_varname(ds)
    if name is None:
        return None
    values = np.asarray(ds[name].transpose("time", ...).values)
    return {None: values, "lower": values[:, 0], "upper": values[:, 1]}[which]


def get_frequency(ds, dtype="freqstr"):
    """The time frequency of ``ds`` from its labels, time bounds and ``frequency`` attribute.

    Parameters
    ----------
    ds : xarray.Dataset
    dtype : {"freqstr", "DateOffset", "Timedelta"}
        A pandas frequency string ("D", "MS", "h"), a pandas DateOffset, or a
        Timedelta (only for fixed-length frequencies).

    Raises
    ------
    FrequencyError
        No time axis, no source of frequency, sources that disagree, or a
        Timedelta asked for a calendar frequency such as months.
    """
    if dtype not in DTYPES:
        raise FrequencyError(f"get_frequency: dtype={dtype!r}; use one of {', '.join(DTYPES)}")
    if "time" not in ds.coords or ds["time"].size == 0:
        raise FrequencyError("get_frequency: the dataset has no (non-empty) 'time' coordinate")
    found = {}
    attr = ds.attrs.get("frequency")
    if attr in CMOR_FREQUENCIES:
        found["frequency attribute"] = CMOR_FREQUENCIES[attr]
    if ds["time"].size >= 3:
        found["time labels"] = xr.infer_freq(ds["time"])
    bounds = get_time_bounds(ds)
    if bounds is not None:
        for col, label in ((0, "lower time bounds"), (1, "upper time bounds")):
            if bounds.shape[0] >= 3:
                found[label] = xr.infer_freq(xr.DataArray(bounds[:, col], dims="time"))
        if bounds.shape[0] < 3:
            found["time bounds"] = _freq_from_bounds(bounds)
    found = {k: v for k, v in found.items() if v is not None}
    if not found:
        raise FrequencyError("get_frequency: cannot determine the frequency (fewer than 3 steps, "
                             "no time bounds, no CMOR 'frequency' attribute)")
    offsets = {k: pd.tseries.frequencies.to_offset(v) for k, v in found.items()}
    first = next(iter(offsets.values()))
    if any(o != first for o in offsets.values()):
        raise FrequencyError("get_frequency: sources disagree: "
                             + ", ".join(f"{k} {v}" for k, v in found.items()))
    freqstr = next(iter(found.values()))
    if dtype == "DateOffset":
        return first
    if dtype == "Timedelta":
        try:
            return pd.Timedelta(first.nanos)
        except (AttributeError, ValueError):  # months, years: calendar lengths
            raise FrequencyError(f"get_frequency: {freqstr} has no fixed length; use dtype='freqstr'") from None
    return freqstr


def _freq_from_bounds(bounds):
    """Frequency of one or two steps from their bounds (day, month, year or a fixed length)."""
    lower, upper = pd.Timestamp(str(bounds[0, 0])), pd.Timestamp(str(bounds[0, 1]))
    for freq in ("YS", "MS", "D"):
        if lower + pd.tseries.frequencies.to_offset(freq) == upper and lower == lower.normalize():
            return freq
    seconds = (upper - lower).total_seconds()
    return f"{int(seconds // 3600)}h" if seconds % 3600 == 0 and seconds > 0 else None
