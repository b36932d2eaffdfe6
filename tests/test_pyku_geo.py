"""pyku.project: a scientist reprojects model output onto the HYRAS grids.

Accuracy is checked on an analytic field f(lat, lon): nearest neighbour may
be off by at most the field's change over half a source cell (diagonal),
bilinear must be clearly better, and cells outside the source domain are
NaN, never a far-away edge value.
"""

import warnings

import numpy as np
import pyproj
import pytest
import xarray as xr

import pyku
from pyku import regrid, resources

HYR5_CRS = "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80"


def field(lat, lon):
    """Smooth analytic test field, and its gradient magnitude per radian of arc."""
    phi, lam = np.radians(lat), np.radians(lon)
    f = 10 * np.sin(3 * phi) + 10 * np.cos(4 * lam)
    grad = np.hypot(30 * np.cos(3 * phi), 40 * np.sin(4 * lam) / np.cos(phi))
    return f, grad


def rotated_source(coarsen=4, days=2):
    """Sample rotated-pole dataset (0.11° with coarsen=4) holding f(lat, lon)."""
    ds = resources.sample_dataset("tas", days=days, coarsen=coarsen)
    f, _ = field(ds.lat.values, ds.lon.values)
    values = np.broadcast_to(f, ds.T_2M.shape).astype("float64")
    return ds.assign(T_2M=ds.T_2M.copy(data=values))


def errors(out, name="T_2M"):
    """Absolute error against the analytic field and the nearest-neighbour bound."""
    f, grad = field(out.lat.values, out.lon.values)
    return np.abs(out[name].isel(time=0).values - f), grad


def half_diagonal_rotated(res_deg):
    return 0.5 * np.sqrt(2) * np.radians(res_deg)


def test_hyr_laea_5_grid_is_exact_and_cf():
    ds = rotated_source(coarsen=8, days=1)
    ds.T_2M.attrs.update(units="degC", long_name="2m temperature", cell_methods="time: mean")
    out = ds.pyku.project("HYR-LAEA-5")

    assert out.sizes["x"] == 258 and out.sizes["y"] == 220
    assert out.T_2M.dims == ("time", "y", "x")
    np.testing.assert_array_equal(out.x.values, 3808500.0 + 5000.0 * np.arange(258))
    np.testing.assert_array_equal(out.y.values, 3586500.0 - 5000.0 * np.arange(220))
    assert out.x.values[[0, -1]].tolist() == [3808500.0, 5093500.0]
    assert out.y.values[[0, -1]].tolist() == [3586500.0, 2491500.0]
    assert out.x.attrs["units"] == "m" and out.x.attrs["standard_name"] == "projection_x_coordinate"

    crs = pyproj.CRS.from_cf(out.crs.attrs)
    assert crs.equals(pyproj.CRS(HYR5_CRS))
    assert out.crs.attrs["grid_mapping_name"] == "lambert_azimuthal_equal_area"
    to_geo = pyproj.Transformer.from_crs(HYR5_CRS, "EPSG:4326", always_xy=True)
    lon, lat = to_geo.transform(*np.meshgrid(out.x.values, out.y.values))
    assert out.lat.dims == ("y", "x") and out.lon.dims == ("y", "x")
    np.testing.assert_allclose(out.lon.values, lon, atol=1e-9)
    np.testing.assert_allclose(out.lat.values, lat, atol=1e-9)

    assert out.T_2M.attrs["grid_mapping"] == "crs"
    assert out.T_2M.attrs["long_name"] == "2m temperature"
    assert out.T_2M.attrs["cell_methods"] == "time: mean"
    # pyku: CORDEX_domain names the target (HYR-LAEA-5 has none), never the source.
    assert out.attrs == {**ds.attrs, "CORDEX_domain": "undefined"}
    assert "time_bnds" in out and "rotated_pole" not in out and "rlon" not in out.dims


def test_output_survives_netcdf_round_trip(tmp_path):
    out = rotated_source(coarsen=8, days=1).pyku.project("HYR-LAEA-5")
    out.to_netcdf(tmp_path / "out.nc")
    back = xr.open_dataset(tmp_path / "out.nc")
    assert back.T_2M.attrs["grid_mapping"] == "crs"
    assert pyproj.CRS.from_cf(back.crs.attrs).equals(pyproj.CRS(HYR5_CRS))
    # A projected output is itself a valid source (CF projected grid).
    again = back.pyku.project("HYR-LAEA-5")
    np.testing.assert_array_equal(again.T_2M.values, back.T_2M.values)  # identity


