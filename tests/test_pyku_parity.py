"""Code written for DWD's pyku 1.1.x runs unchanged: its keyword names, its 40 areas.

The areas are checked against cell centres computed here, independently of
pyku/etc/areas.toml, from the parameters pyku publishes for them (PROJ
string, shape (height, width) and the outer area extent, as in pyresample's
area files): centre (j, i) is at x_ll + (i + 1/2) dx, y_ur - (j + 1/2) dy.
"""

import types

import numpy as np
import pyproj
import pytest
import xarray as xr

import pyku
from pyku import geo, regrid, resources

# name, PROJ string, (height, width), (x_ll, y_ll, x_ur, y_ur), units of the extent
PUBLISHED_AREAS = [
    ("EUR-44", "+proj=ob_tran +o_proj=longlat +o_lat_p=39.25 +o_lon_p=0 +lon_0=18 +datum=WGS84 +no_defs",
     (103, 106), (-28.43, -23.43, 18.21, 21.89), "deg"),
    ("EUR-11", "+proj=ob_tran +o_proj=longlat +o_lon_p=0 +o_lat_p=39.25 +lon_0=18 +datum=WGS84 +no_defs",
     (412, 424), (-28.43, -23.43, 18.21, 21.89), "deg"),
    ("EUR-6", "+proj=ob_tran +o_proj=longlat +o_lon_p=0 +o_lat_p=39.25 +lon_0=18 +datum=WGS84 +no_defs",
     (824, 848), (-28.43, -23.43, 18.21, 21.89), "deg"),
    ("GER-0275", "+proj=ob_tran +o_proj=longlat +o_lon_p=0 +o_lat_p=39.25 +lon_0=18 +datum=WGS84 +no_defs",
     (423, 415), (-10.307499809265137, -4.180000228881836, 1.104999942779541, 7.45249979019165), "deg"),
    ("EPISODES", "+proj=longlat +datum=WGS84 +no_defs",
     (55, 60), (3.35, 45.2, 21.35, 56.2), "deg"),
    ("radolan_wx", "+proj=eqc +lat_ts=60.0 +lat_0=60.0 +lon_0=10.0 +a=6370040.0 +b=6370040.0",
     (1054, 863), (-415472.2594, -1526960.1063, 447536.2751, -473205.0109), "m"),
    ("DWD_RADOLAN_1100x900", "+proj=stere +lat_0=90 +lat_ts=60 +lon_0=10 +x_0=0 +y_0=0 +R=6370040 +no_defs",
     (1100, 900), (-443.4648, -4758.6419, 456.5379, -3658.6415), "km"),
    ("DWD_RADOLAN_900x900", "+proj=stere +lat_0=90 +lat_ts=60 +lon_0=10 +x_0=0 +y_0=0 +R=6370040 +no_defs",
     (900, 900), (-523.4643, -4658.6421, 376.5413, -3758.6499), "km"),
    ("HOSTRADA-1", "+proj=lcc +lat_0=52 +lon_0=10 +lat_1=35 +lat_2=65 +x_0=4000000 +y_0=2800000 +ellps=GRS80 +no_defs",
     (938, 720), (3670000.0, 3180000.0, 4390000.0, 2242000.0), "m"),
    ("linet_eqc", "+proj=eqc +lat_ts=50.0 +lon_0=10.0 +a=6378137.0 +b=6356752.3142 +h=35785863.0",
     (1114, 956), (-1431096.0, 3896182.0, 1431096.0, 7235767.0), "m"),
    ("euradcom_ps", "+proj=stere +lat_ts=60.0 +lon_0=10.0 +lat_0=90.0 +a=6370040.0 +b=6370040.0",
     (2176, 2444), (-1753001.0, -5741003.0, 690999.0, -3565003.0), "m"),
    ("euradcom_eqc", "+proj=eqc +lat_ts=46.21872765223188 +lon_0=2.392516489515395 +a=6378137.0 +b=6356752.3142 +h=35785863.0",
     (728, 888), (-1329274.0, 4053488.0, 1329274.0, 6236603.0), "m"),
    ("world_360x180", "+proj=eqc +lon_0=0.0 +a=6378137.0 +b=6356752.3142",
     (180, 360), (-20037508.34, -10018754.17, 20037508.34, 10018754.17), "m"),
    ("world_540x270", "+proj=eqc +lon_0=0.0 +a=6378137.0 +b=6356752.3142",
     (270, 540), (-20037508.34, -10018754.17, 20037508.34, 10018754.17), "m"),
    ("world_7200x3600", "+proj=eqc +lon_0=0.0 +a=6378137.0 +b=6356752.3142",
     (3600, 7200), (-20037508.34, -10018754.17, 20037508.34, 10018754.17), "m"),
    ("world_3600x1800", "+proj=eqc +lon_0=0.0 +a=6378137.0 +b=6356752.3142",
     (1800, 3600), (-20037508.34, -10018754.17, 20037508.34, 10018754.17), "m"),
    ("world_43200x21600", "+proj=eqc +lat_0=-0.0 +lon_0=-0.0 +a=6378137.0 +b=6356752.3",
     (21600, 43200), (-20037508.3428, -10018754.1714, 20037508.3428, 10018754.1714), "m"),
    ("seamless_europe", "+proj=robin +lon_0=10 +ellps=WGS84",
     (153, 219), (-2682559.4086, 3636429.5779, 2782472.8669, 7451510.4354), "m"),
    ("seamless_world", "+proj=robin +lon_0=0 +ellps=WGS84",
     (173, 345), (-17250504.1385, -8625154.6651, 17250504.1385, 8625154.6651), "m"),
    ("seamless_germany", "+proj=stere +lon_0=10 +lat_0=50 +lat_ts=50 +ellps=WGS84",
     (179, 139), (-342308.6465, -323600.6893, 352501.4524, 570229.5211), "m"),
    ("HYR-LCC-1", "+proj=lcc +lat_0=52 +lon_0=10 +lat_1=35 +lat_2=65 +x_0=4000000 +y_0=2800000 +ellps=GRS80 +no_defs",
     (1100, 1200), (3500000.0, 2100000.0, 4700000.0, 3200000.0), "m"),
    ("HYR-LCC-3", "+proj=lcc +lat_0=52 +lon_0=10 +lat_1=35 +lat_2=65 +x_0=4000000 +y_0=2800000 +ellps=GRS80 +no_defs",
     (367, 400), (3500000.0, 2100000.0, 4700000.0, 3200000.0), "m"),
    ("HYR-LCC-5", "+proj=lcc +lat_0=52 +lon_0=10 +lat_1=35 +lat_2=65 +x_0=4000000 +y_0=2800000 +ellps=GRS80 +no_defs",
     (220, 240), (3500000.0, 2100000.0, 4700000.0, 3200000.0), "m"),
    ("HYR-LCC-125", "+proj=lcc +lat_0=52 +lon_0=10 +lat_1=35 +lat_2=65 +x_0=4000000 +y_0=2800000 +ellps=GRS80 +no_defs",
     (88, 96), (3500000.0, 2100000.0, 4700000.0, 3200000.0), "m"),
    ("HYR-LCC-50", "+proj=lcc +lat_0=52 +lon_0=10 +lat_1=35 +lat_2=65 +x_0=4000000 +y_0=2800000 +ellps=GRS80 +no_defs",
     (22, 24), (3500000.0, 2100000.0, 4700000.0, 3200000.0), "m"),
    ("HYR-LAEA-1", "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +towgs84=0.0,0.0,0.0,0.0,0.0,0.0,0.0 +no_defs",
     (1100, 1290), (3806000.0, 2489000.0, 5096000.0, 3589000.0), "m"),
    ("HYR-LAEA-2", "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +towgs84=0.0,0.0,0.0,0.0,0.0,0.0,0.0 +no_defs",
     (550, 645), (3806000.0, 2489000.0, 5096000.0, 3589000.0), "m"),
    ("HYR-LAEA-3", "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +towgs84=0.0,0.0,0.0,0.0,0.0,0.0,0.0 +no_defs",
     (367, 430), (3806000.0, 2489000.0, 5096000.0, 3589000.0), "m"),
    ("HYR-LAEA-5", "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +towgs84=0.0,0.0,0.0,0.0,0.0,0.0,0.0 +no_defs",
     (220, 258), (3806000.0, 2489000.0, 5096000.0, 3589000.0), "m"),
    ("HYR-LAEA-12.5", "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +towgs84=0.0,0.0,0.0,0.0,0.0,0.0,0.0 +no_defs",
     (88, 103), (3806000.0, 2489000.0, 5096000.0, 3589000.0), "m"),
    ("HYR-LAEA-50", "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +towgs84=0.0,0.0,0.0,0.0,0.0,0.0,0.0 +no_defs",
     (22, 26), (3806000.0, 2489000.0, 5096000.0, 3589000.0), "m"),
    ("HYR-LAEA-100", "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +towgs84=0.0,0.0,0.0,0.0,0.0,0.0,0.0 +no_defs",
     (11, 13), (3806000.0, 2489000.0, 5096000.0, 3589000.0), "m"),
    ("HYR-GER-LAEA-1", "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +towgs84=0.0,0.0,0.0,0.0,0.0,0.0,0.0 +no_defs",
     (890, 665), (4021000.0, 2674000.0, 4686000.0, 3564000.0), "m"),
    ("HYR-GER-LAEA-2", "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +towgs84=0.0,0.0,0.0,0.0,0.0,0.0,0.0 +no_defs",
     (445, 332), (4021000.0, 2674000.0, 4686000.0, 3564000.0), "m"),
    ("HYR-GER-LAEA-3", "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +towgs84=0.0,0.0,0.0,0.0,0.0,0.0,0.0 +no_defs",
     (297, 222), (4021000.0, 2674000.0, 4686000.0, 3564000.0), "m"),
    ("HYR-GER-LAEA-5", "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +towgs84=0.0,0.0,0.0,0.0,0.0,0.0,0.0 +no_defs",
     (178, 133), (4021000.0, 2674000.0, 4686000.0, 3564000.0), "m"),
    ("HYR-GER-LAEA-12.5", "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +towgs84=0.0,0.0,0.0,0.0,0.0,0.0,0.0 +no_defs",
     (71, 53), (4021000.0, 2674000.0, 4686000.0, 3564000.0), "m"),
    ("HYR-GER-LAEA-50", "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +towgs84=0.0,0.0,0.0,0.0,0.0,0.0,0.0 +no_defs",
     (18, 13), (4021000.0, 2674000.0, 4686000.0, 3564000.0), "m"),
    ("HYR-GER-LAEA-100", "+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 +towgs84=0.0,0.0,0.0,0.0,0.0,0.0,0.0 +no_defs",
     (9, 7), (4021000.0, 2674000.0, 4686000.0, 3564000.0), "m"),
    ("cerra", "+proj=lcc +lat_0=50 +lon_0=8 +lat_1=50 +lat_2=50 +x_0=0 +y_0=0 +R=6371229 +no_defs",
     (1069, 1069), (-2937000.0451, -2937000.0095, 2936999.9549, 2936999.9905), "m"),
]


