"""Data consistency: make the degradation of the output reproduce the input.

The card names the operator ``D`` the model was trained to invert (``degradation.operator``).
After inference we replace the output ``z`` (stored units, float) by the nearest ``y`` with
``D(y) = x`` (the input) and ``lo <= y <= hi`` (the BitsStored range), then round.

* ``area`` (default; s x s block mean): the constraint splits into independent blocks, and
  the nearest ``y`` of a block is ``clip(z + t, lo, hi)`` for the one shift ``t`` whose block
  mean is ``x`` (the KKT conditions of the projection). Without clipping ``t`` is the block
  residual, added to every pixel of the block (the orthogonal projection); with clipping
  the alternation "add the residual, clip" converges to that same ``t`` — we solve for it
  exactly per block (``g(t) = mean(clip(z + t))`` is piecewise linear and monotone, so we
  interpolate between its sorted breakpoints). Rounding then keeps each block's sum: the
  block's pixels are floored and the ``k`` with the largest fractions rounded up, where
  ``k`` makes the sum ``s*s*x``. The result is exactly consistent (RMSE 0) wherever the
  input lies within the stored range.
* ``bicubic`` (antialiased bicubic, a = -0.5, as PIL and torch ``antialias=True``):
  a separable linear operator ``D = Dr . Dc``; we alternate the orthogonal projection
  ``y += Dr+ (x - D y) Dc+^T`` with clipping for a few rounds, then round to integers.
* ``kspace`` (MR acquired at lower resolution, shown as a magnitude image): ``|Dr y Dc^T|``
  where ``Dr``/``Dc`` keep the central ``1/s`` of each axis's spectrum, the low
  resolution's Nyquist frequency split evenly between its two halves (a real operator,
  the same for even and odd sizes). The magnitude folds the Gibbs undershoot at a tissue
  edge next to a zero background up, as a scanner's magnitude image shows it. The
  projection takes the sign of each low-resolution pixel from the output's own low-pass
  (``|D y| = x`` becomes the linear ``D y = sign(D z) x``) and then works as for bicubic.
* ``blur_noise``: the blur is not recorded in the card, so consistency is measured and
  enforced with the area operator, the low-pass part shared by all these degradations.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

OPERATORS = ("area", "bicubic", "kspace", "blur_noise")


# -- area ----------------------------------------------------------------------------
def _blocks(y: np.ndarray, s: int) -> np.ndarray:
    """(sH, sW) -> (H, W, s*s) view-copy of the s x s blocks."""
    h, w = y.shape[0] // s, y.shape[1] // s
    return y.reshape(h, s, w, s).transpose(0, 2, 1, 3).reshape(h, w, s * s)


def _unblocks(b: np.ndarray, s: int) -> np.ndarray:
    h, w = b.shape[:2]
    return b.reshape(h, w, s, s).transpose(0, 2, 1, 3).reshape(h * s, w * s)


def area_down(y: np.ndarray, s: int) -> np.ndarray:
    """The s x s block mean of a 2-D image, in float64."""
    return _blocks(y.astype(np.float64), s).mean(-1)


def _area_shift(z: np.ndarray, x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Per block the ``t`` with ``mean(clip(z + t, lo, hi)) == x`` (x already in [lo, hi])."""
    bp = np.concatenate([lo - z, hi - z], axis=-1)  # breakpoints of g(t)
    bp.sort(axis=-1)
    g = np.clip(z[..., None, :] + bp[..., :, None], lo, hi).mean(-1)  # (..., m) nondecreasing
    m = bp.shape[-1]
    idx = np.clip((g < x[..., None]).sum(-1), 1, m - 1)
    b0 = np.take_along_axis(bp, idx[..., None] - 1, -1)[..., 0]
    b1 = np.take_along_axis(bp, idx[..., None], -1)[..., 0]
    g0 = np.take_along_axis(g, idx[..., None] - 1, -1)[..., 0]
    g1 = np.take_along_axis(g, idx[..., None], -1)[..., 0]
    dg = g1 - g0
    safe = np.where(dg > 0, dg, 1.0)
    return np.where(dg > 0, b0 + (x - g0) * (b1 - b0) / safe, b1)


