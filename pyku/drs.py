"""CMOR variable names and units (the data reference syntax of CORDEX/CMIP).

The tables live in ``etc/cmor.toml``.  Units are converted with pint through
cf-xarray's registry, which reads UDUNITS-style strings such as
``kg m-2 s-1``; nothing here hard-codes a conversion factor.  The only
physics added is what a units library cannot know: an amount per time step
(mm per day, J m-2 per hour) becomes a flux by dividing by the step taken
from the time bounds, and a depth of water stands for a mass per area at
1000 kg m-3 where the table allows it (``water_equivalent``).
"""

from __future__ import annotations

import functools
import importlib.resources
import tomllib
import warnings

import numpy as np
import xarray as xr

from pyku.errors import PykuError, UnitsError
from pyku.timekit import is_datetime, time_bounds_name

WATER_DENSITY = "1000 kg m-3"


@functools.cache
def cmor_table():
    """CMOR name -> entry (standard_name, long_name, units, aliases, ...)."""
    text = importlib.resources.files("pyku").joinpath("etc").joinpath("cmor.toml").read_text()
    return tomllib.loads(text)


@functools.cache
def _lookups():
    by_name, by_long_name = {}, {}
    for cmor, entry in cmor_table().items():
        for alias in entry.get("aliases", []):
            by_name[alias] = cmor
        for long_name in entry.get("long_names", []):
            by_long_name[long_name.strip().lower()] = cmor
    return by_name, by_long_name


