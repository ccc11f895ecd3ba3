"""Stored pixel values <-> the network's [0, 1] range, and back, exactly.

The forward map is ``stored -> modality (slope, intercept) -> [0, 1]`` by the card's
intensity model:

* ``ct_hu``: a fixed HU window ``[lo, hi]`` (values outside are clipped, as in training);
* ``percentile``: per image, the ``[p_lo, p_hi]`` percentiles of the modality values (MR);
* ``bits_stored``: the whole stored range given by BitsStored / PixelRepresentation.

The inverse undoes each step and :func:`to_stored` rounds and clips to the BitsStored
range in the input's dtype, so the output has the same PixelRepresentation. MONOCHROME1
data stay MONOCHROME1: the stored values are never inverted; the network sees ``1 - x``
so that bright means dense, as in the MONOCHROME2 images it was trained on, and the
inverse flips it back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sr_engine.errors import UnsupportedInput
from sr_engine.meta import PixelMeta
from sr_engine.model_card import Intensity

MIN_EDGE = 16

_GRAY = {"MONOCHROME1", "MONOCHROME2"}


def check_input(pixels: np.ndarray, meta: PixelMeta) -> None:
    """Raise :class:`UnsupportedInput` with a plain reason if the engine cannot take it."""
    photometric = (meta.photometric or "MONOCHROME2").upper()
    if meta.samples_per_pixel != 1 or photometric not in _GRAY:
        kind = "palette colour" if photometric == "PALETTE COLOR" else "colour"
        raise UnsupportedInput(
            f"{kind} images are not supported (photometric {photometric}, "
            f"{meta.samples_per_pixel} samples per pixel): only grayscale"
        )
    if pixels.dtype == np.bool_ or meta.bits_stored <= 1:
        raise UnsupportedInput("1-bit (binary) images are not supported")
    if not np.issubdtype(pixels.dtype, np.integer):
        raise UnsupportedInput(
            f"float pixel data ({pixels.dtype}) is not supported: only integer stored values"
        )
    if pixels.ndim not in (2, 3):
        raise UnsupportedInput(
            f"pixel array of shape {pixels.shape} is not supported: expected (rows, columns) "
            "or (frames, rows, columns) of one grayscale channel"
        )
    h, w = pixels.shape[-2:]
    if min(h, w) < MIN_EDGE:
        raise UnsupportedInput(f"image {h}x{w} is too small: both edges must be >= {MIN_EDGE} px")
    if pixels.ndim == 3 and pixels.shape[0] == 0:
        raise UnsupportedInput("multi-frame pixel array has no frames")


def stored_limits(meta: PixelMeta, dtype: np.dtype) -> tuple[int, int]:
    """The range every output value is clipped to: BitsStored range within the dtype's."""
    info = np.iinfo(dtype)
    return max(meta.stored_min, int(info.min)), min(meta.stored_max, int(info.max))


@dataclass(frozen=True)
class IntensityMap:
    """The affine map of one image: ``x = (stored * slope + intercept - lo) / (hi - lo)``.

    ``lo``/``hi`` are in modality units; ``clip`` clips ``x`` to [0, 1] in the forward map.
    """

    slope: float
    intercept: float
    lo: float
    hi: float
    clip: bool
    invert: bool  # MONOCHROME1: the network sees 1 - x

    @classmethod
    def fit(cls, intensity: Intensity, meta: PixelMeta, frame: np.ndarray) -> IntensityMap:
        slope = float(meta.rescale_slope or 1.0)
        intercept = float(meta.rescale_intercept or 0.0)
        clip = intensity.model == "ct_hu"
        if intensity.model == "ct_hu":
            lo, hi = (float(v) for v in intensity.window)  # type: ignore[union-attr]
        elif intensity.model == "percentile":
            p_lo, p_hi = intensity.percentiles  # type: ignore[misc]
            s_lo, s_hi = np.percentile(frame, [p_lo, p_hi])
            lo, hi = sorted((s_lo * slope + intercept, s_hi * slope + intercept))
            if hi - lo < abs(slope):  # flat image: any non-degenerate scale is exact
                hi = lo + abs(slope)
        else:  # bits_stored
            s_lo, s_hi = meta.stored_min, meta.stored_max
            lo, hi = sorted((s_lo * slope + intercept, s_hi * slope + intercept))
        return cls(slope, intercept, float(lo), float(hi), clip, meta.photometric == "MONOCHROME1")

    def forward(self, stored: np.ndarray) -> np.ndarray:
        """Stored values -> float32 network input."""
        m = stored.astype(np.float64) * self.slope + self.intercept
        x = (m - self.lo) / (self.hi - self.lo)
        if self.clip:
            np.clip(x, 0.0, 1.0, out=x)
        if self.invert:
            x = 1.0 - x
        return x.astype(np.float32)

    def outside(self, stored: np.ndarray) -> np.ndarray | None:
        """Where a clipping map (``ct_hu``) cannot represent the stored value: modality
        values outside the window (scanner padding at -3024 HU, metal above the window).
        None when the map clips nothing."""
        if not self.clip:
            return None
        m = stored.astype(np.float64) * self.slope + self.intercept
        mask = (m < self.lo) | (m > self.hi)
        return mask if mask.any() else None

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """Network output -> stored values as float64, not yet rounded or clipped."""
        x = x.astype(np.float64)
        if self.invert:
            x = 1.0 - x
        m = x * (self.hi - self.lo) + self.lo
        return (m - self.intercept) / self.slope


def to_stored(values: np.ndarray, meta: PixelMeta, dtype: np.dtype) -> np.ndarray:
    """Round to the nearest integer, clip to the BitsStored range, cast to ``dtype``."""
    lo, hi = stored_limits(meta, np.dtype(dtype))
    return np.clip(np.rint(values), lo, hi).astype(dtype)