def published_centres(proj, shape, extent, unit):
    """1-D x and y cell centres (metres or degrees), rows from the upper edge."""
    height, width = shape
    scale = 1000.0 if unit == "km" else 1.0
    x_ll, y_ll, x_ur, y_ur = (v * scale for v in extent)
    dx, dy = (x_ur - x_ll) / width, (y_ur - y_ll) / height
    return x_ll + (np.arange(width) + 0.5) * dx, y_ur - (np.arange(height) + 0.5) * dy


def test_the_catalogue_is_pyku_s_forty_areas():
    assert len(PUBLISHED_AREAS) == 40
    assert sorted(geo.list_standard_areas()) == sorted(a[0] for a in PUBLISHED_AREAS)


@pytest.mark.parametrize("name, proj, shape, extent, unit", PUBLISHED_AREAS, ids=[a[0] for a in PUBLISHED_AREAS])
def test_area_cell_centres_equal_pyku_s(name, proj, shape, extent, unit):
    area = geo.load_area_def(name)
    grid = area.grid
    x, y = published_centres(proj, shape, extent, unit)
    angular = unit == "deg"
    assert area.shape == shape and (area.height, area.width) == shape
    tol = 1e-9 if angular else 1e-6
    np.testing.assert_allclose(grid.x, x, rtol=0, atol=tol)
    # Angular areas are stored south to north (as CORDEX files are); pyku's rows run north to south.
    np.testing.assert_allclose(grid.y[::-1] if angular else grid.y, y, rtol=0, atol=tol)
    # Geographic position of the centres: sampled rows/columns for the 0.9-billion-cell world grid.
    rows = np.unique(np.linspace(0, shape[0] - 1, min(shape[0], 60)).astype(int))
    cols = np.unique(np.linspace(0, shape[1] - 1, min(shape[1], 60)).astype(int))
    to_geo = pyproj.Transformer.from_crs(pyproj.CRS(proj), "EPSG:4326", always_xy=True)
    lon_ref, lat_ref = to_geo.transform(*np.meshgrid(x[cols], y[rows]))
    ours = pyproj.Transformer.from_crs(grid.pyproj_crs, "EPSG:4326", always_xy=True)
    yrows = (shape[0] - 1 - rows) if angular else rows
    lon, lat = ours.transform(*np.meshgrid(grid.x[cols], grid.y[yrows]))
    finite = np.isfinite(lon_ref) & np.isfinite(lat_ref)
    assert finite.mean() > 0.5
    np.testing.assert_allclose(lat[finite], lat_ref[finite], rtol=0, atol=1e-9)
    dlon = (lon[finite] - lon_ref[finite] + 180) % 360 - 180
    assert np.abs(dlon).max() < 1e-9
    if shape[0] * shape[1] <= 2_000_000:  # the 2-D lat/lon project() writes, for the others
        _glon, glat = grid.lonlat()
        np.testing.assert_allclose(glat[yrows][:, cols][finite], lat_ref[finite], rtol=0, atol=1e-9)
        pyku.grids._lonlat_cached.cache_clear()  # up to 1.4 million cells each: do not hoard them


