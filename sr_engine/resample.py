"""Cubic B-spline interpolation ("bicubic" as image viewers and scipy's ``order=3`` do it).

``upsample_spline(a, s)`` equals ``scipy.ndimage.zoom(a, s, order=3, mode="reflect",
grid_mode=True)``: pixel areas aligned (output pixel ``i`` sits at input coordinate
``(i + 0.5) / s - 0.5``), the interpolating cubic B-spline (prefiltered), edges mirrored
about the half-pixel. Separable: one dense ``(s*n, n)`` matrix per axis, cached by size.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def _bspline3(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    return np.where(t < 1, 2 / 3 - t**2 + t**3 / 2, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))


def _mirrored(x: np.ndarray, n: int) -> np.ndarray:
    """Weights (len(x), n): the B-spline of each sample k at x, with half-sample symmetric
    images of k (-1-k, 2n-1-k, ...) folded back."""
    k = np.arange(n)
    w = np.zeros((len(x), n))
    for img in (k, -1 - k, 2 * n - 1 - k, -2 * n - 1 + k, 2 * n + k):
        w += _bspline3(x[:, None] - img[None, :])
    return w


@lru_cache(maxsize=16)
def spline_matrix(n: int, s: int) -> np.ndarray:
    """The (s*n, n) matrix of cubic B-spline upsampling by ``s`` along one axis."""
    if n == 1:
        return np.ones((s, 1))
    prefilter = _mirrored(np.arange(n, dtype=np.float64), n)
    x = (np.arange(n * s) + 0.5) / s - 0.5
    return _mirrored(x, n) @ np.linalg.inv(prefilter)


def upsample_spline(a: np.ndarray, s: int) -> np.ndarray:
    """2-D ``a`` upsampled by ``s`` with the cubic B-spline (float64)."""
    a = np.asarray(a, np.float64)
    return spline_matrix(a.shape[0], s) @ a @ spline_matrix(a.shape[1], s).T
