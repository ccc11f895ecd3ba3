"""Stored pixel values from a pydicom Dataset, and the checks that say whether srnode can
super-resolve them.

Every transfer syntax pydicom 3 decodes with the pylibjpeg plugins works here: native
little and big endian, deflated, RLE, JPEG baseline/extended/lossless, JPEG-LS and
JPEG 2000. The values returned are the *stored* values (no modality LUT, no VOI),
native byte order, signed exactly when PixelRepresentation is 1: what
``sr_engine.Engine.enhance`` takes.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from sr_engine.errors import UnsupportedInput

MIN_EDGE = 16  # smaller images are refused: a network needs some context


def _frames(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def is_multiframe(ds: Dataset) -> bool:
    """True when the object stores its pixels as frames (``NumberOfFrames`` present)."""
    return "NumberOfFrames" in ds or "PerFrameFunctionalGroupsSequence" in ds


def check_supported(ds: Dataset) -> None:
    """Raise :class:`UnsupportedInput` with a plain reason if ``ds`` cannot be enhanced.

    Refused: no pixel data, float pixel data, colour (RGB, YBR, palette), 1-bit (and any
    other bit depth but 8 and 16), images with an edge shorter than 16 pixels.
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


def stored_dtype(ds: Dataset) -> np.dtype:
    """The numpy dtype that holds this object's stored values (native byte order)."""
    bits_allocated = int(ds.get("BitsAllocated", 16) or 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    return np.dtype(f"{'i' if signed else 'u'}{bits_allocated // 8}")


def read_pixels(ds: Dataset) -> np.ndarray:
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
