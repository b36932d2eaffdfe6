"""Time labels.

Model output labels a daily mean at noon, or at the end of the interval;
observations label it at the start.  Setting the labels from the time bounds
makes collections from different sources line up.
"""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import xarray as xr

from pyku import cfcoords
from pyku.errors import TimeBoundsError

HOWS = ("lower", "upper", "middle")


def time_bounds_name(ds, time="time"):
    """Name of the time-bounds variable of ``ds``, or None (see :func:`pyku.cfcoords.bounds_name`)."""
    return cfcoords.bounds_name(ds, time)


def set_time_labels_from_time_bounds(ds, how="lower", time="time"):
    """Relabel the time axis with the lower bound, upper bound or middle of each interval.

    Parameters
    ----------
    ds : xarray.Dataset
    how : {"lower", "upper", "middle"}
    time : str
        Name of the time coordinate.

    Returns
    -------
    xarray.Dataset
        A copy with new time labels (attributes and on-disk encoding kept);
        unchanged, with a warning, if there are no time bounds.

    Raises
    ------
    TimeBoundsError
        For an unknown ``how``, a variable with ``cell_methods = "time: point"``
        (pyku refuses those too), malformed bounds, or bounds xarray left as
        raw numbers that cannot be decoded (no units on them or on ``time``);
        raw bounds with known units are decoded first.
    """
    if how not in HOWS:
        raise TimeBoundsError(f"how={how!r} is not one of {', '.join(HOWS)}")
    points = [n for n, v in ds.data_vars.items() if str(v.attrs.get("cell_methods", "")).strip() == "time: point"]
    if points:  # as pyku: instantaneous values have no interval to take a label from
        raise TimeBoundsError(f"variables {points} have cell_methods 'time: point' (instantaneous "
                              "values, no time intervals); their time labels are not set from bounds. "
                              "Remove the cell_methods attribute to override")
    name = time_bounds_name(ds, time)
    if name is None:
        warnings.warn(f"no time bounds for {time!r} (looked for its 'bounds' attribute, "
                      f"{time}_bnds, {time}_bounds); time labels left unchanged", stacklevel=2)
        return ds
    bounds = ds[name]
    if bounds.ndim != 2 or bounds.sizes.get(time) != ds.sizes[time]:
        raise TimeBoundsError(f"time bounds {name!r} have shape {dict(bounds.sizes)}; "
                              f"expected ({time}: {ds.sizes[time]}, 2)")
    values = np.asarray(bounds.transpose(time, ...).values)
    if values.shape[1] != 2:
        raise TimeBoundsError(f"time bounds {name!r} need 2 values per step, have {values.shape[1]}")
    values = _comparable_bounds(ds[time], bounds, values)
    lower, upper = values[:, 0], values[:, 1]
    if how == "lower":
        labels = lower
    elif how == "upper":
        labels = upper
    else:
        labels = lower + (upper - lower) / 2  # works for datetime64 and cftime objects
    old = ds[time].variable
    new = xr.Variable(old.dims, labels, attrs=old.attrs, encoding=old.encoding)
    return ds.assign_coords({time: new})


def is_datetime(var):
    """True if ``var`` holds decoded times (datetime64 or cftime), False for raw numbers."""
    if np.issubdtype(var.dtype, np.datetime64):
        return True
    if var.dtype != object or var.size == 0:
        return False
    first = np.asarray(var.values).ravel()[0]
    return hasattr(first, "calendar") or isinstance(first, dt.datetime)


def _comparable_bounds(time_var, bounds, values):
    """Bound values in the same representation as the time labels they replace.

    xarray decodes bounds only when the time coordinate's ``bounds``
    attribute names them; bounds found by their conventional name may still
    be raw numbers in the time coordinate's units (CF: bounds share their
    coordinate's units).  Those are decoded with the bounds' own
    units/calendar, else the coordinate's; putting raw numbers in place of
    dates would silently corrupt the time axis.
    """
    time_decoded, bounds_decoded = is_datetime(time_var), is_datetime(bounds)
    if time_decoded == bounds_decoded:
        if not time_decoded:  # both raw: fine if they count in the same units
            t_units, b_units = time_var.attrs.get("units"), bounds.attrs.get("units")
            if t_units and b_units and t_units != b_units:
                raise TimeBoundsError(f"time bounds {bounds.name!r} are in {b_units!r} but "
                                      f"{time_var.name!r} is in {t_units!r}; decode them first")
        return values
    if not time_decoded:
        raise TimeBoundsError(f"{time_var.name!r} holds raw {time_var.dtype} values but its bounds "
                              f"{bounds.name!r} are dates; open the file with decode_times=True")
    source = bounds.attrs if "units" in bounds.attrs else time_var.encoding
    units = source.get("units")
    calendar = source.get("calendar") or time_var.encoding.get("calendar") or "standard"
    if not units or "since" not in str(units):
        raise TimeBoundsError(f"time bounds {bounds.name!r} were not decoded (raw {bounds.dtype} "
                              f"values) and neither they nor {time_var.name!r} say in which units; "
                              "give them a units attribute such as 'days since 1949-12-01' "
                              "and decode them (xarray.decode_cf)")
    raw = xr.Dataset({"b": (("n", "two"), values, {"units": units, "calendar": calendar})})
    options = {}
    if time_var.dtype == object:  # cftime labels: cftime bounds, whatever the calendar
        coders = getattr(xr, "coders", None)  # xarray >= 2025.01
        options = ({"decode_times": coders.CFDatetimeCoder(use_cftime=True)} if coders
                   else {"use_cftime": True})
    try:
        decoded = xr.decode_cf(raw, **options)["b"].values
    except Exception as exc:  # xarray raises several types for bad units
        raise TimeBoundsError(f"cannot decode time bounds {bounds.name!r} with units {units!r} "
                              f"and calendar {calendar!r}: {exc}") from exc
    if np.issubdtype(time_var.dtype, np.datetime64) and np.issubdtype(decoded.dtype, np.datetime64):
        decoded = decoded.astype(time_var.dtype)
    return decoded
