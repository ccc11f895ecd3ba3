"""Stored values -> the network's [0, 1] float input, by the engine's own mapping.

Training feeds the network exactly what the node feeds it: this module is a thin adapter
over :class:`sr_engine.intensity.IntensityMap` (one implementation, no copy). Every step
is float64 and the result float32: no 8-bit rounding anywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sr_engine.intensity import IntensityMap
from sr_engine.meta import PixelMeta
from sr_engine.model_card import Intensity

# The pixel-module facts of a training image are the engine's PixelMeta.
StoredMeta = PixelMeta


def meta_to_dict(meta: PixelMeta) -> dict[str, Any]:
    """A JSON-ready dict of the meta (``PixelMeta(**d)`` reads it back)."""
    return dataclasses.asdict(meta)


def _intensity(intensity: Intensity | dict) -> Intensity:
    return intensity if isinstance(intensity, Intensity) else Intensity.model_validate(intensity)


def to_unit(frame: np.ndarray, intensity: Intensity | dict, meta: PixelMeta) -> np.ndarray:
    """One stored 2-D frame -> float32 network input, as the engine maps it."""
    return IntensityMap.fit(_intensity(intensity), meta, frame).forward(frame)
