"""pyku: preprocessing of climate NetCDF collections.

``import pyku`` registers the ``.pyku`` accessor on :class:`xarray.Dataset`:

>>> ds = ds.pyku.project("HYR-LAEA-5")                  # pyku.geo
>>> ds = ds.pyku.set_time_labels_from_time_bounds()     # pyku.timekit
>>> ds = ds.pyku.to_cmor_varnames()                     # pyku.drs
>>> ds = ds.pyku.to_cmor_units()                        # pyku.drs

and :func:`pyku.compute.persistent_processing` runs such a chain over many
files, on the current ``distributed`` client if there is one.  Grids and
sample inputs are in :mod:`pyku.resources`.  pyku knows nothing about how a
cluster was started: it only ever asks ``distributed`` for the current client.
"""

from pyku import (  # noqa: F401  (accessor registers ds.pyku; the rest are pyku's modules)
    accessor,
    drs,
    geo,
    meta,
    resources,
    timekit,
)
from pyku.areas import get_grid, list_grids
from pyku.errors import (
    GridError,
    OptionError,
    ProcessingError,
    PykuError,
    TimeBoundsError,
    UnitsError,
)
from pyku.grids import Grid

__version__ = "0.1.0"

__all__ = [
    "Grid",
    "GridError",
    "OptionError",
    "ProcessingError",
    "PykuError",
    "TimeBoundsError",
    "UnitsError",
    "__version__",
    "get_grid",
    "list_grids",
]


def __getattr__(name):
    """``pyku.check`` and ``pyku.mask`` on first use: they pull in pandas tables and shapely,
    which workers that only project and convert never need."""
    if name in ("check", "mask"):
        import importlib

        return importlib.import_module(f"pyku.{name}")
    raise AttributeError(f"module 'pyku' has no attribute {name!r}")
