"""What the engine needs to know about stored pixels, independent of pydicom."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PixelMeta:
    """Pixel-module facts of one image (DICOM tags, already read by the caller).

    ``bits_stored`` and ``pixel_representation`` define the stored range that every output
    value is clipped to; ``rescale_slope``/``rescale_intercept`` map stored values to
    modality values (HU for CT).
    """

    modality: str = "OT"
    bits_stored: int = 16
    pixel_representation: int = 0  # 0 = unsigned, 1 = two's complement
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    photometric: str = "MONOCHROME2"
    samples_per_pixel: int = 1
    padding_value: int | None = None  # PixelPaddingValue (stored units)
    padding_range_limit: int | None = None  # PixelPaddingRangeLimit (stored units)

    @classmethod
    def from_dataset(cls, ds: Any, frame: int | None = None) -> PixelMeta:
        """The one way from a DICOM data set (pydicom ``Dataset``) to a ``PixelMeta``.

        ``frame`` selects the per-frame rescale of an enhanced multi-frame object (its
        first frame when omitted); classic objects use the top-level RescaleSlope/Intercept.
        """
        if frame is None and ds.get("PerFrameFunctionalGroupsSequence"):
            frame = 0
        slope, intercept = frame_rescale(ds, frame)
        bits_allocated = int(ds.get("BitsAllocated", 16) or 16)
        bits_stored = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
        return cls(
            modality=str(ds.get("Modality", "OT") or "OT"),
            bits_stored=min(bits_stored, bits_allocated),
            pixel_representation=int(ds.get("PixelRepresentation", 0) or 0),
            rescale_slope=slope,
            rescale_intercept=intercept,
            photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip(),
            samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
            padding_value=_int_or_none(ds.get("PixelPaddingValue")),
            padding_range_limit=_int_or_none(ds.get("PixelPaddingRangeLimit")),
        )

    @property
    def stored_min(self) -> int:
        return -(1 << (self.bits_stored - 1)) if self.pixel_representation else 0

    @property
    def stored_max(self) -> int:
        if self.pixel_representation:
            return (1 << (self.bits_stored - 1)) - 1
        return (1 << self.bits_stored) - 1


def _int_or_none(value: Any) -> int | None:
    """A US/SS tag value (pydicom may keep it as raw bytes when the VR is ambiguous)."""
    if value is None or value == "":
        return None
    if isinstance(value, bytes):
        return int.from_bytes(value[:2], "little", signed=False) if len(value) >= 2 else None
    if isinstance(value, list | tuple):
        value = value[0] if value else None
        return None if value is None else int(value)
    return int(value)


def _first_item(ds: Any, keyword: str) -> Any:
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _functional_groups(ds: Any, frame: int | None) -> list[Any]:
    """The per-frame item of ``frame`` (if any) then the shared item (if any)."""
    out: list[Any] = []
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per and frame is not None and frame < len(per):
        out.append(per[frame])
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    if shared is not None:
        out.append(shared)
    return out


def frame_rescale(ds: Any, frame: int | None = None) -> tuple[float, float]:
    """(slope, intercept) of one frame: top level, or the Pixel Value Transformation
    functional group (per-frame before shared) of an enhanced multi-frame object."""
    for holder in _functional_groups(ds, frame):
        item = _first_item(holder, "PixelValueTransformationSequence")
        if item is not None and "RescaleSlope" in item:
            return float(item.RescaleSlope), float(item.get("RescaleIntercept", 0.0))
    slope = ds.get("RescaleSlope", 1.0)
    intercept = ds.get("RescaleIntercept", 0.0)
    return float(slope if slope not in (None, "") else 1.0), float(intercept or 0.0)


def rescale_varies(ds: Any) -> bool:
    """True when an enhanced object has different rescale values from frame to frame."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if not per:
        return False
    first = frame_rescale(ds, 0)
    return any(frame_rescale(ds, i) != first for i in range(1, len(per)))