# --- project(): pyku's signature, keyword by keyword ------------------------------------

def source(days=2, coarsen=8):
    """CCLM-like sample (rotated pole, 0.22 degrees with coarsen=8) with a smooth field."""
    ds = resources.sample_dataset("tas", days=days, coarsen=coarsen)
    values = np.broadcast_to(np.sin(np.radians(3 * ds.lat.values)) + np.cos(np.radians(4 * ds.lon.values)),
                             ds.T_2M.shape).astype("float64")
    return ds.assign(T_2M=ds.T_2M.copy(data=values))


def test_project_with_pyku_keywords_and_methods():
    ds = source()
    common = {"area_def": "HYR-LAEA-12.5", "roi": 1e6, "use_dask": True, "keep_mask": False}
    outs = {
        "nearest_neighbor": ds.pyku.project(method="nearest_neighbor", **common),
        "bilinear": ds.pyku.project(method="bilinear", neighbours=32, **common),
        "idw": ds.pyku.project(method="idw", power_parameter=2.5, neighbours=8, **common),
        "conservative": ds.pyku.project(method="conservative", **common),
    }
    truth = np.sin(np.radians(3 * outs["idw"].lat.values)) + np.cos(np.radians(4 * outs["idw"].lon.values))
    domain = np.isfinite(ds.pyku.project("HYR-LAEA-12.5", keep_mask=True).T_2M.isel(time=0).values)
    assert 0.6 < domain.mean() < 0.9
    for method, out in outs.items():
        assert out.T_2M.shape == (2, 88, 103), method
        values = out.T_2M.isel(time=0).values
        inside = np.isfinite(values) & domain
        assert inside.sum() > 0.95 * domain.sum(), method
        # 0.22-degree source: inside its domain every method is within a few hundredths.
        assert np.abs(values[inside] - truth[inside]).max() < 0.05, method
    # pyku's default roi fills beyond the source domain for nearest and idw, not for the others.
    assert np.isfinite(outs["nearest_neighbor"].T_2M.values).all()
    assert np.isfinite(outs["idw"].T_2M.values).all()
    assert np.isnan(outs["bilinear"].T_2M.values).any() and np.isnan(outs["conservative"].T_2M.values).any()
    # pyku's explicit library names reach the same implementations.
    again = ds.pyku.project("HYR-LAEA-12.5", method="pyresample_bilinear")
    np.testing.assert_array_equal(again.T_2M.values, outs["bilinear"].T_2M.values)
    # Positional use as before, and the module function under pyku's module name.
    np.testing.assert_array_equal(geo.project(ds, "HYR-LAEA-12.5").T_2M.values,
                                  outs["nearest_neighbor"].T_2M.values)


