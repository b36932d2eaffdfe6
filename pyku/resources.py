"""Package resources: the grid catalogue and realistic sample input files.

The sample files stand in for the seed's CCLM output, so demos and tests
need no download: daily means on the seed's rotated-pole 0.0275° Germany grid
(328 × 346 rlon/rlat from the centre (-9.4, -3.95); its files say
``CORDEX_domain = GER-0275``, although pyku's area of that name is the larger
415 × 423 grid, see :data:`SAMPLE_GRID`), with ``time_bnds``, 2-D ``lat``/``lon``,
a ``rotated_pole`` grid mapping and raw model names and units (``T_2M`` in
degC, ``TOT_PREC`` in mm per day, …), one file per variable and year, named
as in the seed.  Values are smooth, seasonal and deterministic for a given
seed, so outputs can be compared byte for byte.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

import numpy as np
import xarray as xr

from pyku.areas import get_grid, list_grids  # noqa: F401  (the catalogue, re-exported)
from pyku.grids import Grid

# The seed's CCLM grid: 0.0275° rotated pole, first centre (-9.4, -3.95).
SAMPLE_GRID = Grid(crs="+proj=ob_tran +o_proj=longlat +o_lat_p=39.25 +o_lon_p=0 +lon_0=18 +datum=WGS84 "
                   "+no_defs", x0=-9.4, dx=0.0275, nx=328, y0=-3.95, dy=0.0275, ny=346,
                   dims=("rlat", "rlon"), name="CCLM-GER-0275", decimals=6)
FILENAME = ("{cmor}_GER-0275_ECMWF-ERA5_evaluation_r1i1p1_CLMcom-DWD-CCLM5-0-16_x0n1-v1_day_"
            "{start:%Y%m%d}-{end:%Y%m%d}.nc")
TIME_UNITS = "days since 1949-12-01 00:00:00"
CALENDAR = "proleptic_gregorian"

# CMOR name -> raw CCLM name, units and the attributes CCLM writes.
SAMPLE_VARIABLES = {
    "tas": ("T_2M", "degC", "2m temperature", "air_temperature"),
    "tasmax": ("TMAX_2M", "degC", "2m maximum temperature", "air_temperature"),
    "tasmin": ("TMIN_2M", "degC", "2m minimum temperature", "air_temperature"),
    "pr": ("TOT_PREC", "mm", "total precipitation amount", "precipitation_amount"),
    "hurs": ("RELHUM_2M", "%", "2m relative humidity", "relative_humidity"),
    "ps": ("PS", "hPa", "surface pressure", "surface_air_pressure"),
    "psl": ("PMSL", "hPa", "mean sea level pressure", "air_pressure_at_mean_sea_level"),
    "rsds": ("ASOD_S", "W m-2", "averaged surface downward shortwave radiation",
             "surface_downwelling_shortwave_flux_in_air"),
    "sfcWind": ("ASP_10M", "m s-1", "averaged 10m wind speed", "wind_speed"),
}


def sample_grid(coarsen=1):
    """The sample grid (:data:`SAMPLE_GRID`), or every ``coarsen``-th cell of it for fast tests."""
    base = SAMPLE_GRID
    if coarsen == 1:
        return base
    nx, ny = -(-base.nx // coarsen), -(-base.ny // coarsen)
    return Grid(crs=base.crs, x0=base.x0, dx=base.dx * coarsen, nx=nx, y0=base.y0,
                dy=base.dy * coarsen, ny=ny, dims=base.dims, name=f"{SAMPLE_GRID.name}/{coarsen}",
                decimals=base.decimals)


def sample_dataset(variable="tas", year=1980, days=None, coarsen=1, seed=0):
    """One CCLM-like daily dataset (in memory), as :func:`write_sample_files` writes it.

    Parameters
    ----------
    variable : str
        CMOR name of the variable to imitate (see ``SAMPLE_VARIABLES``).
    year : int
        Calendar year; days start on 1 January.
    days : int, optional
        Number of days (default: the whole year).
    coarsen : int
        Keep every ``coarsen``-th grid cell (1 = the full 328 × 346 grid).
    seed : int
        Seed of the weather noise; the same arguments give the same values.
    """
    try:
        raw, units, long_name, standard_name = SAMPLE_VARIABLES[variable]
    except KeyError:
        raise ValueError(f"no sample recipe for {variable!r}; choose from {sorted(SAMPLE_VARIABLES)}") from None
    grid = sample_grid(coarsen)
    start = dt.datetime(year, 1, 1)
    ndays = days if days is not None else (dt.datetime(year + 1, 1, 1) - start).days
    lower = np.array([start + dt.timedelta(days=i) for i in range(ndays + 1)], dtype="datetime64[ns]")
    time = lower[:-1] + np.timedelta64(12, "h")
    bounds = np.stack([lower[:-1], lower[1:]], axis=1)
    lon, lat = grid.lonlat()
    values = _weather(variable, lon, lat, year, ndays, _seed(variable, year, seed))

    ds = xr.Dataset(
        {
            raw: (("time", "rlat", "rlon"), values,
                  {"standard_name": standard_name, "long_name": long_name, "units": units,
                   "grid_mapping": "rotated_pole",
                   "cell_methods": "time: sum" if variable == "pr" else "time: mean"}),
            "time_bnds": (("time", "bnds"), bounds),
            "rotated_pole": ((), np.array(b"", dtype="S1"),
                             {"grid_mapping_name": "rotated_latitude_longitude",
                              "grid_north_pole_latitude": 39.25, "grid_north_pole_longitude": -162.0}),
        },
        coords={
            "time": ("time", time, {"standard_name": "time", "long_name": "time", "axis": "T",
                                    "bounds": "time_bnds"}),
            "rlon": ("rlon", grid.x, {"standard_name": "grid_longitude", "long_name": "rotated longitude",
                                      "units": "degrees", "axis": "X"}),
            "rlat": ("rlat", grid.y, {"standard_name": "grid_latitude", "long_name": "rotated latitude",
                                      "units": "degrees", "axis": "Y"}),
            "lon": (("rlat", "rlon"), lon, {"standard_name": "longitude", "long_name": "longitude",
                                            "units": "degrees_east"}),
            "lat": (("rlat", "rlon"), lat, {"standard_name": "latitude", "long_name": "latitude",
                                           "units": "degrees_north"}),
        },
        attrs={
            "Conventions": "CF-1.4", "project_id": "CORDEX", "CORDEX_domain": "GER-0275",
            "driving_model_id": "ECMWF-ERA5", "experiment_id": "evaluation",
            "driving_model_ensemble_member": "r1i1p1", "model_id": "CLMcom-DWD-CCLM5-0-16",
            "rcm_version_id": "x0n1-v1", "frequency": "day", "institution": "pyku sample data",
            "comment": "synthetic CCLM-like data generated by pyku.resources",
        },
    )
    for name in ("time", "time_bnds"):
        ds[name].encoding.update(units=TIME_UNITS, calendar=CALENDAR, dtype="float64")
    for name in ("time", "time_bnds", "rlon", "rlat", "lon", "lat"):
        ds[name].encoding["_FillValue"] = None  # CF: no fill values in coordinates
    ds[raw].encoding.update(dtype="float32", _FillValue=np.float32(1e20))
    return ds


def write_sample_files(directory, variables=("tas", "pr"), years=(1980,), days=None, coarsen=1, seed=0,
                       overwrite=True):
    """Write CCLM-like daily NetCDF files, one per variable and year.

    Parameters
    ----------
    directory : str or Path
        Created if missing.
    variables : sequence of str
        CMOR names to imitate, e.g. ``("tas", "pr")``.
    years : sequence of int
        One file per year.
    days : int, optional
        Days per file from 1 January (default: the whole year); the file name
        states the real period.
    coarsen, seed : int
        As in :func:`sample_dataset`.
    overwrite : bool
        Replace existing files of the same name (default), or keep them, so
        that a re-run of a demo sees unchanged inputs.

    Returns
    -------
    list of str
        Paths, variables varying fastest.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for year in years:
        for variable in variables:
            start = dt.date(year, 1, 1)
            ndays = days if days is not None else (dt.date(year + 1, 1, 1) - start).days
            end = start + dt.timedelta(days=ndays - 1)
            path = directory / FILENAME.format(cmor=variable, start=start, end=end)
            paths.append(str(path))
            if path.exists() and not overwrite:
                continue
            ds = sample_dataset(variable, year, days=days, coarsen=coarsen, seed=seed)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
            ds.to_netcdf(tmp, format="NETCDF4")
            os.replace(tmp, path)
    return paths


