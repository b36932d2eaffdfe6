"""Time labels, CMOR names and CMOR units on CCLM-like daily data."""

import warnings

import cftime
import numpy as np
import pytest
import xarray as xr

import pyku
from pyku import resources


def daily(raw="T_2M", units="degC", values=(-40.0, 0.0, 20.5, 36.6), step_hours=24, attrs=None):
    """A small dataset with time bounds: one value per step at a single point."""
    n = len(values)
    start = np.datetime64("1980-01-01T00:00", "ns")
    step = np.timedelta64(step_hours, "h")
    lower = start + step * np.arange(n)
    bounds = np.stack([lower, lower + step], axis=1)
    var_attrs = {"units": units, **(attrs or {})}
    return xr.Dataset(
        {raw: (("time",), np.asarray(values, dtype="float32"), var_attrs),
         "time_bnds": (("time", "bnds"), bounds)},
        coords={"time": ("time", lower + step // 2, {"bounds": "time_bnds", "standard_name": "time"})},
    )


@pytest.mark.parametrize("how, expected", [
    ("lower", ["1980-01-01T00:00", "1980-01-02T00:00"]),
    ("upper", ["1980-01-02T00:00", "1980-01-03T00:00"]),
    ("middle", ["1980-01-01T12:00", "1980-01-02T12:00"]),
])
def test_time_labels_from_bounds(how, expected):
    ds = resources.sample_dataset("tas", days=2, coarsen=16)  # labels at noon, as CCLM writes
    out = ds.pyku.set_time_labels_from_time_bounds(how=how)
    np.testing.assert_array_equal(out.time.values, np.array(expected, dtype="datetime64[ns]"))
    assert out.time.attrs == ds.time.attrs
    assert out.time.encoding["units"] == ds.time.encoding["units"]
    np.testing.assert_array_equal(out.T_2M.values, ds.T_2M.values)
    assert out.T_2M.attrs == ds.T_2M.attrs


def test_time_labels_with_cftime_calendar():
    lower = np.array([cftime.DatetimeNoLeap(2001, 2, 28), cftime.DatetimeNoLeap(2001, 3, 1)])
    upper = np.array([cftime.DatetimeNoLeap(2001, 3, 1), cftime.DatetimeNoLeap(2001, 3, 2)])
    ds = xr.Dataset({"tas": ("time", [1.0, 2.0]), "time_bnds": (("time", "bnds"), np.stack([lower, upper], 1))},
                    coords={"time": upper})
    out = ds.pyku.set_time_labels_from_time_bounds(how="middle")
    assert out.time.values[0] == cftime.DatetimeNoLeap(2001, 2, 28, 12)


def test_time_labels_without_bounds_warn_and_bad_how_raises():
    ds = daily().drop_vars("time_bnds")
    ds.time.attrs.pop("bounds")
    with pytest.warns(UserWarning, match="no time bounds"):
        out = ds.pyku.set_time_labels_from_time_bounds(how="lower")
    xr.testing.assert_identical(out, ds)
    with pytest.raises(pyku.TimeBoundsError, match="start"):
        daily().pyku.set_time_labels_from_time_bounds(how="start")


def test_varnames_by_name_and_by_long_name():
    ds = xr.Dataset({
        "T_2M": ("t", [1.0]), "TOT_PREC": ("t", [1.0]), "msl": ("t", [1.0]), "ASP_10M": ("t", [1.0]),
        "var168": ("t", [1.0], {"long_name": "2m Relative Humidity"}),
        "mystery": ("t", [1.0], {"long_name": "something else"}),
    })
    out = ds.pyku.to_cmor_varnames()
    assert list(out.data_vars) == ["tas", "pr", "psl", "sfcWind", "hurs", "mystery"]
    assert out.hurs.attrs["long_name"] == "2m Relative Humidity"
    by_long_name = xr.Dataset({"var167": ("t", [1.0], {"long_name": "2 metre temperature"})})
    assert list(by_long_name.pyku.to_cmor_varnames()) == ["tas"]
    expected = {"t2m": "tas", "2m_temperature": "tas", "TMAX_2M": "tasmax", "TMIN_2M": "tasmin",
                "tp": "pr", "RELHUM_2M": "hurs", "PS": "ps", "PMSL": "psl", "ASOD_S": "rsds",
                "ssrd": "rsds"}
    for name, cmor in expected.items():
        assert list(xr.Dataset({name: ("t", [1.0])}).pyku.to_cmor_varnames()) == [cmor], name
    with pytest.raises(pyku.PykuError, match="T_2M"):
        xr.Dataset({"T_2M": ("t", [1.0]), "t2m": ("t", [2.0])}).pyku.to_cmor_varnames()


def test_units_degc_to_kelvin_exact():
    ds = daily().pyku.to_cmor_varnames()
    out = ds.pyku.to_cmor_units()
    assert out.tas.attrs["units"] == "K"
    assert out.tas.dtype == np.float32
    expected = (ds.tas.values.astype("float64") + 273.15).astype("float32")
    np.testing.assert_array_equal(out.tas.values, expected)
    assert out.tas.values[1] == np.float32(273.15)
    # Already in K: untouched
    np.testing.assert_array_equal(out.pyku.to_cmor_units().tas.values, out.tas.values)


@pytest.mark.parametrize("units, step_hours, value, flux", [
    ("mm", 24, 86.4, 1e-3),          # mm per day (amount per daily step)
    ("mm", 1, 3.6, 1e-3),            # mm per hour
    ("kg m-2", 24, 8.64, 1e-4),      # amount as mass per area
    ("mm/day", 24, 86.4, 1e-3),      # already a rate
    ("m", 24, 0.0864, 1e-3),         # ERA5 tp in metres per step
])
def test_units_precipitation_amount_to_flux(units, step_hours, value, flux):
    ds = daily("TOT_PREC", units, values=[value, 0.0], step_hours=step_hours,
               attrs={"cell_methods": "time: sum", "standard_name": "precipitation_amount"})
    out = ds.pyku.to_cmor_varnames().pyku.to_cmor_units()
    assert out.pr.attrs["units"] == "kg m-2 s-1"
    np.testing.assert_allclose(out.pr.values, [flux, 0.0], rtol=1e-6)
    assert out.pr.dtype == np.float32


def test_units_daily_amount_uses_each_steps_length():
    # Monthly sums: January has 31 days, February 29 (1980)
    ds = daily("TOT_PREC", "mm", values=[31 * 86.4, 29 * 86.4])
    ds["time_bnds"] = (("time", "bnds"), np.array([["1980-01-01", "1980-02-01"], ["1980-02-01", "1980-03-01"]],
                                                  dtype="datetime64[ns]"))
    out = ds.pyku.to_cmor_varnames().pyku.to_cmor_units()
    np.testing.assert_allclose(out.pr.values, [1e-3, 1e-3], rtol=1e-6)


def test_units_other_variables_and_laziness():
    for var, target, check in [("hurs", "%", None), ("ps", "Pa", 100.0), ("psl", "Pa", 100.0),
                               ("rsds", "W m-2", 1.0), ("sfcWind", "m s-1", 1.0)]:
        ds = resources.sample_dataset(var, days=2, coarsen=16).chunk({"time": 1})
        out = ds.pyku.to_cmor_varnames().pyku.to_cmor_units()
        assert out[var].attrs["units"] == target
        assert out[var].chunks is not None  # lazy stays lazy
        if check:
            raw = ds[resources.SAMPLE_VARIABLES[var][0]]
            np.testing.assert_allclose(out[var].values, raw.values * check, rtol=1e-6)


def test_units_errors_name_the_variable():
    with pytest.raises(pyku.UnitsError, match="'tas'.*furlong_per_bogus"):
        daily(units="furlong_per_bogus").pyku.to_cmor_varnames().pyku.to_cmor_units()
    ds = daily()
    del ds.T_2M.attrs["units"]
    with pytest.raises(pyku.UnitsError, match="'tas' has no units"):
        ds.pyku.to_cmor_varnames().pyku.to_cmor_units()
    with pytest.raises(pyku.UnitsError, match="'tas'.*'m s-1'.*'K'"):
        daily(units="m s-1").pyku.to_cmor_varnames().pyku.to_cmor_units()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        daily("mystery", "furlong").pyku.to_cmor_units()  # not a CMOR variable: left alone


def test_undecoded_time_bounds_are_decoded_with_the_time_units_or_refused():
    # time_bnds found by its name only (no "bounds" attribute): xarray leaves it raw.
    ds = daily()
    ds.time.attrs.pop("bounds")
    ds.time.encoding.update(units="days since 1980-01-01", calendar="proleptic_gregorian")
    raw = (ds.time_bnds.values - np.datetime64("1980-01-01")) / np.timedelta64(1, "D")
    ds["time_bnds"] = (("time", "bnds"), raw)
    assert ds.time_bnds.dtype == np.float64
    out = ds.pyku.set_time_labels_from_time_bounds(how="lower")
    assert out.time.dtype == ds.time.dtype
    np.testing.assert_array_equal(out.time.values, daily().time_bnds.values[:, 0])

    # cftime labels get cftime bounds, in the calendar of the time coordinate.
    labels = [cftime.DatetimeNoLeap(2001, 3, 1, 12), cftime.DatetimeNoLeap(2001, 3, 2, 12)]
    noleap = xr.Dataset({"tas": ("time", [1.0, 2.0]),
                         "time_bnds": (("time", "bnds"), [[0.0, 1.0], [1.0, 2.0]])}, coords={"time": labels})
    noleap.time.encoding.update(units="days since 2001-02-28", calendar="noleap")
    out = noleap.pyku.set_time_labels_from_time_bounds(how="upper")
    assert list(out.time.values) == [cftime.DatetimeNoLeap(2001, 3, 1), cftime.DatetimeNoLeap(2001, 3, 2)]

    ds.time.encoding.clear()  # no units anywhere: refuse rather than put floats on the time axis
    with pytest.raises(pyku.TimeBoundsError, match="time_bnds.*not decoded"):
        ds.pyku.set_time_labels_from_time_bounds(how="lower")


def test_undecoded_times_in_units_conversion_name_the_variable(tmp_path):
    def write(ds, name):
        ds.time.encoding["units"] = "hours since 1980-01-01"
        ds.to_netcdf(tmp_path / name)
        return xr.open_dataset(tmp_path / name, decode_times=False).pyku.to_cmor_varnames()

    ds = write(daily("TOT_PREC", "mm", values=[86.4, 0.0]), "pr.nc")
    assert ds.time.dtype.kind in "if"  # raw numbers
    with pytest.raises(pyku.UnitsError, match="'pr'.*'time'.*decode_times"):
        ds.pyku.to_cmor_units()
    with pytest.raises(pyku.UnitsError, match="'pr'.*'time'.*decode_times"):
        ds.drop_vars("time_bnds").pyku.to_cmor_units()
    # Without a time step to find, undecoded times do not matter.
    tas = write(daily(units="degC"), "tas.nc")
    assert tas.pyku.to_cmor_units().tas.attrs["units"] == "K"


def test_one_step_without_bounds_is_a_clear_error():
    ds = daily("TOT_PREC", "mm", values=[86.4]).drop_vars("time_bnds")
    with pytest.raises(pyku.UnitsError,
                       match="'pr'.*cannot infer the time step from one step without bounds"):
        ds.pyku.to_cmor_varnames().pyku.to_cmor_units()
    # With bounds, one step is enough.
    one = daily("TOT_PREC", "mm", values=[86.4]).pyku.to_cmor_varnames().pyku.to_cmor_units()
    np.testing.assert_allclose(one.pr.values, [1e-3], rtol=1e-6)


def test_converted_values_drop_the_old_packing():
    ds = daily("PS", "hPa", values=[1013.2, 980.1])
    ds.PS.encoding.update(dtype="int16", scale_factor=0.1, add_offset=0.0, _FillValue=np.int16(-32767))
    out = ds.pyku.to_cmor_varnames().pyku.to_cmor_units()
    assert out.ps.attrs["units"] == "Pa"
    # 101320 Pa does not fit int16 packed with scale 0.1: the packing was for hPa.
    assert not {"dtype", "scale_factor", "add_offset", "_FillValue"} & set(out.ps.encoding)
    kept = daily("PS", "Pa").rename(PS="ps")
    kept.ps.encoding.update(dtype="int16", scale_factor=2.0)
    assert kept.pyku.to_cmor_units().ps.encoding["scale_factor"] == 2.0  # no conversion: kept


@pytest.mark.parametrize("raw, units, values, step_hours, attrs, cmor, target, expected", [
    # radiation accumulated over each step (J m-2) -> its mean flux (W m-2), by each step's length
    ("rsds", "J m-2", [86400 * 200.0, 0.0], 24, {"cell_methods": "time: sum"}, "rsds", "W m-2", [200.0, 0.0]),
    ("rsds", "J m-2", [3600 * 150.0, 3600 * 10.0], 1, {"cell_methods": "time: sum"}, "rsds", "W m-2",
     [150.0, 10.0]),
    # relative humidity as a fraction -> percent
    ("RELHUM_2M", "1", [0.5, 0.9], 24, {}, "hurs", "%", [50.0, 90.0]),
    # snowfall amount per day (mm water equivalent) -> flux
    ("prsn", "mm", [8.64, 0.0], 24, {"cell_methods": "time: sum"}, "prsn", "kg m-2 s-1", [1e-4, 0.0]),
])
def test_cmor_units_of_amounts_and_fractions(raw, units, values, step_hours, attrs, cmor, target, expected):
    ds = daily(raw, units, values=values, step_hours=step_hours, attrs=attrs)
    out = ds.pyku.to_cmor_varnames().pyku.to_cmor_units()
    assert out[cmor].attrs["units"] == target
    np.testing.assert_allclose(out[cmor].values, expected, rtol=1e-6)