def test_roi_keep_mask_and_use_dask():
    ds = source()
    wide = ds.pyku.project("HYR-LAEA-12.5")
    narrow = ds.pyku.project("HYR-LAEA-12.5", roi=30_000)
    masked = ds.pyku.project("HYR-LAEA-12.5", keep_mask=True)
    n_wide, n_narrow, n_masked = (np.isfinite(o.T_2M.values[0]).sum() for o in (wide, narrow, masked))
    assert n_wide == 88 * 103 and n_masked < n_narrow < n_wide
    same = np.isfinite(masked.T_2M.values)
    np.testing.assert_array_equal(masked.T_2M.values[same], wide.T_2M.values[same])
    lazy = ds.chunk({"time": 1}).pyku.project("HYR-LAEA-12.5", use_dask=True)
    eager = ds.chunk({"time": 1}).pyku.project("HYR-LAEA-12.5", use_dask=False)
    assert lazy.T_2M.chunks is not None and eager.T_2M.chunks is None
    np.testing.assert_array_equal(lazy.T_2M.values, eager.T_2M.values)


def test_idw_power_and_neighbours_mean_what_they_say():
    ds = source(days=1)
    nearest = ds.pyku.project("HYR-LAEA-12.5").T_2M.values
    one = ds.pyku.project("HYR-LAEA-12.5", method="idw", power_parameter=2, neighbours=1).T_2M.values
    np.testing.assert_array_equal(one, nearest)
    flat = ds.pyku.project("HYR-LAEA-12.5", method="idw", power_parameter=0, neighbours=4).T_2M.values
    steep = ds.pyku.project("HYR-LAEA-12.5", method="idw", power_parameter=8, neighbours=4).T_2M.values
    # A high power approaches the nearest value, power 0 is the plain mean of the 4.
    assert np.nanmean(np.abs(steep - nearest)) < 0.5 * np.nanmean(np.abs(flat - nearest))