def _seed(variable, year, seed):
    digest = hashlib.blake2b(f"{variable}/{year}/{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _weather(variable, lon, lat, year, ndays, seed):
    """Plausible daily fields (time, rlat, rlon), float32: seasonal cycle, gradients, noise."""
    rng = np.random.default_rng(seed)
    doy = np.arange(ndays)[:, None, None]
    season = np.cos(2 * np.pi * (doy - 196) / 365.25)           # +1 mid July
    # Large-scale day-to-day anomalies: one random plane per day, plus small noise.
    a, b, c = (rng.standard_normal((3, ndays, 1, 1)))
    lat_n, lon_n = (lat - 51.0) / 5.0, (lon - 10.0) / 5.0
    anomaly = a + b * lat_n + c * lon_n
    noise = rng.standard_normal((ndays,) + lat.shape).astype(np.float32)
    if variable in ("tas", "tasmax", "tasmin"):
        offset = {"tas": 0.0, "tasmax": 4.5, "tasmin": -4.5}[variable]
        v = 9.0 + offset + 9.0 * season - 0.6 * (lat - 51.0) - 0.3 * (lon - 10.0) + 3.0 * anomaly + 0.5 * noise
    elif variable == "pr":
        wet = 1.5 + 0.8 * lon_n - 0.5 * lat_n + anomaly + 0.7 * noise
        v = np.where(wet > 1.0, 2.5 * (wet - 1.0) ** 2, 0.0)
    elif variable == "hurs":
        v = np.clip(78.0 - 10.0 * season + 6.0 * anomaly + 3.0 * noise, 5.0, 100.0)
    elif variable in ("ps", "psl"):
        base = 1013.0 if variable == "psl" else 975.0 - 4.0 * (lat < 49.0)
        v = base + 8.0 * anomaly + 0.3 * noise
    elif variable == "rsds":
        daylen = 1.0 - 0.45 * np.cos(2 * np.pi * (doy + 10) / 365.25)
        v = np.clip(170.0 * daylen ** 2 - 2.0 * (lat - 51.0) + 30.0 * anomaly + 5.0 * noise, 0.0, None)
    else:  # sfcWind
        v = np.abs(3.5 + 0.8 * lat_n + 1.2 * anomaly + 0.4 * noise)
    return np.ascontiguousarray(v, dtype=np.float32)


from pyku.fakedata import generate_fake_cmip6_data, generate_fake_cordex_data  # noqa: F401