@pytest.mark.parametrize("kind", ["rotated", "curvilinear"])
def test_accuracy_nearest_within_half_cell_and_bilinear_tighter(kind):
    ds = rotated_source(coarsen=4)
    if kind == "curvilinear":
        # Only 2-D lat/lon: no rlon/rlat coordinates, no grid mapping.
        ds = ds.drop_vars(["rlon", "rlat", "rotated_pole"])
        del ds.T_2M.attrs["grid_mapping"]
        assert ds.pyku.source_grid().crs is None
    nn = ds.pyku.project("HYR-LAEA-5")
    bl = ds.pyku.project("HYR-LAEA-5", method="bilinear")

    err_nn, grad = errors(nn)
    err_bl, _ = errors(bl)
    both = np.isfinite(err_nn) & np.isfinite(err_bl)
    assert both.sum() > 10_000
    bound = grad * half_diagonal_rotated(0.11) * 1.05
    assert np.all(err_nn[both] <= bound[both] + 1e-9)
    assert np.nanmax(err_nn) > 0.3 * np.nanmax(bound)  # the bound is not vacuous
    rms_nn = np.sqrt(np.mean(err_nn[both] ** 2))
    rms_bl = np.sqrt(np.mean(err_bl[both] ** 2))
    assert rms_bl < 0.1 * rms_nn
    assert np.nanmax(err_bl) < 0.25 * np.nanmax(err_nn[both])


def test_rotated_and_curvilinear_sources_agree():
    ds = rotated_source(coarsen=4, days=1)
    curv = ds.drop_vars(["rlon", "rlat", "rotated_pole"])
    del curv.T_2M.attrs["grid_mapping"]
    no_latlon = ds.drop_vars(["lat", "lon"])  # rotated pole: lat/lon derived from the grid mapping
    for method in ("nearest_neighbor", "bilinear"):
        a = ds.pyku.project("HYR-LAEA-5", method=method).T_2M.values
        np.testing.assert_array_equal(no_latlon.pyku.project("HYR-LAEA-5", method=method).T_2M.values, a)
        b = curv.pyku.project("HYR-LAEA-5", method=method).T_2M.values
        assert np.array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, atol=1e-6 if method == "bilinear" else 0, equal_nan=True)


def test_regular_lat_lon_source_covering_the_target():
    lat = np.arange(42.0, 58.01, 0.1)
    lon = np.arange(0.0, 25.01, 0.1)
    f, _ = field(*np.meshgrid(lat, lon, indexing="ij"))
    ds = xr.Dataset(
        {"tas": (("time", "lat", "lon"), f[None], {"units": "K"})},
        coords={"time": [np.datetime64("2000-01-01")],
                "lat": ("lat", lat, {"standard_name": "latitude", "units": "degrees_north"}),
                "lon": ("lon", lon, {"standard_name": "longitude", "units": "degrees_east"})},
    )
    nn = ds.pyku.project("HYR-LAEA-5")
    bl = ds.pyku.project("HYR-LAEA-5", method="bilinear")
    err_nn, grad = errors(nn, "tas")
    err_bl, _ = errors(bl, "tas")
    assert np.isfinite(err_nn).all() and np.isfinite(err_bl).all()  # source covers the target
    half_diag = 0.5 * np.radians(0.1) * np.hypot(1.0, np.cos(np.radians(nn.lat.values)))
    assert np.all(err_nn <= grad * half_diag * 1.05 + 1e-9)
    assert np.sqrt(np.mean(err_bl ** 2)) < 0.1 * np.sqrt(np.mean(err_nn ** 2))


def test_projected_source_with_grid_mapping():
    grid = pyku.get_grid("HYR-LCC-12.5")
    src = grid.to_dataset()
    f, _ = field(src.lat.values, src.lon.values)
    src["tas"] = (("time", "y", "x"), f[None], {"grid_mapping": "crs", "units": "K"})
    src = src.assign_coords(time=[np.datetime64("2000-01-01")])
    out = src.pyku.project("HYR-LAEA-5", method="bilinear")
    err, grad = errors(out, "tas")
    finite = np.isfinite(err)
    assert finite.mean() > 0.9
    assert np.all(err[finite] <= grad[finite] * 12.5e3 / 6.371e6 * 1.05)