def test_every_weighted_method_builds_its_weights_once():
    ds = source(days=1)
    other = ds.assign(T_2M=ds.T_2M + 1)
    regrid.clear_cache()
    for method, kwargs in [("bilinear", {}), ("idw", {"power_parameter": 2}), ("conservative", {})]:
        a = ds.pyku.project("HYR-LAEA-50", method=method, **kwargs).T_2M.values
        b = other.pyku.project("HYR-LAEA-50", method=method, **kwargs).T_2M.values
        np.testing.assert_allclose(b, a + 1, rtol=1e-12, atol=1e-12)
    info = regrid.cache_info()
    assert info["builds"] == 3 and info["hits"] == 3


def test_area_def_as_name_object_dict_grid_and_area_file(tmp_path):
    ds = source(days=1)
    reference = ds.pyku.project("HYR-LAEA-50").T_2M.values
    area = geo.load_area_def("HYR-LAEA-50")
    duck = types.SimpleNamespace(crs=area.crs, width=26, height=22, area_extent=area.area_extent,
                                 area_id="mine")
    as_dict = {"crs": area.proj_str, "shape": area.shape, "extent": area.area_extent}
    area_file = tmp_path / "areas.yaml"
    area_file.write_text(
        "my-laea-50:\n  description: HYR-LAEA-50 again\n  projection:\n    proj: laea\n"
        "    lat_0: 52\n    lon_0: 10\n    x_0: 4321000\n    y_0: 3210000\n    ellps: GRS80\n"
        "  shape:\n    height: 22\n    width: 26\n  area_extent:\n"
        "    lower_left_xy: [3806.0, 2489.0]\n    upper_right_xy: [5096.0, 3589.0]\n    units: km\n")
    for target in (area, duck, as_dict, area.grid):
        np.testing.assert_array_equal(ds.pyku.project(area_def=target).T_2M.values, reference)
    from_file = ds.pyku.project(area_def="my-laea-50", area_file=str(area_file))
    np.testing.assert_array_equal(from_file.T_2M.values, reference)
    import pyresample  # the test extra: pyku users pass its area definitions

    theirs = pyresample.AreaDefinition("HYR-LAEA-50", "", "", area.proj_str, 26, 22, area.area_extent)
    np.testing.assert_array_equal(ds.pyku.project(area_def=theirs).T_2M.values, reference)


def test_load_area_def_has_the_attributes_users_touch():
    area = geo.load_area_def("HYR-LAEA-5")
    assert (area.shape, area.width, area.height) == ((220, 258), 258, 220)
    assert area.area_extent == (3806000.0, 2489000.0, 5096000.0, 3589000.0)
    assert area.crs.to_epsg() is None and "+proj=laea" in area.proj_str
    lons, lats = area.get_lonlats()
    assert lons.shape == (220, 258) and 45 < lats.min() < lats.max() < 56
    assert area.area_id == "HYR-LAEA-5" and area.pixel_size_x == 5000.0
    with pytest.raises(pyku.GridError, match="HYR-LAEA-5"):
        geo.load_area_def("HYR-LAEA-6")


def test_get_area_def_recognises_pyku_s_areas():
    for name in ("HYR-LAEA-5", "HYR-LCC-5", "EUR-11", "cerra"):
        out = source(days=1, coarsen=16).pyku.project(name)
        assert geo.get_area_def(out).area_id == name
        assert out.pyku.get_area_def() == geo.load_area_def(name)
    off_grid = source(days=1, coarsen=16).pyku.project(
        {"crs": "EPSG:3035", "shape": (10, 10), "extent": (4000000, 3000000, 4100000, 3100000)})
    assert geo.get_area_def(off_grid).area_id is None


def test_get_lonlats_and_wrap_longitudes():
    ds = source(days=1, coarsen=16)
    lons, lats = geo.get_lonlats(ds)
    np.testing.assert_array_equal(lats, ds.lat.values)
    np.testing.assert_array_equal(lons, ds.lon.values)
    no_latlon = ds.drop_vars(["lat", "lon"])  # computed from the rotated pole instead
    np.testing.assert_allclose(no_latlon.pyku.get_lonlats()[1], ds.lat.values, rtol=0, atol=1e-9)
    assert geo.get_lonlats(ds, dtype="xarray.Dataset").lat.dims == ("rlat", "rlon")
    era5 = resources.generate_fake_cmip6_data("tas", nlat=18, nlon=36)  # longitudes 5..355
    wrapped = era5.pyku.wrap_longitudes()
    assert wrapped.lon.values[0] == -175.0 and np.all(np.diff(wrapped.lon.values) > 0)
    np.testing.assert_array_equal(wrapped.tas.sel(lon=-175.0).values, era5.tas.sel(lon=185.0).values)
    with pytest.raises(pyku.GridError, match="1-D longitude"):
        ds.pyku.wrap_longitudes()


