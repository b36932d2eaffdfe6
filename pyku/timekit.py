"""Time labels.

Model output labels a daily mean at noon, or at the end of the interval;
observations label it at the start.  Setting the labels from the time bounds
makes collections from different sources line up.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from pyku.errors import TimeBoundsError

HOWS = ("lower", "upper", "middle")


def time_bounds_name(ds, time="time"):
    """Name of the time-bounds variable of ``ds``, or None.

    The coordinate's ``bounds`` attribute wins; ``time_bnds`` and
    ``time_bounds`` are the usual names when it is missing.
    """
    if time not in ds.variables:
        return None
    var = ds[time]
    for name in (var.attrs.get("bounds"), var.encoding.get("bounds"), f"{time}_bnds", f"{time}_bounds"):
        if name and name in ds.variables:
            return name
    return None


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
    """
    if how not in HOWS:
        raise TimeBoundsError(f"how={how!r} is not one of {', '.join(HOWS)}")
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