@functools.cache
def unit_registry():
    """cf-xarray's pint registry (imported lazily: it is slow to import)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*matplotlib.*")
        from cf_xarray.units import units
    return units


def cmor_name(name, attrs=None):
    """CMOR name for a variable called ``name`` with ``attrs``, or None if unknown."""
    if name in cmor_table():
        return name
    by_name, by_long_name = _lookups()
    if name in by_name:
        return by_name[name]
    long_name = str((attrs or {}).get("long_name", "")).strip().lower()
    return by_long_name.get(long_name)


def get_cmor_varname(da):
    """CMOR name of a DataArray (by its name, then its long_name), or None (pyku's name)."""
    return cmor_name(da.name, da.attrs)


def get_cmor_varname_aliases(cmor_varname):
    """The other names ``cmor_varname`` goes by (T_2M, tasAdjust, ...); [] if unknown."""
    return list(cmor_table().get(cmor_varname, {}).get("aliases", []))


def to_cmor_varnames(ds):
    """Rename the data variables known under other names (T_2M, t2m, ...) to CMOR names.

    A variable is recognised by its name or its ``long_name``.  Unknown
    variables are left alone; two variables claiming one CMOR name is an error.
    """
    renames = {}
    for name, var in ds.data_vars.items():
        cmor = cmor_name(name, var.attrs)
        if cmor is not None and cmor != name:
            renames[name] = cmor
    claimed = {}
    for old, new in renames.items():
        if new in claimed or (new in ds.variables and new not in renames):
            other = claimed.get(new, new)
            raise PykuError(f"both {other!r} and {old!r} would be named {new!r}; "
                            "drop one of them before to_cmor_varnames()")
        claimed[new] = old
    return ds.rename(renames)


def to_cmor_units(ds):
    """Convert every variable with a CMOR name to its CMOR units.

    tas/tasmax/tasmin -> K, pr -> kg m-2 s-1, hurs -> %, ps/psl -> Pa,
    rsds -> W m-2, sfcWind -> m s-1, and the rest of ``etc/cmor.toml``.  The
    ``units`` attribute is updated; lazy data stays lazy; float32 stays
    float32 (computed in float64, rounded once).  Missing, unparseable or
    inconvertible units raise :class:`UnitsError` naming the variable.
    """
    out = ds.copy()
    for name in ds.data_vars:
        entry = cmor_table().get(name)
        if entry is None:
            continue
        out[name] = convert_units(ds, name, entry["units"],
                                  water_equivalent=entry.get("water_equivalent", False),
                                  standard_name=entry.get("standard_name"),
                                  long_name=entry.get("long_name"))
    return out


def convert_units(ds, name, target, water_equivalent=False, standard_name=None, long_name=None):
    """``ds[name]`` converted to ``target`` units (see :func:`to_cmor_units`).

    Parameters
    ----------
    ds : xarray.Dataset
        The dataset, for the time step of amounts.
    name : str
        Variable to convert.
    target : str
        Units to convert to, UDUNITS style.
    water_equivalent : bool
        Allow a water depth to stand for a mass per area (1000 kg m-3).
    standard_name, long_name : str, optional
        Set when an amount becomes a flux, since the old names would be wrong
        ("total precipitation amount" is not a flux).
    """
    ureg = unit_registry()
    var = ds[name]
    source = var.attrs.get("units", var.encoding.get("units"))
    if source is None or str(source).strip() == "":
        raise UnitsError(f"variable {name!r} has no units attribute; cannot convert it to {target!r}")
    try:
        src = ureg.Quantity(1, _normalise(source))
        tgt = ureg.Unit(_normalise(target))
    except Exception as exc:  # pint raises several unrelated types for bad strings
        raise UnitsError(f"variable {name!r}: cannot read units {source!r} ({exc})") from exc

    per_step, extra = False, None
    if src.dimensionality != tgt.dimensionality:
        rho = ureg.Quantity(WATER_DENSITY) if water_equivalent else None
        per_second = 1.0 / ureg.Quantity(1.0, "s")
        for candidate, needs_step in ((rho, False), (per_second, True), (rho and rho * per_second, True)):
            if candidate is not None and (src * candidate).dimensionality == tgt.dimensionality:
                extra, per_step = candidate, needs_step
                break
        else:
            raise UnitsError(f"variable {name!r}: units {source!r} cannot be converted to {target!r}")

    if extra is not None:
        scale, offset = (src * extra).to(tgt).magnitude, 0.0
    else:  # same dimension: offset units such as degC -> K are allowed
        offset = ureg.Quantity(0.0, src.units).to(tgt).magnitude
        scale = ureg.Quantity(1.0, src.units).to(tgt).magnitude - offset
    if scale == 1.0 and offset == 0.0 and not per_step:
        new = var.copy()
    else:
        factor = scale / time_step_seconds(ds, name) if per_step else scale
        dtype = var.dtype if np.issubdtype(var.dtype, np.floating) else np.float64
        new = (var.astype(np.float64) * factor + offset).astype(dtype)
        new.attrs = dict(var.attrs)
        new.encoding = _without_packing(var.encoding)
    if per_step:  # an amount per step became a flux: its metadata must say so
        if standard_name:
            new.attrs["standard_name"] = standard_name
        if long_name:
            new.attrs["long_name"] = long_name
        if "cell_methods" in new.attrs:
            new.attrs["cell_methods"] = new.attrs["cell_methods"].replace("time: sum", "time: mean")
    new.attrs["units"] = target
    new.encoding.pop("units", None)
    return new


def _without_packing(encoding):
    """``encoding`` minus integer packing, which was chosen for the old units' values.

    An int16 with scale_factor 0.01 holds hPa, not the 100 times larger Pa;
    float storage (dtype, fill value) still fits the converted values.
    """
    packed = "scale_factor" in encoding or "add_offset" in encoding or (
        "dtype" in encoding and np.dtype(encoding["dtype"]).kind in "iu")
    drop = ("scale_factor", "add_offset", "dtype", "_FillValue", "missing_value") if packed else ()
    return {k: v for k, v in encoding.items() if k not in drop}


def _normalise(units):
    """UDUNITS spellings pint's CF registry does not read itself."""
    text = str(units).strip()
    return {"-": "1", "fraction": "1", "percent": "%", "C": "degC", "deg C": "degC"}.get(text, text)


def time_step_seconds(ds, name, time="time"):
    """Length of each time step of ``ds[name]`` in seconds, along ``time``.

    From the time bounds if there are any, else from the spacing of the time
    labels if it is constant.  Undecoded times (``decode_times=False``) and a
    single step without bounds raise :class:`UnitsError` naming ``name``.
    """
    var = ds[name]
    if time not in var.dims:
        raise UnitsError(f"variable {name!r} is an amount per time step but has no {time!r} dimension")
    if not is_datetime(ds[time]):
        raise UnitsError(f"variable {name!r} is an amount per time step, but {time!r} holds "
                         f"undecoded {ds[time].dtype} values ({ds[time].attrs.get('units', 'no units')}); "
                         "open the file with decode_times=True (the default) to get the step length")
    bounds = time_bounds_name(ds, time)
    if bounds is not None:
        b = ds[bounds].transpose(time, ...)
        if not is_datetime(b):
            raise UnitsError(f"variable {name!r}: time bounds {bounds!r} hold undecoded "
                             f"{b.dtype} values; open the file with decode_times=True")
        other = [d for d in b.dims if d != time][0]
        delta = b.isel({other: 1}, drop=True) - b.isel({other: 0}, drop=True)
        seconds = xr.DataArray(_to_seconds(delta.values), dims=(time,), coords={time: ds[time]})
    elif ds.sizes[time] < 2:
        raise UnitsError(f"variable {name!r} is an amount per time step, but {time!r} has "
                         f"{ds.sizes[time]} step(s) and no bounds: cannot infer the time step "
                         "from one step without bounds; add time bounds")
    else:
        steps = np.unique(_to_seconds(np.diff(ds[time].values)))
        if steps.size != 1:
            raise UnitsError(f"variable {name!r} is an amount per time step, but {time!r} has no "
                             "bounds and its steps vary; add time bounds")
        seconds = xr.DataArray(np.full(ds.sizes[time], steps[0]), dims=(time,), coords={time: ds[time]})
    if not np.all(seconds.values > 0):
        raise UnitsError(f"variable {name!r}: time steps must be positive, found {seconds.values.min()} s")
    return seconds


def _to_seconds(delta):
    delta = np.asarray(delta)
    if np.issubdtype(delta.dtype, np.timedelta64):
        return delta / np.timedelta64(1, "s")
    return np.array([d.total_seconds() for d in delta.ravel()]).reshape(delta.shape)


# CMOR frequency attribute from a pandas frequency string (the inverse of pyku.meta's table).
_FREQUENCY_ATTRS = {"h": "1hr", "3h": "3hr", "6h": "6hr", "12h": "12hr", "D": "day", "MS": "mon",
                    "QS-DEC": "sem", "YS": "year", "YS-JAN": "year"}
_COORD_ATTRS = {
    "time": {"standard_name": "time", "long_name": "time", "axis": "T"},
    "lat": {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north"},
    "lon": {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east"},
    "rlat": {"standard_name": "grid_latitude", "long_name": "latitude in rotated pole grid",
             "units": "degrees", "axis": "Y"},
    "rlon": {"standard_name": "grid_longitude", "long_name": "longitude in rotated pole grid",
             "units": "degrees", "axis": "X"},
    "y": {"standard_name": "projection_y_coordinate", "long_name": "y coordinate of projection",
          "axis": "Y"},
    "x": {"standard_name": "projection_x_coordinate", "long_name": "x coordinate of projection",
          "axis": "X"},
}


def to_cmor_attrs(ds):
    """Set CMOR attributes: each CMOR variable's standard_name/long_name/units, the
    coordinates' CF attributes and the global ``frequency`` (when it can be inferred).

    Values are not converted: call :func:`to_cmor_units` first; a variable whose
    units differ from the CMOR units keeps them (and check_metadata reports it).
    """
    from pyku import meta

    out = ds.copy()
    for name in out.data_vars:
        entry = cmor_table().get(name)
        if entry is None:
            continue
        attrs = dict(out[name].attrs)
        for key in ("standard_name", "long_name"):
            if key in entry:
                attrs[key] = entry[key]
        if _same_units(attrs.get("units"), entry["units"]):
            attrs["units"] = entry["units"]
        out[name].attrs = attrs
    for name, attrs in _COORD_ATTRS.items():
        if name in out.coords:
            units = out[name].attrs.get("units")  # projected x/y may be in km: keep theirs
            out[name].attrs.update(attrs)
            if units is not None:
                out[name].attrs["units"] = units
    try:
        out.attrs["frequency"] = _FREQUENCY_ATTRS.get(meta.get_frequency(out), out.attrs.get("frequency"))
    except PykuError:
        pass
    if out.attrs.get("frequency") is None:
        out.attrs.pop("frequency", None)
    return out


def _same_units(a, b):
    if a is None:
        return False
    try:
        ureg = unit_registry()
        return ureg.Quantity(1, _normalise(a)) == ureg.Quantity(1, _normalise(b))
    except Exception:  # unreadable units are left for check_metadata to report
        return False


def cmorize(ds, global_metadata=None):
    """CMOR-ize a dataset holding one climate variable (pyku.drs.cmorize).

    Time labels move to the middle of their bounds (CMOR's convention); the
    variable gets its CMOR name, units and attributes; ``global_metadata`` is
    added to the global attributes; spatial bounds and non-scalar coordinates
    that are neither time nor the grid are dropped.

    Raises
    ------
    PykuError
        No or several climate variables, or one that is not in the CMOR table.
    """
    from pyku import meta, timekit

    names = meta.get_geodata_varnames(ds)
    if len(names) != 1:
        raise PykuError(f"cmorize: needs exactly one climate variable, found {names or 'none'} "
                        f"among {list(ds.data_vars)}; select one with ds[[name]]")
    if cmor_name(names[0], ds[names[0]].attrs) is None:
        raise PykuError(f"cmorize: {names[0]!r} is not a CMOR variable or a known alias of one "
                        "(see pyku/etc/cmor.toml)")
    ds = ds.drop_vars(meta.get_spatial_bounds_varnames(ds))
    if meta.has_time_bounds(ds):
        ds = timekit.set_time_labels_from_time_bounds(ds, how="middle")
    out = to_cmor_attrs(to_cmor_units(to_cmor_varnames(meta.get_geodataset(ds, names[0]))))
    out = out.assign_attrs(global_metadata or {})
    keep = {"time", *meta.get_geographic_latlon_varnames(out), *meta.get_projection_yx_varnames(out)}
    # Scalar coordinates (height = 2 m) stay: CMOR keeps them.
    return out.drop_vars([c for c in out.coords if c not in keep and out[c].ndim > 0])
