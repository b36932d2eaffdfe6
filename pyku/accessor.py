"""The ``.pyku`` accessor on :class:`xarray.Dataset`.

Each method forwards to a plain function of a topic module, under pyku's
names and keywords, so the same operations are available without the
accessor and documented in one place.
"""

from __future__ import annotations

import xarray as xr

from pyku import drs, geo, meta, timekit


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

    def get_lonlats(self, dtype="ndarray"):
        """Cell-centre longitudes and latitudes; see :func:`pyku.geo.get_lonlats`."""
        return geo.get_lonlats(self._ds, dtype=dtype)

    def wrap_longitudes(self):
        """Longitudes to [-180, 180), sorted; see :func:`pyku.geo.wrap_longitudes`."""
        return geo.wrap_longitudes(self._ds)

    def source_grid(self):
        """The dataset's horizontal grid; see :func:`pyku.project.source_grid`."""
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

    def to_cmor_attrs(self):
        """Set CMOR attributes; see :func:`pyku.drs.to_cmor_attrs`."""
        return drs.to_cmor_attrs(self._ds)

    def cmorize(self, global_metadata=None):
        """CMOR-ize one variable; see :func:`pyku.drs.cmorize`."""
        return drs.cmorize(self._ds, global_metadata=global_metadata)

    def check_metadata(self, standard=None, completeness_period=None):
        """Table of metadata checks; see :func:`pyku.check.check_metadata`."""
        from pyku import check

        return check.check_metadata(self._ds, standard=standard, completeness_period=completeness_period)

    def apply_mask(self, mask, from_nans=False, tolerance=0.001):
        """NaN outside a mask; see :func:`pyku.mask.apply_mask`."""
        from pyku.mask import apply_mask

        return apply_mask(self._ds, mask, from_nans=from_nans, tolerance=tolerance)

    def get_frequency(self, dtype="freqstr"):
        """Time frequency; see :func:`pyku.meta.get_frequency`."""
        return meta.get_frequency(self._ds, dtype=dtype)

    def get_geodata_varnames(self):
        """Climate variables on the grid; see :func:`pyku.meta.get_geodata_varnames`."""
        return meta.get_geodata_varnames(self._ds)

    def get_geographic_latlon_varnames(self):
        """(lat, lon) names; see :func:`pyku.meta.get_geographic_latlon_varnames`."""
        return meta.get_geographic_latlon_varnames(self._ds)

    def get_projection_yx_varnames(self):
        """(y, x) names; see :func:`pyku.meta.get_projection_yx_varnames`."""
        return meta.get_projection_yx_varnames(self._ds)

    def get_crs_varname(self):
        """Grid-mapping variable name; see :func:`pyku.meta.get_crs_varname`."""
        return meta.get_crs_varname(self._ds)

    def get_time_bounds_varname(self):
        """Time-bounds variable name; see :func:`pyku.meta.get_time_bounds_varname`."""
        return meta.get_time_bounds_varname(self._ds)