def test_metadata_after_project_names_the_target():
    ds = source(days=1, coarsen=16)
    assert ds.attrs["CORDEX_domain"] == "GER-0275"
    expected = {"EUR-11": "EUR-11", "EUR-44": "EUR-44", "HYR-LCC-5": "HYR-5", "HYR-LAEA-5": "undefined"}
    for name, domain in expected.items():
        assert ds.pyku.project(name).attrs["CORDEX_domain"] == domain
    crs = ds.pyku.project("HYR-LAEA-5").crs.attrs
    assert crs["epsg_code"] == "EPSG:3035" and crs["proj4"].startswith("+proj=laea")
    assert crs["grid_mapping_name"] == "lambert_azimuthal_equal_area"
    assert ds.pyku.project("HYR-LCC-5").crs.attrs["epsg_code"] == "EPSG:3034"


def test_bilinear_identity_regrid_of_a_gappy_field_loses_no_valid_cell():
    ds = source(days=1)
    values = ds.T_2M.values.copy()
    values[0, 10, 10] = np.nan
    values[0, 20, 5:8] = np.nan
    ds = ds.assign(T_2M=ds.T_2M.copy(data=values))
    for method in ("bilinear", "conservative"):
        out = ds.pyku.project(resources.sample_grid(8), method=method).T_2M.values
        np.testing.assert_array_equal(np.isnan(out), np.isnan(values))
        np.testing.assert_allclose(out, values, rtol=0, atol=1e-12, equal_nan=True)


def test_conservative_preserves_the_area_weighted_mean():
    """Regular 1 degree -> regular 2.5 degrees over the same region: the area mean is kept."""
    src = resources.generate_fake_cmip6_data("pr", nlat=180, nlon=360, freq="MS")
    src = src.sel(lat=slice(30, 70), lon=slice(340, 360)).isel(time=[0, 6])
    target = {"crs": "EPSG:4326", "shape": (16, 8), "extent": (340, 30, 360, 70)}
    out = src.pyku.project(target, method="conservative")

    def area_mean(values, lat, dlat, dlon):
        weights = (np.sin(np.radians(lat + dlat / 2)) - np.sin(np.radians(lat - dlat / 2))) * np.radians(dlon)
        return (values * weights[:, None]).sum(axis=(-2, -1)) / (weights.sum() * values.shape[-1])

    before = area_mean(src.pr.values.astype("f8"), src.lat.values, 1.0, 1.0)
    after = area_mean(out.pr.values.astype("f8"), out.lat.values, 2.5, 2.5)
    assert np.isfinite(out.pr.values).all()
    np.testing.assert_allclose(after, before, rtol=1e-6)
    assert out.pr.std() < src.pr.std()  # it averaged, it did not sample


# --- bad input: one line, a PykuError naming what is accepted ---------------------------

@pytest.mark.parametrize("kwargs, error, words", [
    ({"area_def": "HYR-LAEA-6"}, pyku.GridError, "HYR-LAEA-5"),
    ({"area_def": "HYR-5"}, pyku.GridError, "deprecated and has been removed; use 'HYR-LCC-5'"),
    ({"area_def": 42}, pyku.GridError, "not a grid"),
    ({"area_def": None}, pyku.GridError, "area_def"),
    ({"area_def": "HYR-LAEA-5", "method": "cubic"}, pyku.OptionError, "conservative"),
    ({"area_def": "HYR-LAEA-5", "method": "idw"}, pyku.OptionError, "power_parameter"),
    ({"area_def": "HYR-LAEA-5", "roi": -1}, pyku.OptionError, "roi"),
    ({"area_def": "HYR-LAEA-5", "neighbours": 4}, pyku.OptionError, "neighbours"),
    ({"area_def": "nope", "area_file": "/nonexistent/areas.yaml"}, pyku.GridError, "areas.yaml"),
])
def test_bad_arguments_raise_one_line_pyku_errors(kwargs, error, words):
    with pytest.raises(error) as info:
        source(days=1, coarsen=16).pyku.project(**kwargs)
    assert isinstance(info.value, pyku.PykuError)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_dataset_without_spatial_coordinates_is_refused():
    ds = xr.Dataset({"tas": (("a", "b"), np.zeros((3, 3)))})
    with pytest.raises(pyku.GridError, match="latitude/longitude"):
        ds.pyku.project("HYR-LAEA-5")


# --- time labels, CMOR names/units/attributes, metadata, checks, masks, samples ---------

def test_time_labels_refuse_time_point_variables_as_pyku_does():
    ds = resources.sample_dataset("tas", days=3, coarsen=16)
    for how, hour in (("lower", 0), ("middle", 12), ("upper", 0)):
        out = ds.pyku.set_time_labels_from_time_bounds(how=how)
        assert out.time.dt.hour.values.tolist() == [hour] * 3
    ds.T_2M.attrs["cell_methods"] = "time: point"
    with pytest.raises(pyku.TimeBoundsError, match="time: point") as info:
        ds.pyku.set_time_labels_from_time_bounds(how="lower")
    assert "T_2M" in str(info.value) and "\n" not in str(info.value)