def test_cells_outside_the_source_domain_follow_pyku_roi_semantics():
    """pyku's nearest neighbour fills every cell whose nearest source centre is within
    roi (default 1000 km), also beyond the source domain; keep_mask=True, a small roi
    (10 km: above the 0.11° cells' half diagonal, below the 12 km gap) and bilinear leave
    cells outside the domain NaN."""
    ds = rotated_source(coarsen=4, days=1)
    res = 0.11
    to_rot = pyproj.Transformer.from_crs("EPSG:4326", pyproj.CRS.from_cf(ds.rotated_pole.attrs),
                                         always_xy=True)
    out = ds.pyku.project("HYR-LAEA-5")
    rlon, rlat = to_rot.transform(out.lon.values, out.lat.values)
    lo_x, hi_x = ds.rlon.values.min(), ds.rlon.values.max()
    lo_y, hi_y = ds.rlat.values.min(), ds.rlat.values.max()
    inside = (rlon > lo_x + res) & (rlon < hi_x - res) & (rlat > lo_y + res) & (rlat < hi_y - res)
    outside = (rlon < lo_x - res) | (rlon > hi_x + res) | (rlat < lo_y - res) | (rlat > hi_y + res)
    assert inside.sum() > 10_000 and outside.sum() > 1_000
    assert np.isfinite(out.T_2M.isel(time=0).values).all()  # HYR-LAEA-5 is < 1000 km outside
    for kwargs in ({"keep_mask": True}, {"roi": 10_000}, {"method": "bilinear"},
                   {"method": "conservative"}):
        values = ds.pyku.project("HYR-LAEA-5", **kwargs).T_2M.isel(time=0).values
        assert np.isfinite(values[inside]).all(), kwargs
        assert np.isnan(values[outside]).all(), kwargs


def test_lazy_input_stays_lazy_and_index_is_built_once():
    regrid.clear_cache()
    ds = rotated_source(coarsen=8, days=6).chunk({"time": 2})
    other_file = ds.assign(T_2M=ds.T_2M + 1)  # same grid, other data
    out = ds.pyku.project("HYR-LAEA-5")
    out2 = other_file.pyku.project("HYR-LAEA-5")
    assert isinstance(out.T_2M.data, __import__("dask").array.Array)
    assert out.T_2M.chunks[0] == (2, 2, 2)
    info = regrid.cache_info()
    assert info["builds"] == 1 and info["hits"] == 1
    eager = ds.compute().pyku.project("HYR-LAEA-5")
    np.testing.assert_array_equal(out.T_2M.values, eager.T_2M.values)
    np.testing.assert_array_equal(out2.T_2M.values, eager.T_2M.values + 1)
    assert regrid.cache_info()["builds"] == 1  # computing did not rebuild it
    ds.pyku.project("HYR-LAEA-5", method="bilinear")
    assert regrid.cache_info()["builds"] == 2


def test_eur11_target_has_rotated_coordinates():
    out = rotated_source(coarsen=8, days=1).pyku.project("EUR-11")
    assert dict(out.T_2M.sizes) == {"time": 1, "rlat": 412, "rlon": 424}
    assert out.rlon.values[0] == -28.375 and out.rlat.values[0] == -23.375
    assert out.T_2M.attrs["grid_mapping"] == "rotated_pole"
    assert out.rotated_pole.attrs["grid_north_pole_latitude"] == 39.25
    assert out.lat.dims == ("rlat", "rlon")


def test_user_defined_grid_and_unknown_name():
    target = {"crs": "EPSG:3035", "shape": (20, 30), "extent": (4200000, 2900000, 4500000, 3100000)}
    out = rotated_source(coarsen=8, days=1).pyku.project(target)
    assert out.T_2M.shape == (1, 20, 30)
    assert out.x.values[0] == 4205000 and out.y.values[0] == 3095000
    with pytest.raises(pyku.GridError, match="HYR-LAEA-5"):
        rotated_source(coarsen=8, days=1).pyku.project("HYR-LAEA-6")
    with pytest.raises(pyku.OptionError, match="method"):
        rotated_source(coarsen=8, days=1).pyku.project("HYR-LAEA-5", method="cubic")


def test_global_regular_source_across_the_greenwich_seam():
    # ERA5 layout: latitude descending, longitude 0..359, target EUR-11 crosses 0°E.
    lat, lon = np.arange(90.0, -90.1, -1.0), np.arange(0.0, 360.0, 1.0)
    f, _ = field(*np.meshgrid(lat, lon, indexing="ij"))
    ds = xr.Dataset({"t2m": (("latitude", "longitude"), f, {"units": "K"})},
                    coords={"latitude": ("latitude", lat, {"units": "degrees_north"}),
                            "longitude": ("longitude", lon, {"units": "degrees_east"})})
    for method in ("nearest_neighbor", "bilinear"):
        out = ds.pyku.project("EUR-11", method=method)
        assert np.isfinite(out.t2m.values).all(), method
    err = np.abs(out.t2m.values - field(out.lat.values, out.lon.values)[0])  # bilinear, 1° source
    assert err.max() < 0.05


