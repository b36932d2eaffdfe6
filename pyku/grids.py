"""Target grids: a CRS plus regularly spaced cell centres.

The named grids (pyku's areas) are in :mod:`pyku.areas`.  A :class:`Grid` is a
CRS plus regularly spaced cell centres in that CRS.  It
knows its coordinates, its 2-D latitude/longitude and how to describe itself
as CF (coordinates plus a grid-mapping variable), which is all that
:func:`pyku.geo.project` needs from a target.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

import numpy as np
import pyproj
import xarray as xr

from pyku.errors import GridError

_AXIS_ATTRS = {
    "x": {"standard_name": "projection_x_coordinate", "long_name": "x coordinate of projection",
          "units": "m", "axis": "X"},
    "y": {"standard_name": "projection_y_coordinate", "long_name": "y coordinate of projection",
          "units": "m", "axis": "Y"},
    "rlon": {"standard_name": "grid_longitude", "long_name": "longitude in rotated pole grid",
             "units": "degrees", "axis": "X"},
    "rlat": {"standard_name": "grid_latitude", "long_name": "latitude in rotated pole grid",
             "units": "degrees", "axis": "Y"},
    "lon": {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east"},
    "lat": {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north"},
}


@dataclass(frozen=True)
class Grid:
    """A regular grid of cell centres in a CRS.

    Parameters
    ----------
    crs : str
        PROJ string, WKT or ``EPSG:nnnn`` (kept as a string so a Grid hashes
        and pickles cheaply).
    x0, dx, nx : float, float, int
        First cell centre, step and number of cells along x.
    y0, dy, ny : float, float, int
        The same along y; ``dy < 0`` orders rows north to south.
    dims : tuple of str
        Names of the output (y, x) dimensions, e.g. ``("rlat", "rlon")``.
    name : str, optional
        Catalogue name, for messages and attributes.
    description : str
        One line for catalogue listings.
    decimals : int, optional
        Round the cell centres to this many decimals.  Catalogue grids are
        defined by decimal numbers (CORDEX: rlon = -28.375 + i * 0.11), and
        ``x0 + i * dx`` in binary floating point drifts off them (e.g.
        -28.375 + 34 * 0.11 gives -24.634999999999998); rounding gives the double nearest to
        the decimal value, which is what real files store, so coordinates
        align exactly.  None (default for user grids): no rounding.
    """

    crs: str
    x0: float
    dx: float
    nx: int
    y0: float
    dy: float
    ny: int
    dims: tuple[str, str] = ("y", "x")
    name: str | None = None
    description: str = ""
    decimals: int | None = None

    cordex_domain: str | None = None
    epsg_code: str | None = None

    @classmethod
    def from_extent(cls, crs, shape, extent, name=None, dims=None, decimals=None, **metadata):
        """Grid from its outer edges, as pyresample's ``AreaDefinition`` places cells.

        Parameters
        ----------
        crs : str, dict or pyproj.CRS
            The CRS; a dict is read as CF grid-mapping attributes.
        shape : (int, int)
            Number of cells (ny, nx), i.e. (height, width).
        extent : (float, float, float, float)
            Outer edges (x_ll, y_ll, x_ur, y_ur) in CRS units.  Centres are
            ``x_ll + (i + 1/2) dx`` and, for projected CRSs, ``y_ur - (j + 1/2) dy``
            (rows from y_ur, as pyresample); angular CRSs (lat/lon, rotated
            pole) are stored south to north, as CF/CORDEX files are.
        decimals : int, optional
            See the class docstring.
        """
        crs_obj = _to_crs(crs)
        try:
            ny, nx = (int(n) for n in shape)
            xmin, ymin, xmax, ymax = (float(v) for v in extent)
        except (TypeError, ValueError):
            raise GridError(f"invalid grid {name or ''}: shape must be (height, width) and extent "
                            f"(x_ll, y_ll, x_ur, y_ur), got {shape!r} and {extent!r}") from None
        if nx < 1 or ny < 1 or xmax == xmin or ymax == ymin:
            raise GridError(f"invalid grid {name or ''}: shape {tuple(shape)} must be positive and "
                            f"extent {tuple(extent)} must have a width and a height")
        dx, dy = (xmax - xmin) / nx, (ymax - ymin) / ny
        if dims is None:
            dims = ("rlat", "rlon") if _is_rotated(crs_obj) else (
                ("lat", "lon") if crs_obj.is_geographic else ("y", "x"))
        if crs_obj.is_geographic and dy > 0:
            y0, step = ymin + dy / 2, dy
        else:
            y0, step = ymax - dy / 2, -dy
        text = crs if isinstance(crs, str) else crs_obj.to_wkt()
        return cls(crs=text, x0=xmin + dx / 2, dx=dx, nx=nx, y0=y0, dy=step, ny=ny,
                   dims=tuple(dims), name=name, decimals=decimals, **metadata)

    @property
    def shape(self):
        """(ny, nx)."""
        return (self.ny, self.nx)

    @property
    def width(self):
        """Number of columns (pyresample's name)."""
        return self.nx

    @property
    def height(self):
        """Number of rows (pyresample's name)."""
        return self.ny

    @property
    def area_extent(self):
        """Outer edges (x_ll, y_ll, x_ur, y_ur) in CRS units."""
        xs = (self.x0 - self.dx / 2, self.x0 + self.dx * (self.nx - 0.5))
        ys = (self.y0 - self.dy / 2, self.y0 + self.dy * (self.ny - 0.5))
        return (min(xs), min(ys), max(xs), max(ys))

    @property
    def x(self):
        """Cell-centre x coordinates (1-D)."""
        return self._centres(self.x0, self.dx, self.nx)

    @property
    def y(self):
        """Cell-centre y coordinates (1-D)."""
        return self._centres(self.y0, self.dy, self.ny)

    def _centres(self, start, step, n):
        values = start + step * np.arange(n)
        return values if self.decimals is None else np.round(values, self.decimals)

    @functools.cached_property
    def pyproj_crs(self):
        return _to_crs(self.crs)

    @functools.cached_property
    def fingerprint(self):
        """Stable digest of everything that places the cells (not the name)."""
        text = repr((self.pyproj_crs.to_wkt(), self.x0, self.dx, self.nx, self.y0, self.dy, self.ny,
                     self.decimals))
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def lonlat(self):
        """2-D (ny, nx) longitude and latitude of the cell centres, degrees."""
        return _lonlat_cached(self)

    @property
    def mapping_name(self):
        """Name of the grid-mapping variable in outputs."""
        return "rotated_pole" if _is_rotated(self.pyproj_crs) else "crs"

    @functools.cached_property
    def mapping_attrs(self):
        """CF grid-mapping attributes, plus ``epsg_code`` and ``proj4`` where known."""
        crs = self.pyproj_crs
        # pyku's HYRAS areas carry a null datum shift (+towgs84=0,0,0,0,0,0,0): it changes
        # no coordinate, but makes a bound CRS with an odd datum name; describe the CRS without it.
        null_shift = re.compile(r"\s*\+towgs84=(0(\.0*)?,){6}0(\.0*)?(?=\s|$)")
        if crs.is_bound and null_shift.search(self.crs):
            crs = _to_crs(null_shift.sub("", self.crs))
        attrs = crs.to_cf()
        code = crs.to_epsg() if self.epsg_code is None else None
        epsg = self.epsg_code or (f"EPSG:{code}" if code else None)
        if epsg:
            attrs["epsg_code"] = epsg
        if self.crs.lstrip().startswith("+"):
            attrs["proj4"] = self.crs
        return attrs

    def to_dataset(self):
        """The grid as CF coordinates: y, x, 2-D lat/lon and the grid-mapping variable."""
        ydim, xdim = self.dims
        lon, lat = self.lonlat()
        mapping = xr.DataArray(np.int32(0), attrs=dict(self.mapping_attrs))
        coords = {
            ydim: (ydim, self.y, _AXIS_ATTRS.get(ydim, {})),
            xdim: (xdim, self.x, _AXIS_ATTRS.get(xdim, {})),
        }
        if ydim != "lat":
            coords["lat"] = ((ydim, xdim), lat, _AXIS_ATTRS["lat"])
            coords["lon"] = ((ydim, xdim), lon, _AXIS_ATTRS["lon"])
        return xr.Dataset({self.mapping_name: mapping}, coords=coords)


@functools.lru_cache(maxsize=32)
def _lonlat_cached(grid):
    xx, yy = np.meshgrid(grid.x, grid.y)
    to_geo = pyproj.Transformer.from_crs(grid.pyproj_crs, "EPSG:4326", always_xy=True)
    lon, lat = to_geo.transform(xx, yy)
    lon.flags.writeable = False
    lat.flags.writeable = False
    return lon, lat


def _to_crs(crs):
    """pyproj.CRS from a string, a CF attribute dict or a CRS."""
    try:
        if isinstance(crs, pyproj.CRS):
            return crs
        if isinstance(crs, dict):
            return pyproj.CRS.from_cf(crs)
        return pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError as exc:
        raise GridError(f"cannot read CRS {crs!r}: {exc}") from exc


def _is_rotated(crs):
    try:
        return crs.to_cf().get("grid_mapping_name") == "rotated_latitude_longitude"
    except Exception:  # a CRS with no CF equivalent is not rotated pole
        return False
