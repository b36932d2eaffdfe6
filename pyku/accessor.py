"""The ``.pyku`` accessor on :class:`xarray.Dataset`.

Each method forwards to a plain function of a topic module, so the same
operations are available without the accessor and documented in one place.
"""

from __future__ import annotations

import xarray as xr

from pyku import drs, geo, timekit


@xr.register_dataset_accessor("pyku")
class PykuAccessor:
    """``ds.pyku.<method>(...)`` is ``<module>.<method>(ds, ...)``."""

    def __init__(self, ds):
        self._ds = ds

    def project(self, area_def=None, roi=1e6, method="nearest_neighbor", use_dask=True,
                area_file=None, keep_mask=False, power_parameter=None, neighbours=None):
        """Reproject onto an area; see :func:`pyku.project.project`."""
        return geo.project(self._ds, area_def, roi=roi, method=method, use_dask=use_dask,
                           area_file=area_file, keep_mask=keep_mask,
                           power_parameter=power_parameter, neighbours=neighbours)

    def get_area_def(self):
        """The area the dataset is on; see :func:`pyku.geo.get_area_def`."""
        return geo.get_area_def(self._ds)

    def source_grid(self):
        """The dataset's horizontal grid; see :func:`pyku.geo.source_grid`."""
        return geo.source_grid(self._ds)[0]

    def set_time_labels_from_time_bounds(self, how="lower", time="time"):
        """Relabel time from its bounds; see :func:`pyku.timekit.set_time_labels_from_time_bounds`."""
        return timekit.set_time_labels_from_time_bounds(self._ds, how=how, time=time)

    def to_cmor_varnames(self):
        """Rename to CMOR names; see :func:`pyku.drs.to_cmor_varnames`."""
        return drs.to_cmor_varnames(self._ds)

    def to_cmor_units(self):
        """Convert to CMOR units; see :func:`pyku.drs.to_cmor_units`."""
        return drs.to_cmor_units(self._ds)
