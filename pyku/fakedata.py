"""Offline generators of pyku-style CMIP6 and CORDEX sample datasets.

:func:`generate_fake_cmip6_data` has the signature of pyku's function of the
same name (``pyku.resources.generate_fake_cmip6_data``); both generators
write CMOR names, units and time bounds, so the datasets go straight into
``project``, ``check_metadata`` or ``cmorize``.  Values are smooth fields
plus seeded noise: the same arguments give the same dataset.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from pyku import drs
from pyku.errors import OptionError

VARIABLES = ("tas", "tasmax", "tasmin", "pr", "sfcWind", "rsds", "ps", "psl", "hurs")


def _field(variable, lat, lon, time, rng):
    """(time, *lat.shape) values of ``variable`` in CMOR units."""
    if variable not in VARIABLES:
        raise OptionError(f"no sample recipe for {variable!r}; choose one of {', '.join(VARIABLES)}")
    season = np.sin(2 * np.pi * time.day_of_year.values / 365.0)[:, None, None]
    pattern = (np.sin(np.radians(lat)) * np.cos(np.radians(lon)))[None]
    noise = rng.standard_normal((time.size,) + lat.shape)
    offset = {"tasmax": 4.0, "tasmin": -4.0}.get(variable, 0.0)
    if variable.startswith("tas"):
        return 288.0 + offset - 30 * np.abs(np.sin(np.radians(lat)))[None] + 8 * season + 2 * noise
    if variable == "pr":
        return 1e-5 * (1.5 + pattern) + 2e-5 * np.abs(noise)
    if variable == "sfcWind":
        return 4 + 2 * pattern + np.abs(noise)
    if variable == "rsds":
        return np.clip(180 + 120 * season + 50 * pattern + 20 * noise, 0, None)
    if variable == "hurs":
        return np.clip(75 - 10 * pattern + 5 * season + 8 * noise, 0, 100)
    return 101325.0 - 1500 * pattern - 500 * season + 300 * noise  # ps, psl


def _time_axis(ntime, freq):
    """``ntime`` years ending 2023-12-31 at ``freq``, with bounds; labels mid-interval (CMOR)."""
    lower = pd.date_range(f"{2024 - ntime}-01-01", "2024-01-01", freq=freq)
    bounds = np.stack([lower[:-1], lower[1:]], axis=1)
    return pd.DatetimeIndex(lower[:-1] + (lower[1:] - lower[:-1]) / 2), bounds


def _dataset(variable, values, time, bounds, dims, coords, attrs, grid_mapping=None):
    entry = drs.cmor_table()[variable]
    var_attrs = {k: entry[k] for k in ("standard_name", "long_name", "units")}
    var_attrs["cell_methods"] = "time: mean"
    if grid_mapping:
        var_attrs["grid_mapping"] = grid_mapping
    ds = xr.Dataset({variable: (("time",) + dims, values.astype("float32"), var_attrs),
                     "time_bnds": (("time", "bnds"), bounds)},
                    coords={"time": ("time", time, {"standard_name": "time", "axis": "T",
                                                    "bounds": "time_bnds"}), **coords},
                    attrs=attrs)
    return ds


def generate_fake_cmip6_data(variable="tas", ntime=1, nlat=180, nlon=360, freq="D", seed=42):
    """A global CMIP6-like dataset on a regular ``nlat`` x ``nlon`` grid (pyku's signature).

    Parameters
    ----------
    variable : str
        One of tas, tasmax, tasmin, pr, sfcWind, rsds, ps, psl, hurs.
    ntime : int
        Number of years, ending 2023-12-31.
    nlat, nlon : int
        Grid size; cell centres of a global grid with bounds.
    freq : str
        Pandas frequency of the time steps ("D", "MS", "h", ...).
    seed : int
        Seed of the noise.
    """
    rng = np.random.default_rng(seed)
    time, bounds = _time_axis(ntime, freq)
    lat = -90 + (np.arange(nlat) + 0.5) * 180.0 / nlat
    lon = (np.arange(nlon) + 0.5) * 360.0 / nlon
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    coords = {
        "lat": ("lat", lat, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y",
                             "bounds": "lat_bnds"}),
        "lon": ("lon", lon, {"standard_name": "longitude", "units": "degrees_east", "axis": "X",
                             "bounds": "lon_bnds"}),
    }
    attrs = {"Conventions": "CF-1.7 CMIP-6.2", "mip_era": "CMIP6", "activity_id": "CMIP",
             "experiment_id": "historical", "source_id": "PYKU-FAKE", "institution_id": "PYKU",
             "variant_label": "r1i1p1f1", "grid_label": "gn", "table_id": _table(freq),
             "frequency": drs._FREQUENCY_ATTRS.get(freq, freq), "variable_id": variable,
             "comment": "synthetic data generated offline by pyku.resources"}
    ds = _dataset(variable, _field(variable, lat2, lon2, time, rng), time, bounds, ("lat", "lon"),
                  coords, attrs)
    ds["lat_bnds"] = (("lat", "bnds"), np.stack([lat - 90.0 / nlat, lat + 90.0 / nlat], axis=1))
    ds["lon_bnds"] = (("lon", "bnds"), np.stack([lon - 180.0 / nlon, lon + 180.0 / nlon], axis=1))
    return ds


def generate_fake_cordex_data(variable="tas", ntime=1, area="EUR-44", freq="D", seed=42):
    """A CORDEX-like dataset on one of pyku's areas (default the rotated-pole EUR-44).

    Parameters as :func:`generate_fake_cmip6_data`; ``area`` names the grid.
    """
    from pyku.areas import get_grid

    grid = get_grid(area)
    rng = np.random.default_rng(seed)
    time, bounds = _time_axis(ntime, freq)
    target = grid.to_dataset()
    lon, lat = grid.lonlat()
    coords = {name: target[name] for name in target.coords}
    attrs = {"Conventions": "CF-1.4", "project_id": "CORDEX", "CORDEX_domain": grid.cordex_domain or area,
             "driving_model_id": "PYKU-FAKE-GCM", "experiment_id": "historical",
             "driving_model_ensemble_member": "r1i1p1", "model_id": "PYKU-FAKE-RCM",
             "rcm_version_id": "v1", "institute_id": "PYKU", "frequency": drs._FREQUENCY_ATTRS.get(freq, freq),
             "comment": "synthetic data generated offline by pyku.resources"}
    ds = _dataset(variable, _field(variable, lat, lon, time, rng), time, bounds, grid.dims, coords,
                  attrs, grid_mapping=grid.mapping_name)
    ds[grid.mapping_name] = target[grid.mapping_name]
    return ds


def _table(freq):
    return {"D": "day", "MS": "Amon", "h": "1hr", "3h": "3hr", "6h": "6hrPlev"}.get(freq, freq)