def test_cmor_names_units_and_long_name_of_precipitation():
    ds = resources.sample_dataset("pr", days=3, coarsen=16)
    assert ds.TOT_PREC.attrs["long_name"] == "total precipitation amount"
    out = ds.pyku.to_cmor_varnames().pyku.to_cmor_units()
    assert out.pr.attrs["units"] == "kg m-2 s-1"
    assert out.pr.attrs["long_name"] == "Precipitation"  # a flux now, no longer an amount
    assert out.pr.attrs["standard_name"] == "precipitation_flux"
    np.testing.assert_allclose(out.pr.values, ds.TOT_PREC.values / 86400, rtol=1e-6)


@pytest.mark.parametrize("alias, cmor", [("tasAdjust", "tas"), ("prAdjust", "pr"), ("TD_2M", "tdps"),
                                         ("tdew", "tdps"), ("precipitation_flux", "pr"),
                                         ("sfcWindAdjust", "sfcWind"), ("d2m", "tdps")])
def test_cmor_table_knows_pyku_s_aliases(alias, cmor):
    ds = xr.Dataset({alias: ("t", [1.0])})
    assert list(ds.pyku.to_cmor_varnames()) == [cmor]
    assert pyku.drs.get_cmor_varname(ds[alias]) == cmor
    assert alias in pyku.drs.get_cmor_varname_aliases(cmor)


def test_to_cmor_attrs_and_cmorize():
    ds = resources.sample_dataset("tas", days=3, coarsen=16)
    ds.T_2M.attrs["long_name"] = "my temperature"
    ds = ds.pyku.to_cmor_varnames().pyku.to_cmor_units()
    attrs = ds.pyku.to_cmor_attrs()
    assert attrs.tas.attrs["long_name"] == "Near-Surface Air Temperature"
    assert attrs.attrs["frequency"] == "day" and attrs.rlat.attrs["standard_name"] == "grid_latitude"
    raw = resources.sample_dataset("pr", days=3, coarsen=16)
    out = pyku.drs.cmorize(raw, global_metadata={"institute_id": "DWD"})
    assert next(iter(out.data_vars)) == "pr" and out.attrs["institute_id"] == "DWD"
    assert out.time.dt.hour.values.tolist() == [12, 12, 12]  # CMOR: middle of the bounds
    assert out.pr.attrs["units"] == "kg m-2 s-1"
    assert raw.pyku.cmorize().pr.attrs == out.pr.attrs
    with pytest.raises(pyku.PykuError, match="exactly one"):
        pyku.drs.cmorize(raw.assign(other=raw.TOT_PREC * 2))


def test_meta_getters_and_frequency():
    ds = resources.sample_dataset("tas", days=5, coarsen=16)
    meta = pyku.meta
    assert meta.get_frequency(ds) == "D" == ds.pyku.get_frequency(dtype="freqstr")
    assert meta.get_frequency(ds, dtype="Timedelta") == np.timedelta64(1, "D")
    assert meta.get_frequency(ds.isel(time=[0]), dtype="DateOffset").freqstr == "D"
    assert meta.get_geodata_varnames(ds) == ["T_2M"] == ds.pyku.get_geodata_varnames()
    assert meta.get_geographic_latlon_varnames(ds) == ("lat", "lon")
    assert meta.get_projection_yx_varnames(ds) == ("rlat", "rlon")
    assert meta.get_crs_varname(ds) == "rotated_pole" and meta.get_time_bounds_varname(ds) == "time_bnds"
    monthly = resources.generate_fake_cmip6_data("tas", nlat=18, nlon=36, freq="MS")
    assert meta.get_frequency(monthly) == "MS"
    with pytest.raises(pyku.PykuError, match="Timedelta|fixed length"):
        meta.get_frequency(monthly, dtype="Timedelta")
    with pytest.raises(pyku.PykuError, match="disagree"):
        meta.get_frequency(ds.assign_attrs(frequency="mon"))


def test_check_metadata_table():
    raw = resources.sample_dataset("pr", days=40, coarsen=16)
    table = pyku.check.check_metadata(raw, standard="cordex", completeness_period="1MS")
    assert list(table.columns) == ["key", "value", "issue", "description"]
    failed = set(table.loc[~table.value.astype(bool), "key"])
    assert failed == {"TOT_PREC_is_cmor_varname", "complete_1980-02", "global_attribute_institute_id"}
    clean = raw.pyku.cmorize(global_metadata={"institute_id": "DWD"}).isel(time=slice(0, 31))
    assert clean.pyku.check_metadata(standard="cordex", completeness_period="1MS").value.all()