def _round_keep_sum(b: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Round each block (last axis) to integers whose sum is ``target`` (largest remainder)."""
    f = np.floor(b)
    frac = b - f
    k = np.clip(np.rint(target - f.sum(-1)), 0, b.shape[-1]).astype(np.int64)
    rank = np.argsort(np.argsort(-frac, axis=-1, kind="stable"), axis=-1, kind="stable")
    return f + (rank < k[..., None])


def project_area(z: np.ndarray, x: np.ndarray, s: int, lo: float, hi: float) -> np.ndarray:
    """Nearest integer image to ``z`` (sH, sW) in [lo, hi] whose s x s means are ``x``."""
    zb = _blocks(z.astype(np.float64), s)
    xt = np.clip(x.astype(np.float64), lo, hi)
    unclipped = xt - zb.mean(-1)  # the orthogonal projection's shift
    yb = zb + unclipped[..., None]
    bad = ((yb < lo) | (yb > hi)).any(-1)
    if bad.any():  # only blocks touching the stored limits need the exact search
        t = _area_shift(zb[bad], xt[bad], lo, hi)
        yb[bad] = zb[bad] + t[..., None]
    np.clip(yb, lo, hi, out=yb)
    yb = _round_keep_sum(yb, xt * (s * s))
    return _unblocks(np.clip(yb, lo, hi), s)


# -- separable linear operators --------------------------------------------------------
def _cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    t = np.abs(t)
    return np.where(
        t <= 1,
        (a + 2) * t**3 - (a + 3) * t**2 + 1,
        np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0),
    )


@lru_cache(maxsize=32)
def axis_matrices(op: str, n: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """(D, D+) of a separable operator (``bicubic``, ``kspace``, ``area``) along one axis:
    D maps s*n high-res samples to n low-res ones (for ``kspace`` before the magnitude)."""
    big = n * s
    if op == "bicubic":  # antialiased: the kernel stretched by s, renormalised, edges clamped
        d = np.zeros((n, big))
        for i in range(n):
            c = (i + 0.5) * s - 0.5
            j = np.arange(int(np.floor(c - 2 * s)), int(np.ceil(c + 2 * s)) + 1)
            w = _cubic((j - c) / s)
            w /= w.sum()
            np.add.at(d[i], np.clip(j, 0, big - 1), w)
    elif op == "kspace":  # the central n frequencies of s*n (Nyquist split), mean preserved
        eye = np.eye(big)
        spec = np.fft.fftshift(np.fft.fft(eye, axis=0), axes=0)
        c0 = big // 2 - n // 2
        low = np.fft.ifftshift(spec[c0 : c0 + n], axes=0)
        d = np.real(np.fft.ifft(low, axis=0)) / s
    else:  # area
        d = np.kron(np.eye(n), np.full((1, s), 1.0 / s))
    return d, np.linalg.pinv(d)


def _effective(op: str) -> str:
    return "area" if op == "blur_noise" else op


def degrade(y: np.ndarray, s: int, operator: str = "area") -> np.ndarray:
    """Apply the card's degradation operator to a 2-D high-res image (float64 out)."""
    op = _effective(operator)
    if op == "area":
        return area_down(y, s)
    h, w = y.shape[0] // s, y.shape[1] // s
    dr, _ = axis_matrices(op, h, s)
    dc, _ = axis_matrices(op, w, s)
    low = dr @ y.astype(np.float64) @ dc.T
    return np.abs(low) if op == "kspace" else low


def project(
    z: np.ndarray,
    x: np.ndarray,
    s: int,
    lo: float,
    hi: float,
    operator: str = "area",
    rounds: int = 8,
) -> np.ndarray:
    """Integer-valued float64 image near ``z`` with ``degrade(y) ~= x`` and lo <= y <= hi."""
    op = _effective(operator)
    if op == "area":
        return project_area(z, x, s, lo, hi)
    h, w = x.shape
    dr, pr = axis_matrices(op, h, s)
    dc, pc = axis_matrices(op, w, s)
    xt = x.astype(np.float64)
    y = z.astype(np.float64)
    if op == "kspace":  # |D y| = x: each low-res pixel keeps the sign of the output's low-pass
        xt = np.where(dr @ y @ dc.T < 0, -xt, xt)
    for _ in range(rounds):
        y = y + pr @ (xt - dr @ y @ dc.T) @ pc.T
        if y.min() >= lo and y.max() <= hi:
            break
        np.clip(y, lo, hi, out=y)
    return np.clip(np.rint(y), lo, hi)


def errors(y: np.ndarray, x: np.ndarray, s: int, operator: str = "area") -> tuple[float, float]:
    """(RMSE, max abs) of ``degrade(y) - x`` in stored units."""
    r = degrade(y, s, operator) - x.astype(np.float64)
    return float(np.sqrt(np.mean(r * r))), float(np.abs(r).max())
