"""Stored pixel values from a DICOM data set, and the checks that say whether the engine
can super-resolve them: the one reader the node, training and the benchmarks use.

Every transfer syntax pydicom 3 decodes with the pylibjpeg plugins works here: native
little and big endian, deflated, RLE, JPEG baseline/extended/lossless, JPEG-LS and
JPEG 2000. The values returned are the *stored* values (no modality LUT, no VOI),
native byte order, signed exactly when PixelRepresentation is 1: what
:meth:`sr_engine.Engine.enhance` takes. The data set is a pydicom ``Dataset``; pydicom is
not imported here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sr_engine.errors import UnsupportedInput
from sr_engine.intensity import MIN_EDGE
from sr_engine.meta import PixelMeta

__all__ = [
    "MIN_EDGE",
    "check_supported",
    "is_multiframe",
    "read_image",
    "read_pixels",
    "stored_dtype",
]


def _frames(ds: Any) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def is_multiframe(ds: Any) -> bool:
    """True when the object stores its pixels as frames (``NumberOfFrames`` present)."""
    return "NumberOfFrames" in ds or "PerFrameFunctionalGroupsSequence" in ds


def check_supported(ds: Any) -> None:
    """Raise :class:`UnsupportedInput` with a plain reason if ``ds`` cannot be enhanced.

    Refused: no pixel data, float pixel data, colour (RGB, YBR, palette), 1-bit (and any
    other bit depth but 8 and 16), images with an edge shorter than ``MIN_EDGE`` pixels.
    Only the header is read: nothing is decoded.
    """
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise UnsupportedInput("float pixel data is not supported (integer images only)")
    if "PixelData" not in ds:
        raise UnsupportedInput("the object has no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric == "PALETTE COLOR":
        raise UnsupportedInput("palette colour images are not supported (greyscale only)")
    if spp != 1 or (photometric and photometric not in ("MONOCHROME1", "MONOCHROME2")):
        kind = photometric or f"{spp} samples per pixel"
        raise UnsupportedInput(f"colour images ({kind}) are not supported (greyscale only)")
    if "BitsAllocated" not in ds or not ds.BitsAllocated:
        raise UnsupportedInput("the pixel module is incomplete (no BitsAllocated)")
    bits_allocated = int(ds.BitsAllocated)
    if bits_allocated == 1:
        raise UnsupportedInput("1-bit (binary) pixel data is not supported")
    if bits_allocated not in (8, 16):
        raise UnsupportedInput(
            f"{bits_allocated}-bit pixel data is not supported (8 or 16 bits allocated)"
        )
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if min(rows, cols) < MIN_EDGE:
        raise UnsupportedInput(
            f"image is {cols}x{rows} pixels; srnode needs at least {MIN_EDGE}x{MIN_EDGE}"
        )


def stored_dtype(ds: Any) -> np.dtype:
    """The numpy dtype that holds this object's stored values (native byte order)."""
    bits_allocated = int(ds.get("BitsAllocated", 16) or 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    return np.dtype(f"{'i' if signed else 'u'}{bits_allocated // 8}")


def read_pixels(ds: Any) -> np.ndarray:
    """Stored values as (H, W), or (frames, H, W) for a multi-frame object.

    Checks :func:`check_supported` first. Decoding failures (a missing plugin, a broken
    codestream) become :class:`UnsupportedInput` with the decoder's reason.
    """
    check_supported(ds)
    try:
        arr = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - any decoder error is one plain reason
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", None) or str(ts or "unknown transfer syntax")
        raise UnsupportedInput(f"pixel data could not be decoded ({name}): {e}") from None
    target = stored_dtype(ds)
    arr = np.asarray(arr)
    if arr.dtype != target:
        # big endian or a decoder that returned a wider type: values are within range
        arr = arr.astype(target)
    n = _frames(ds)
    if is_multiframe(ds) and arr.ndim == 2:
        arr = arr[np.newaxis]
    expected = (int(ds.Rows), int(ds.Columns))
    if arr.shape[-2:] != expected or (arr.ndim == 3 and arr.shape[0] != n):
        raise UnsupportedInput(
            f"decoded pixel array has shape {arr.shape}, expected {n} frame(s) of {expected}"
        )
    return np.ascontiguousarray(arr)


def read_image(ds: Any) -> tuple[np.ndarray, PixelMeta]:
    """:func:`read_pixels` and :meth:`PixelMeta.from_dataset` of the same data set.

    For an enhanced multi-frame object the meta is its first frame's; a frame whose
    rescale differs takes ``PixelMeta.from_dataset(ds, frame)``.
    """
    return read_pixels(ds), PixelMeta.from_dataset(ds)
