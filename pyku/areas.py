"""Named areas: pyku's 40 target grids, user area files, and area definitions.

The catalogue is ``etc/areas.toml``: the areas of DWD's pyku 1.1.x, with
their names and the parameters pyresample's area files use (PROJ string,
shape, outer area extent), so that :func:`get_grid` places every cell centre
where pyku does.  Users may name their own file in pyresample's YAML area
format (``area_file=``).  :class:`AreaDefinition` is what
:func:`load_area_def` returns: the attributes of pyresample's class that
pyku users touch, without depending on pyresample.
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import tomllib
from pathlib import Path

import numpy as np
import pyproj

from pyku.errors import GridError
from pyku.grids import Grid


def _grid_from_spec(name, spec):
    """Grid from one catalogue entry (see the header of etc/areas.toml)."""
    return Grid.from_extent(spec["proj"], spec["shape"], spec["area_extent"], name=name,
                            decimals=spec.get("decimals"), cordex_domain=spec.get("cordex_domain"),
                            epsg_code=spec.get("epsg_code"), description=spec.get("description", ""))


@functools.cache
def _catalogue():
    """name -> Grid for every area of etc/areas.toml; alias -> name; deprecated name -> successor."""
    text = importlib.resources.files("pyku").joinpath("etc").joinpath("areas.toml").read_text()
    table = tomllib.loads(text)
    grids, aliases = {}, {}
    for name, spec in table["area"].items():
        grids[name] = _grid_from_spec(name, spec)
        for alias in spec.get("aliases", []):
            aliases[alias] = name
    return grids, aliases, table.get("deprecated", {})


def list_standard_areas():
    """Names of pyku's predefined areas (pyku's own name for this call)."""
    return list(_catalogue()[0])


def list_grids():
    """Names of the predefined areas, sorted."""
    return sorted(_catalogue()[0])


def read_area_file(path):
    """Areas of a pyresample-style YAML area file: name -> :class:`Grid`.

    Each area needs ``projection`` (PROJ parameters or string), ``shape``
    (``height``, ``width``) and ``area_extent`` (``lower_left_xy``,
    ``upper_right_xy``, optional ``units``: m or km).
    """
    import yaml  # a dependency of dask

    path = Path(path)
    try:
        table = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise GridError(f"cannot read area file {path}: {exc}") from exc
    if not isinstance(table, dict):
        raise GridError(f"area file {path} holds no areas (expected a mapping of area names)")
    return {name: _grid_from_yaml(path, name, spec) for name, spec in table.items()}


def _grid_from_yaml(path, name, spec):
    try:
        projection = spec["projection"]
        shape = (spec["shape"]["height"], spec["shape"]["width"])
        extent = spec["area_extent"]
        corners = [*extent["lower_left_xy"], *extent["upper_right_xy"]]
    except (KeyError, TypeError):
        raise GridError(f"area {name!r} in {path}: needs projection, shape (height, width) and "
                        "area_extent (lower_left_xy, upper_right_xy); other pyresample forms "
                        "(resolution, center) are not read") from None
    scale = {"m": 1.0, "km": 1000.0}.get(str(extent.get("units", "m")))
    if scale is None:
        raise GridError(f"area {name!r} in {path}: area_extent units {extent['units']!r}; use m or km")
    crs = projection if isinstance(projection, str) else _proj_string(projection)
    return Grid.from_extent(crs, shape, [v * scale for v in corners], name=name,
                            description=str(spec.get("description", "")))


def _proj_string(params):
    """PROJ string from pyresample's projection mapping (``null`` = a flag)."""
    parts = []
    for key, value in params.items():
        if key == "type":
            continue
        if value is None:
            parts.append(f"+{key}")
        elif isinstance(value, (list, tuple)):
            parts.append(f"+{key}=" + ",".join(str(v) for v in value))
        else:
            parts.append(f"+{key}={value}")
    return " ".join(parts)


