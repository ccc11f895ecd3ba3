"""What the engine needs to know about stored pixels, independent of pydicom."""

from __future__ import annotations

from dataclasses import dataclass


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

    @property
    def stored_min(self) -> int:
        return -(1 << (self.bits_stored - 1)) if self.pixel_representation else 0

    @property
    def stored_max(self) -> int:
        if self.pixel_representation:
            return (1 << (self.bits_stored - 1)) - 1
        return (1 << self.bits_stored) - 1