def test_hyr_lcc_5_grid_shape_and_edges():
    grid = pyku.get_grid("HYR-LCC-5")
    assert grid.shape == (220, 240)
    # Outer edges (3500000, 2100000)-(4700000, 3200000): centres half a cell inside.
    assert grid.x[[0, -1]].tolist() == [3502500.0, 4697500.0]
    assert grid.y[[0, -1]].tolist() == [3197500.0, 2102500.0]
    assert (grid.x[0] - 2500, grid.y[-1] - 2500, grid.x[-1] + 2500, grid.y[0] + 2500) == (
        3500000.0, 2100000.0, 4700000.0, 3200000.0)
    lcc = "+proj=lcc +lat_0=52 +lon_0=10 +lat_1=35 +lat_2=65 +x_0=4000000 +y_0=2800000 +ellps=GRS80"
    assert grid.pyproj_crs.equals(pyproj.CRS(lcc))
    out = rotated_source(coarsen=8, days=1).pyku.project("HYR-LCC-5")
    assert dict(out.T_2M.sizes) == {"time": 1, "y": 220, "x": 240}
    assert out.crs.attrs["grid_mapping_name"] == "lambert_conformal_conic"


def decimal_exact(values, decimals):
    """Each value is the double nearest to its decimal rounding."""
    return all(float(f"{v:.{decimals}f}") == v for v in values)


def test_eur44_follows_the_official_cordex_table():
    # WCRP-CORDEX domain-tables, CORDEX-CMIP5_rotated_grids.csv:
    # EUR-44,106,103,-28.21,17.99,-23.21,21.67,0.44,0.44,-162.0,39.25
    grid = pyku.get_grid("EUR-44")
    assert grid.shape == (103, 106) and grid.dims == ("rlat", "rlon")
    assert grid.x[[0, -1]].tolist() == [-28.21, 17.99]
    assert grid.y[[0, -1]].tolist() == [-23.21, 21.67]
    assert decimal_exact(grid.x, 2) and decimal_exact(grid.y, 2)
    np.testing.assert_allclose(np.diff(grid.x), 0.44, atol=1e-12)
    cf = grid.to_dataset().rotated_pole.attrs
    assert (cf["grid_north_pole_latitude"], cf["grid_north_pole_longitude"]) == (39.25, -162.0)


def test_eur11_centres_are_exact_decimals():
    grid = pyku.get_grid("EUR-11")
    assert grid.x[[0, -1]].tolist() == [-28.375, 18.155]
    assert grid.y[[0, -1]].tolist() == [-23.375, 21.835]
    assert decimal_exact(grid.x, 3) and decimal_exact(grid.y, 3)  # as real EUR-11 files store them
    assert -24.635 in grid.x  # -28.375 + 34 * 0.11 in floating point is -24.634999999999998


@pytest.mark.parametrize("how_bounds_are_coords", ["decode_coords_all", "set_coords"])
def test_project_keeps_non_spatial_coordinates(tmp_path, how_bounds_are_coords):
    path = tmp_path / "tas.nc"
    src = resources.sample_dataset("tas", days=3, coarsen=8)
    src.coords["height"] = ((), 2.0, {"standard_name": "height", "units": "m"})
    src.to_netcdf(path)
    if how_bounds_are_coords == "decode_coords_all":  # also makes rotated_pole a coordinate
        ds = xr.open_dataset(path, decode_coords="all")
    else:
        ds = xr.open_dataset(path).set_coords("time_bnds")
    assert "time_bnds" in ds.coords

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no time bounds" warning
        out = ds.pyku.project("HYR-LAEA-5")
        assert "time_bnds" in out.coords and out.height.item() == 2.0
        assert "rotated_pole" not in out.variables  # the old grid mapping is gone
        out = out.pyku.set_time_labels_from_time_bounds(how="lower")
        out = out.pyku.to_cmor_varnames().pyku.to_cmor_units()
    np.testing.assert_array_equal(out.time.values, src.time_bnds.values[:, 0])
    assert out.time.values[0] == np.datetime64("1980-01-01T00:00")
    assert out.tas.attrs["grid_mapping"] == "crs" and set(out.data_vars) == {"tas", "crs"}
    np.testing.assert_array_equal(out.time_bnds.values, src.time_bnds.values)


def test_project_to_rotated_target_replaces_the_source_grid_mapping():
    ds = rotated_source(coarsen=8, days=1)
    ds.rotated_pole.attrs["note"] = "source"
    out = ds.pyku.project("EUR-44")
    assert "note" not in out.rotated_pole.attrs and out.rotated_pole.dtype == np.int32
    assert list(out.data_vars) == ["T_2M", "time_bnds", "rotated_pole"]