def get_grid(target, area_file=None):
    """A :class:`Grid` from a name, a Grid, a dict or an area-definition object.

    Parameters
    ----------
    target : str, Grid, dict or area definition
        A name of :func:`list_grids` (or of ``area_file``); a dict with
        ``crs``, ``shape`` (ny, nx) and ``extent`` (x_ll, y_ll, x_ur, y_ur
        outer edges); or any object with ``crs`` (or ``proj_str``),
        ``width``, ``height`` and ``area_extent``, such as pyresample's
        ``AreaDefinition`` or :class:`AreaDefinition`.
    area_file : str or Path, optional
        pyresample-style YAML file searched before the catalogue.
    """
    if isinstance(target, Grid):
        return target
    if isinstance(target, AreaDefinition):
        return target.grid
    if isinstance(target, dict):
        missing = {"crs", "shape", "extent"} - set(target)
        if missing:
            raise GridError(f"a user-defined grid needs crs, shape and extent; missing {sorted(missing)}")
        return Grid.from_extent(**target)
    if hasattr(target, "area_extent") and hasattr(target, "width") and hasattr(target, "height"):
        crs = getattr(target, "crs", None) or getattr(target, "proj_str", None)
        if crs is None:
            raise GridError(f"area definition {target!r} has no crs or proj_str")
        return Grid.from_extent(crs, (target.height, target.width), target.area_extent,
                                name=getattr(target, "area_id", None))
    if not isinstance(target, str):
        raise GridError(f"area_def {type(target).__name__} is not a grid: give an area name, a dict "
                        "with crs/shape/extent, a pyku Grid or an area definition "
                        "(crs, width, height, area_extent)")
    if area_file is not None:
        user = read_area_file(area_file)
        if target in user:
            return user[target]
        raise GridError(f"area {target!r} is not in {area_file}; it has {', '.join(user)}")
    grids, aliases, deprecated = _catalogue()
    name = aliases.get(target, target)
    if name in grids:
        return grids[name]
    if target in deprecated:  # as pyku: refused, with the successor named
        successor = deprecated[target]
        hint = f"use {successor!r} instead" if successor else "it has no successor among pyku's areas"
        raise GridError(f"area {target!r} is deprecated and has been removed; {hint}")
    folded = {n.lower(): n for n in grids}
    if name.lower() in folded:
        return grids[folded[name.lower()]]
    close = difflib.get_close_matches(target, list(grids), n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"known areas: {', '.join(sorted(grids))}"
    raise GridError(f"unknown area {target!r}; {hint}")


class AreaDefinition:
    """pyresample-like view of a :class:`Grid` (what :func:`load_area_def` returns).

    Has the attributes pyku users touch: ``area_id``, ``description``,
    ``crs`` (pyproj), ``proj_str``, ``proj_dict``, ``width``, ``height``,
    ``shape``, ``area_extent``, ``pixel_size_x``/``pixel_size_y``,
    ``get_lonlats()`` and ``get_proj_coords()``; ``.grid`` is the Grid.
    """

    def __init__(self, grid):
        self.grid = grid

    area_id = property(lambda self: self.grid.name)
    description = property(lambda self: self.grid.description or self.grid.name or "")
    crs = property(lambda self: self.grid.pyproj_crs)
    width = property(lambda self: self.grid.nx)
    height = property(lambda self: self.grid.ny)
    shape = property(lambda self: self.grid.shape)
    area_extent = property(lambda self: self.grid.area_extent)
    pixel_size_x = property(lambda self: abs(self.grid.dx))
    pixel_size_y = property(lambda self: abs(self.grid.dy))

    @property
    def proj_str(self):
        """PROJ string of the CRS."""
        return self.grid.crs if self.grid.crs.lstrip().startswith("+") else self.crs.to_proj4()

    @property
    def proj_dict(self):
        """PROJ parameters as a dict."""
        return self.crs.to_dict()

    def get_lonlats(self):
        """2-D (height, width) longitudes and latitudes of the cell centres."""
        return self.grid.lonlat()

    def get_proj_coords(self):
        """2-D (height, width) x and y of the cell centres in CRS units."""
        return np.meshgrid(self.grid.x, self.grid.y)

    def __eq__(self, other):
        return isinstance(other, AreaDefinition) and self.grid.fingerprint == other.grid.fingerprint

    def __hash__(self):
        return hash(self.grid.fingerprint)

    def __repr__(self):
        return (f"AreaDefinition({self.area_id!r}, shape={self.shape}, "
                f"area_extent={self.area_extent}, crs={self.proj_str!r})")


def load_area_def(projection_name, area_file=None):
    """The :class:`AreaDefinition` of a named area (pyku.geo.load_area_def)."""
    if projection_name is None:
        raise GridError("projection_name is None; give an area name such as 'HYR-LAEA-5'")
    return AreaDefinition(get_grid(projection_name, area_file=area_file))


def same_crs(a, b):
    """True if grids ``a`` and ``b`` place coordinates identically (same CRS, however written).

    A CRS read from CF attributes and the same CRS from a PROJ string differ in
    names, so ``pyproj.CRS.equals`` is not enough: compare where 9 points of
    ``a`` land on the globe through both CRSs (to 1e-9 degrees).
    """
    if a.pyproj_crs.equals(b.pyproj_crs):
        return True
    xx, yy = np.meshgrid(a.x[[0, a.nx // 2, -1]], a.y[[0, a.ny // 2, -1]])
    points = []
    for crs in (a.pyproj_crs, b.pyproj_crs):
        to_geo = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        points.append(np.array(to_geo.transform(xx, yy)))
    if not np.isfinite(points).all():
        return False
    dlon = (points[0][0] - points[1][0] + 180) % 360 - 180
    return bool(np.abs(dlon).max() < 1e-9 and np.abs(points[0][1] - points[1][1]).max() < 1e-9)


def find_area(grid, tolerance=1e-6):
    """Name of the catalogue area equal to ``grid`` (same CRS, centres within ``tolerance``), or None."""
    for name, known in _catalogue()[0].items():
        if known.shape != grid.shape or not same_crs(known, grid):
            continue
        tol = tolerance * (1e-5 if known.pyproj_crs.is_geographic else 1.0)
        if (np.allclose(np.sort(known.x), np.sort(grid.x), rtol=0, atol=tol)
                and np.allclose(np.sort(known.y), np.sort(grid.y), rtol=0, atol=tol)):
            return name
    return None


__all__ = ["AreaDefinition", "find_area", "get_grid", "list_grids", "list_standard_areas",
           "load_area_def", "read_area_file"]
