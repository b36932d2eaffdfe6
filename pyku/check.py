"""Metadata checks (``pyku.check``): is a dataset what CMOR/CORDEX expects?

:func:`check_metadata` returns pyku's table: one row per check with columns
``key``, ``value`` (passed?), ``issue`` (what is wrong, or None) and
``description``.  Nothing is changed or raised for a failed check: the
table is the answer.
"""

from __future__ import annotations

import pandas as pd

from pyku import drs, meta
from pyku.errors import OptionError, PykuError

COLUMNS = ["key", "value", "issue", "description"]
# Global attributes the CORDEX archive specification requires of every file.
STANDARDS = {
    "cordex": ("project_id", "CORDEX_domain", "driving_model_id", "experiment_id",
               "driving_model_ensemble_member", "model_id", "rcm_version_id", "frequency",
               "institute_id", "Conventions"),
}


def _row(key, issue, description):
    return (key, issue is None, issue, description)


def check_georeferencing(ds):
    """Can the horizontal grid be located (what project() needs)?"""
    from pyku.project import source_grid

    try:
        source_grid(ds)
        issue = None
    except PykuError as exc:
        issue = str(exc)
    return pd.DataFrame([_row("georeferencing", issue, "Horizontal grid can be located")], columns=COLUMNS)


def check_units(ds):
    """Can each climate variable's units be read?"""
    ureg, rows = drs.unit_registry(), []
    for var in meta.get_geodata_varnames(ds):
        units = ds[var].attrs.get("units")
        try:
            ureg.Quantity(1, drs._normalise(units))
            issue = None if units is not None else "no units attribute"
        except Exception:  # pint raises several types
            issue = f"units {units!r} cannot be read"
        rows.append(_row(f"{var}_units_can_be_read", issue, "Check if units can be read automatically"))
    return pd.DataFrame(rows, columns=COLUMNS)


def check_cmor_varnames(ds):
    """Is every climate variable named as in the CMOR table?"""
    rows = []
    for var in meta.get_geodata_varnames(ds):
        known = drs.cmor_name(var, ds[var].attrs)
        issue = None if known == var else (f"not a CMOR name; rename to {known!r} (to_cmor_varnames)"
                                           if known else "not a CMOR variable")
        rows.append(_row(f"{var}_is_cmor_varname", issue, "Variable name is a CMOR name"))
    return pd.DataFrame(rows, columns=COLUMNS)


def check_variables_cmor_metadata(ds):
    """Do standard_name, long_name and units match the CMOR table?"""
    rows = []
    for var in meta.get_geodata_varnames(ds):
        entry = drs.cmor_table().get(var)
        if entry is None:
            continue
        for key in ("standard_name", "long_name", "units"):
            have, want = ds[var].attrs.get(key), entry.get(key)
            issue = None if want is None or have == want else f"{key} is {have!r}, CMOR: {want!r}"
            rows.append(_row(f"{var}_cmor_{key}", issue, f"Variable {key} as in the CMOR table"))
    return pd.DataFrame(rows, columns=COLUMNS)


def check_frequency(ds):
    """Can the time frequency be determined without contradiction?"""
    if "time" not in ds.coords:
        return pd.DataFrame([], columns=COLUMNS)
    try:
        meta.get_frequency(ds)
        issue = None
    except PykuError as exc:
        issue = str(exc)
    return pd.DataFrame([_row("frequency", issue, "Frequency from labels, bounds and attributes")],
                        columns=COLUMNS)


def check_variables_role(ds):
    """Is every variable identified (climate data, grid, crs, time bounds)?"""
    known = set(meta.get_geodata_varnames(ds)) | set(meta.get_spatial_varnames(ds))
    known |= {meta.get_time_bounds_varname(ds)}
    rows = [_row(f"{v}_role_identified", None if v in known else "role not identified",
                 "Variable is data, grid, crs or bounds") for v in ds.data_vars]
    return pd.DataFrame(rows, columns=COLUMNS)


def check_datetimes(ds):
    """Are the time labels unique and increasing?"""
    if "time" not in ds.coords or ds["time"].size < 2:
        return pd.DataFrame([], columns=COLUMNS)
    index = ds.indexes["time"]
    issue = None if index.is_monotonic_increasing and index.is_unique else "time labels not strictly increasing"
    return pd.DataFrame([_row("datetimes_increasing", issue, "Time labels unique and sorted")],
                        columns=COLUMNS)


def check_datetime_completeness(ds, frequency):
    """Does each ``frequency`` period (e.g. '1YS') hold every time step of the data's frequency?"""
    import xarray as xr

    try:
        step = meta.get_frequency(ds)
        periods = ds["time"].to_index().to_period(pd.tseries.frequencies.to_offset(frequency).rule_code[0])
    except (PykuError, ValueError, KeyError) as exc:
        return pd.DataFrame([_row("datetime_completeness", str(exc), "Complete periods")], columns=COLUMNS)
    rows = []
    for period in sorted(set(periods)):
        expected = xr.date_range(period.start_time, period.end_time.floor("D"), freq=step).size
        have = int((periods == period).sum())
        issue = None if have >= expected else f"{have} of {expected} steps"
        rows.append(_row(f"complete_{period}", issue, f"All {step} steps of the {frequency} period"))
    return pd.DataFrame(rows, columns=COLUMNS)


def check_drs(ds, standard=None):
    """Are the global attributes ``standard`` requires present?"""
    if standard not in STANDARDS:
        raise OptionError(f"check: standard={standard!r}; known: {', '.join(STANDARDS)}")
    rows = [_row(f"global_attribute_{a}", None if a in ds.attrs else "missing",
                 f"Global attribute required by {standard}") for a in STANDARDS[standard]]
    return pd.DataFrame(rows, columns=COLUMNS)


def check_metadata(ds, standard=None, completeness_period=None):
    """All cheap checks in one table (pyku.check.check_metadata).

    Parameters
    ----------
    ds : xarray.Dataset
    standard : str, optional
        Also check the global attributes of this standard (``"cordex"``).
    completeness_period : str, optional
        Pandas frequency such as ``"1MS"`` or ``"1YS"``: check that each such
        period holds every time step.

    Returns
    -------
    pandas.DataFrame
        Columns key, value (True = passed), issue, description.
    """
    parts = [check_georeferencing(ds), check_units(ds), check_cmor_varnames(ds),
             check_variables_cmor_metadata(ds), check_frequency(ds), check_variables_role(ds),
             check_datetimes(ds)]
    if completeness_period is not None:
        parts.append(check_datetime_completeness(ds, completeness_period))
    if standard is not None:
        parts.append(check_drs(ds, standard))
    return pd.concat([p for p in parts if len(p)], ignore_index=True)