def test_apply_mask_with_polygons_geojson_and_raster(tmp_path):
    import json

    shapely = pytest.importorskip("shapely")
    ds = resources.sample_dataset("tas", days=1, coarsen=8)
    box = shapely.box(8, 49, 12, 53)
    inside = ((ds.lon > 8) & (ds.lon < 12) & (ds.lat > 49) & (ds.lat < 53)).values
    out = pyku.mask.apply_mask(ds, box)
    np.testing.assert_array_equal(np.isfinite(out.T_2M.values[0]), inside)
    path = tmp_path / "box.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(box)}]}))
    np.testing.assert_array_equal(ds.pyku.apply_mask(str(path)).T_2M.values, out.T_2M.values)
    raster = ds.T_2M.isel(time=0).where(inside)
    np.testing.assert_array_equal(ds.pyku.apply_mask(raster, from_nans=True).T_2M.values, out.T_2M.values)
    np.testing.assert_array_equal(pyku.mask.apply_raster_mask(ds, raster.notnull()).T_2M.values,
                                  pyku.mask.apply_polygon_mask(ds, [box]).T_2M.values)
    with pytest.raises(pyku.PykuError, match="does not exist"):
        ds.pyku.apply_mask(str(tmp_path / "missing.geojson"))


def test_sample_generators_are_offline_and_pyku_shaped():
    cmip6 = resources.generate_fake_cmip6_data(variable="pr", ntime=1, nlat=90, nlon=180, freq="D", seed=42)
    assert cmip6.pr.shape == (365, 90, 180) and cmip6.attrs["frequency"] == "day"
    again = resources.generate_fake_cmip6_data(variable="pr", ntime=1, nlat=90, nlon=180, freq="D", seed=42)
    xr.testing.assert_identical(cmip6, again)
    assert cmip6.pyku.check_metadata().value.all()
    cordex = resources.generate_fake_cordex_data("tas", ntime=1, area="EUR-44", freq="MS")
    assert cordex.tas.shape == (12, 103, 106) and cordex.attrs["CORDEX_domain"] == "EUR-44"
    assert geo.get_area_def(cordex).area_id == "EUR-44"
    assert cordex.pyku.check_metadata(standard="cordex").value.all()


def test_conservative_overlaps_equal_shapely_intersections():
    shapely = pytest.importorskip("shapely")
    from pyku import conservative

    rng = np.random.default_rng(1)
    n = 5000
    base = rng.uniform(0, 10, (n, 1, 2))
    quad = np.array([[0, 0], [2, 0.3], [2.2, 2], [0.1, 1.8]])
    subject = base + quad * rng.uniform(0.2, 3, (n, 1, 1))
    clip = base + rng.uniform(-4, 4, (n, 1, 2)) + quad[::-1] * rng.uniform(0.2, 3, (n, 1, 1))  # clockwise
    ours = conservative._overlap_areas(subject, clip, block=700)
    theirs = shapely.area(shapely.intersection(shapely.polygons(subject), shapely.polygons(clip)))
    assert 0.2 < (theirs > 0).mean() < 0.8  # disjoint, partial and nested pairs all occur
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("source_area, target", [
    ("sample", "HYR-LAEA-5"), ("sample", "EUR-11"), ("HYR-LCC-5", "HYR-LAEA-5"),
    ("HYR-LAEA-5", "cerra"), ("global", "EUR-44"), ("global", "world_360x180"),
])
def test_nearest_without_a_tree_finds_what_the_tree_finds(source_area, target):
    """CRS sources skip the k-d tree (3 x 3 candidates in index space; the outer ring for
    points outside): the chosen source centre is at the same distance as the tree's."""
    if source_area == "sample":
        ds = resources.sample_dataset("tas", days=1, coarsen=2)
    elif source_area == "global":
        ds = resources.generate_fake_cmip6_data("tas", nlat=90, nlon=180)
    else:
        ds = pyku.get_grid(source_area).to_dataset()
        ds["t"] = (ds.crs.dims + ("y", "x"), np.zeros(pyku.get_grid(source_area).shape), {"grid_mapping": "crs"})
    src = geo.source_grid(ds)[0]
    tlon, tlat = pyku.get_grid(target).lonlat()
    index, dist = regrid._nearest_native(src, tlon, tlat)
    tree, usable, _ = regrid._source_tree(src)
    tree_dist, nearest = tree.query(regrid.unit_vectors(tlon.ravel(), tlat.ravel()), k=1)
    np.testing.assert_allclose(dist, tree_dist, rtol=0, atol=1e-12)  # ties may pick either cell
    assert np.mean(index == usable[nearest]) > 0.99
