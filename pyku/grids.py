"""Target grids: the catalogue in ``etc/grids.toml`` and user-defined grids.

A :class:`Grid` is a CRS plus regularly spaced cell centres in that CRS.  It
knows its coordinates, its 2-D latitude/longitude and how to describe itself
as CF (coordinates plus a grid-mapping variable), which is all that
:func:`pyku.geo.project` needs from a target.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.resources
import tomllib
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

    @classmethod
    def from_extent(cls, crs, shape, extent, name=None, dims=None):
        """Grid from its outer edges.

        Parameters
        ----------
        crs : str, dict or pyproj.CRS
            The CRS; a dict is read as CF grid-mapping attributes.
        shape : (int, int)
            Number of cells (ny, nx).
        extent : (float, float, float, float)
            Outer edges (xmin, ymin, xmax, ymax) in CRS units.  Rows run north
            to south for projected CRSs, south to north for angular ones.
        """
        crs_obj = _to_crs(crs)
        ny, nx = (int(n) for n in shape)
        xmin, ymin, xmax, ymax = (float(v) for v in extent)
        if nx < 1 or ny < 1 or xmax <= xmin or ymax <= ymin:
            raise GridError(f"invalid grid: shape {shape} and extent {extent} must be positive")
        dx, dy = (xmax - xmin) / nx, (ymax - ymin) / ny
        if dims is None:
            dims = ("rlat", "rlon") if _is_rotated(crs_obj) else (
                ("lat", "lon") if crs_obj.is_geographic else ("y", "x"))
        if crs_obj.is_geographic:
            y0, dy = ymin + dy / 2, dy
        else:
            y0, dy = ymax - dy / 2, -dy
        return cls(crs=crs_obj.to_wkt(), x0=xmin + dx / 2, dx=dx, nx=nx, y0=y0, dy=dy, ny=ny,
                   dims=tuple(dims), name=name)

    @property
    def shape(self):
        """(ny, nx)."""
        return (self.ny, self.nx)

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

    def to_dataset(self):
        """The grid as CF coordinates: y, x, 2-D lat/lon and the grid-mapping variable."""
        ydim, xdim = self.dims
        lon, lat = self.lonlat()
        cf = self.pyproj_crs.to_cf()
        mapping = xr.DataArray(np.int32(0), attrs=cf)
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


@functools.cache
def _catalogue():
    """Read etc/grids.toml once: name -> Grid."""
    text = importlib.resources.files("pyku").joinpath("etc").joinpath("grids.toml").read_text()
    table = tomllib.loads(text)
    crs_table = table.get("crs", {})
    grids = {}
    for name, spec in table["grid"].items():
        crs = crs_table.get(spec["crs"], spec["crs"])
        crs_obj = _to_crs(crs)
        grids[name] = Grid(crs=crs_obj.to_wkt(), x0=float(spec["x0"]), dx=float(spec["dx"]),
                           nx=int(spec["nx"]), y0=float(spec["y0"]), dy=float(spec["dy"]),
                           ny=int(spec["ny"]), dims=tuple(spec.get("dims", ("y", "x"))),
                           name=name, description=spec.get("description", ""),
                           decimals=spec.get("decimals"))
    return grids


def list_grids():
    """Names of the catalogued grids, sorted."""
    return sorted(_catalogue())


def get_grid(target):
    """A :class:`Grid` from a catalogue name, a Grid, or a user-defined spec.

    A spec is a dict with ``crs``, ``shape`` (ny, nx) and ``extent``
    (xmin, ymin, xmax, ymax outer edges), optionally ``name`` and ``dims``.
    An unknown name raises :class:`GridError` listing the close names.
    """
    if isinstance(target, Grid):
        return target
    if isinstance(target, dict):
        missing = {"crs", "shape", "extent"} - set(target)
        if missing:
            raise GridError(f"a user-defined grid needs crs, shape and extent; missing {sorted(missing)}")
        return Grid.from_extent(**target)
    grids = _catalogue()
    if target in grids:
        return grids[target]
    folded = {name.lower(): name for name in grids}
    if str(target).lower() in folded:
        return grids[folded[str(target).lower()]]
    close = difflib.get_close_matches(str(target), list(grids), n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"known grids: {', '.join(sorted(grids))}"
    raise GridError(f"unknown grid {target!r}; {hint}")

