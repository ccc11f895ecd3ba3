"""Stored values -> the network's [0, 1] float input, exactly as the engine maps them.

This mirrors ``sr_engine.intensity.IntensityMap.fit(...).forward(...)`` (a test checks
that both give identical arrays) without importing sr_engine, so that training runs on
hosts that have torch and numpy only:

* ``ct_hu``: ``(stored * slope + intercept - lo) / (hi - lo)`` clipped to [0, 1];
* ``percentile``: per image, ``[p_lo, p_hi]`` percentiles of the *stored* frame mapped to
  modality values, no clipping (values above p_hi exceed 1 a little);
* ``bits_stored``: the whole BitsStored range (signed or unsigned), no clipping needed;
* MONOCHROME1 images are inverted (``1 - x``) so that bright means dense.

Every step is float64 and the result float32: no 8-bit rounding anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class StoredMeta:
    """The pixel-module facts the map needs (same names as sr_engine.PixelMeta)."""

    modality: str = "OT"
    bits_stored: int = 16
    pixel_representation: int = 0
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    photometric: str = "MONOCHROME2"

    @property
    def stored_min(self) -> int:
        return -(1 << (self.bits_stored - 1)) if self.pixel_representation else 0

    @property
    def stored_max(self) -> int:
        if self.pixel_representation:
            return (1 << (self.bits_stored - 1)) - 1
        return (1 << self.bits_stored) - 1

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _intensity_fields(intensity: Any) -> tuple[str, tuple | None, tuple]:
    """Accept an ``sr_engine`` Intensity model or a plain dict."""
    if isinstance(intensity, dict):
        model = intensity["model"]
        window = intensity.get("window")
        perc = intensity.get("percentiles") or (0.0, 99.8)
    else:
        model, window = intensity.model, intensity.window
        perc = intensity.percentiles or (0.0, 99.8)
    return model, (tuple(window) if window is not None else None), tuple(perc)


def unit_params(intensity: Any, meta: StoredMeta, frame: np.ndarray) -> tuple[float, float, bool]:
    """``(lo, hi, clip)`` in modality units for one stored frame (as the engine fits them)."""
    model, window, perc = _intensity_fields(intensity)
    slope = float(meta.rescale_slope or 1.0)
    intercept = float(meta.rescale_intercept or 0.0)
    if model == "ct_hu":
        if window is None:
            raise ValueError("ct_hu needs a window [lo, hi]")
        lo, hi = float(window[0]), float(window[1])
        return lo, hi, True
    if model == "percentile":
        s_lo, s_hi = np.percentile(frame, [perc[0], perc[1]])
        lo, hi = sorted((s_lo * slope + intercept, s_hi * slope + intercept))
        if hi - lo < abs(slope):
            hi = lo + abs(slope)
        return float(lo), float(hi), False
    if model == "bits_stored":
        lo, hi = sorted((meta.stored_min * slope + intercept, meta.stored_max * slope + intercept))
        return float(lo), float(hi), False
    raise ValueError(f"unknown intensity model {model!r}")


def to_unit(frame: np.ndarray, intensity: Any, meta: StoredMeta) -> np.ndarray:
    """One stored 2-D frame -> float32 network input."""
    lo, hi, clip = unit_params(intensity, meta, frame)
    m = frame.astype(np.float64) * float(meta.rescale_slope or 1.0) + float(
        meta.rescale_intercept or 0.0
    )
    x = (m - lo) / (hi - lo)
    if clip:
        np.clip(x, 0.0, 1.0, out=x)
    if meta.photometric == "MONOCHROME1":
        x = 1.0 - x
    return x.astype(np.float32)
