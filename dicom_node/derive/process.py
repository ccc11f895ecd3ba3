"""One source instance in, one derived instance out: the single function both
``srnode enhance`` and the node's worker call.

    out, res = enhance_instance(ds, engine, settings.derive)
    save_derived(out, path)          # or send ``out`` with C-STORE / STOW-RS

``enhance_instance`` raises ``sr_engine.UnsupportedInput`` (with a plain reason) for
images srnode does not process (colour, float, 1-bit, < 16 px, undecodable); every other
exception is a bug or an engine failure. A whole series goes through
:func:`dicom_node.derive.pipeline.enhance_stream`, which gives the same results with
decoding, inference (several slices per backend call) and derive overlapping.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydicom.dataset import Dataset

from dicom_node.config import DeriveSettings
from dicom_node.derive.instance import derive_instance
from dicom_node.derive.pixels import read_pixels
from sr_engine.meta import PixelMeta, rescale_varies
from sr_engine.model_card import ModelCard

NO_CONSISTENCY_VARIANT = "no-dc"


class EngineLike(Protocol):
    """The part of ``sr_engine.Engine`` used here (the pipeline also uses ``enhance_many``
    where the engine has it)."""

    card: ModelCard
    backend_name: str

    def enhance(self, pixels: np.ndarray, meta: PixelMeta, consistency: bool = True) -> Any: ...


def uid_variant(settings: DeriveSettings) -> str:
    """The UID variant of these settings: empty for the standard output (consistency on)."""
    return "" if settings.data_consistency else NO_CONSISTENCY_VARIANT


def combine_frames(results: list[Any], pixels: np.ndarray) -> Any:
    """One Enhanced from per-frame results (RMSE pooled over all pixels, max of maxima)."""
    rmses = [r.consistency_rmse for r in results]
    maxes = [r.consistency_max_abs for r in results]
    rmse = (
        None
        if any(v is None for v in rmses)
        else math.sqrt(float(np.mean([float(v) ** 2 for v in rmses])))
    )
    worst = None if any(v is None for v in maxes) else max(float(v) for v in maxes)
    seconds = float(sum(float(getattr(r, "seconds", 0.0) or 0.0) for r in results))
    fields = {
        "pixels": pixels,
        "consistency_rmse": rmse,
        "consistency_max_abs": worst,
        "seconds": seconds,
    }
    first = results[0]
    if dataclasses.is_dataclass(first):
        return dataclasses.replace(first, **fields)
    from sr_engine import Enhanced  # the contract's result type

    return Enhanced(**fields)


def enhance_pixels(ds: Dataset, engine: EngineLike, consistency: bool = True) -> Any:
    """Run the engine on the stored pixels of ``ds`` (all frames) -> ``Enhanced``.

    Enhanced multi-frame objects whose rescale differs from frame to frame are run frame
    by frame, each with its own :class:`PixelMeta`.
    """
    pixels = read_pixels(ds)
    if pixels.ndim == 3 and rescale_varies(ds):
        results = [
            engine.enhance(pixels[i], PixelMeta.from_dataset(ds, i), consistency=consistency)
            for i in range(pixels.shape[0])
        ]
        return combine_frames(results, np.stack([np.asarray(r.pixels) for r in results]))
    return engine.enhance(pixels, PixelMeta.from_dataset(ds), consistency=consistency)


def enhance_instance(
    ds: Dataset, engine: EngineLike, settings: DeriveSettings | None = None
) -> tuple[Dataset, Any]:
    """Super-resolve ``ds`` with ``engine`` and build the derived instance.

    Returns ``(derived dataset, Enhanced)``; the dataset carries ``file_meta`` (JPEG 2000
    lossless for a losslessly compressed source, else Explicit VR Little Endian) and
    deterministic UIDs (same source + model + settings -> same UIDs).
    """
    settings = settings or DeriveSettings()
    res = enhance_pixels(ds, engine, consistency=settings.data_consistency)
    out = derive_instance(
        ds,
        res,
        engine.card,
        settings,
        backend=getattr(engine, "backend_name", None),
        variant=uid_variant(settings),
    )
    return out, res


def save_derived(ds: Dataset, path: str | Path) -> Path:
    """Write a derived dataset as a DICOM file (preamble, file meta, its transfer syntax)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
