"""What every regrid method builds on: the sphere, unit vectors, the sparse weight matrix.

:mod:`pyku.regrid` (nearest, idw, the cache), :mod:`pyku.bilinear` and
:mod:`pyku.conservative` all build :class:`WeightMatrix` objects from points
on the same sphere; this module sits below all three so that none of them
imports another for these shared pieces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

EARTH_RADIUS = 6370997.0       # metres: the sphere pyresample measures roi on


@dataclass(frozen=True, eq=False)
class WeightMatrix:
    """Weighted methods (bilinear, idw, conservative): a sparse (target x source) matrix.

    Only non-zero weights are stored, so a NaN source cell makes NaN only the
    target cells that give it weight (a dense weighted sum would also spoil
    cells where it has weight 0: 0 x NaN = NaN).  Rows without weights are
    target cells the method cannot fill: NaN.
    """

    method: str
    shape: tuple[int, int]
    matrix: sparse.csr_matrix
    valid: np.ndarray

    @classmethod
    def from_neighbours(cls, method, shape, nsource, index, weights, tiny=1e-12):
        """From k x n arrays of source indices and weights (rows renormalised to sum 1).

        Weights below ``tiny`` of their row's total are dropped: they are
        floating-point noise (an identity regrid's 1e-17), not information.
        """
        weights = np.where(np.isfinite(weights), weights, 0.0)
        total = weights.sum(axis=0)
        keep = weights > tiny * total
        weights = np.where(keep, weights, 0.0)
        total = weights.sum(axis=0)
        valid = total > 0
        weights = np.divide(weights, total, out=np.zeros_like(weights), where=valid)
        k, n = index.shape
        rows = np.broadcast_to(np.arange(n), (k, n))
        matrix = sparse.csr_matrix((weights[keep], (rows[keep], index[keep])), shape=(n, nsource))
        matrix.sum_duplicates()
        return cls(method, tuple(shape), matrix, valid)

    def apply(self, data):
        """Regrid ``data`` (..., ny_src, nx_src) to (..., ny, nx); NaN where invalid."""
        data = np.asarray(data)
        lead = data.shape[:-2]
        flat = data.reshape((-1, data.shape[-2] * data.shape[-1]))
        dtype = np.result_type(data.dtype, np.float32)
        out = np.asarray((self.matrix @ flat.T).T, dtype=dtype)
        out[:, ~self.valid] = np.nan
        return out.reshape(lead + self.shape)

    @property
    def nbytes(self):
        m = self.matrix
        return m.data.nbytes + m.indices.nbytes + m.indptr.nbytes + self.valid.nbytes

def unit_vectors(lon, lat):
    """ECEF coordinates on the unit sphere, shape (..., 3)."""
    lon, lat = np.radians(lon), np.radians(lat)
    coslat = np.cos(lat)
    return np.stack([coslat * np.cos(lon), coslat * np.sin(lon), np.sin(lat)], axis=-1)


def index_dtype(n):
    """The narrowest integer type that indexes ``n`` source cells."""
    return np.int32 if n < 2**31 else np.int64
