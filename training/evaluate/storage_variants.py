"""The same image in the containers real archives store it in: a model's gain must not depend
on them.

An archive may hold an 8-bit range in a 12- or 16-bit container, a small range with
slope/intercept, signed or unsigned values, MONOCHROME1 or MONOCHROME2. Each variant below
encodes one base image exactly (``stored = a * base + b``), so every variant carries the same
information; the high-resolution truth and its area x2 input are made once in base units and
encoded, the model runs on the encoded input through ``sr_engine.Engine`` as the node runs it,
and the result is decoded and scored against the same truth. The spread of the gain over the
variants of one image is the container dependence (the target is below 0.3 dB).

Base images: a centre crop (``CROP`` pixels) of each unseen benchmark image; for MR and
radiographs requantised to the 8-bit range 0-255 (the case of averaged templates and
secondary captures), for CT its HU clipped to the 12-bit window -1024..3071 (what every CT
container below can hold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sr_engine import consistency as dc
from sr_engine.meta import PixelMeta
from training.evaluate.unseen import ModelRunner, UnseenImage, interpolate, score

CROP = 256
SPREAD_TARGET_DB = 0.3


@dataclass(frozen=True)
class Container:
    """``stored = a * base + b`` in ``dtype`` with ``bits`` stored bits; the tags that make the
    modality values what they are (slope, intercept) and the photometric interpretation."""

    name: str
    dtype: str
    bits: int
    signed: bool
    a: int = 1
    b: int = 0
    slope: float = 1.0
    intercept: float = 0.0
    photometric: str = "MONOCHROME2"

    def meta(self, modality: str) -> PixelMeta:
        return PixelMeta(modality=modality, bits_stored=self.bits,
                         pixel_representation=int(self.signed), rescale_slope=self.slope,
                         rescale_intercept=self.intercept,
                         photometric=self.photometric)  # fmt: skip

    def encode(self, base: np.ndarray) -> np.ndarray:
        return (self.a * base.astype(np.int64) + self.b).astype(self.dtype)

    def decode(self, stored: np.ndarray) -> np.ndarray:
        return (stored.astype(np.float64) - self.b) / self.a


# 0..255 base values (MR, radiographs)
RANGE8 = (
    Container("0-255 in 8 bits", "uint8", 8, False),
    Container("0-255 in 12 bits", "uint16", 12, False),
    Container("0-255 in 16 bits", "uint16", 16, False),
    Container("signed, -1000 + 0-255, intercept 1000", "int16", 16, True, b=-1000,
              intercept=1000.0),
    Container("x16 in 12 bits, slope 1/16", "uint16", 12, False, a=16, slope=1 / 16),
    Container("small range, slope 1.5, intercept -300", "uint16", 12, False, slope=1.5,
              intercept=-300.0),
    Container("MONOCHROME1, 12 bits", "uint16", 12, False, a=-1, b=4095,
              photometric="MONOCHROME1"),
)  # fmt: skip

# HU base values -1024..3071 (CT)
HU12 = (
    Container("signed 16 bits, intercept 0", "int16", 16, True),
    Container("unsigned 12 bits, intercept -1024", "uint16", 12, False, b=1024,
              intercept=-1024.0),
    Container("unsigned 16 bits, intercept -32768", "uint16", 16, False, b=32768,
              intercept=-32768.0),
    Container("signed 16 bits, slope 0.5", "int16", 16, True, a=2, slope=0.5),
)  # fmt: skip


def base_image(img: UnseenImage, crop: int = CROP) -> np.ndarray:
    """The centre crop of ``img`` in the base units of its variants (int64, even edges)."""
    h, w = img.hr.shape
    ch, cw = min(crop, h) // 2 * 2, min(crop, w) // 2 * 2
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    hr = img.hr[y0 : y0 + ch, x0 : x0 + cw].astype(np.float64)
    m = img.meta
    if img.modality == "CT":
        hu = hr * float(m.rescale_slope) + float(m.rescale_intercept)
        return np.clip(np.rint(hu), -1024, 3071).astype(np.int64)
    lo, hi = float(hr.min()), float(hr.max())
    if m.photometric == "MONOCHROME1":  # bright = dense in every base image
        hr = hi + lo - hr
    return np.rint((hr - lo) / max(hi - lo, 1.0) * 255).astype(np.int64)


def containers_for(modality: str) -> Sequence[Container]:
    return HU12 if modality == "CT" else RANGE8


def run_variants(
    images: Sequence[UnseenImage], runners: Sequence[ModelRunner], per_group: int = 2
) -> list[dict[str, Any]]:
    """One row per (image, model, container): gain over bicubic (dB, base units, the range
    of the base truth), the floor's gain, and whether the self-check gave the floor."""
    rows: list[dict[str, Any]] = []
    taken: dict[str, set[str]] = {}
    for img in images:
        stem = img.name.split("_")[0]  # one file per acquisition (RG1_J2KI and RG1_J2KR)
        seen = taken.setdefault(img.group, set())
        if len(seen) >= per_group or stem in seen:
            continue
        serving = [r for r in runners if r.serves(img.modality)]
        if not serving:
            continue
        seen.add(stem)
        base = base_image(img)
        lr = np.rint(dc.area_down(base, 2)).astype(np.int64)
        for c in containers_for(img.modality):
            meta = c.meta(img.modality)
            lr_c = c.encode(lr)
            bic = score(c.decode(interpolate("bicubic", lr_c, meta)), base)["psnr"]
            floor = score(c.decode(interpolate("floor", lr_c, meta)), base)["psnr"]
            for r in serving:
                res = r.engine.enhance(lr_c, meta, consistency=True)
                out = score(c.decode(res.pixels), base)["psnr"]
                rows.append({
                    "image": img.name, "group": img.group, "model": r.label,
                    "container": c.name, "gain": out - bic, "floor_gain": floor - bic,
                    "fell_back": bool(res.detail_weights and res.detail_weights[0] <= 0.0),
                })  # fmt: skip
    return rows


def spreads(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (image, model): min, max and spread of the gain over the containers."""
    out = []
    keys = sorted({(r["image"], r["model"]) for r in rows})
    for image, model in keys:
        g = [r["gain"] for r in rows if r["image"] == image and r["model"] == model]
        out.append({"image": image, "model": model, "min": min(g), "max": max(g),
                    "spread": max(g) - min(g)})  # fmt: skip
    return out


def variants_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The report section: gain per container, spread per image and model."""
    lines = [
        "## Storage variants (gain over bicubic, dB, of the same image in each container)",
        "",
        f"A {CROP}² centre crop of benchmark images, encoded exactly in each container "
        "(:mod:`training.evaluate.storage_variants`); *floor* marks the self-check's fallback. The "
        f"target: a spread below {SPREAD_TARGET_DB} dB.",
        "",
        "| image | model | container | gain | floor's gain | self-check |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['image']} | {r['model']} | {r['container']} | {r['gain']:+.2f} "
            f"| {r['floor_gain']:+.2f} | {'floor' if r['fell_back'] else 'network'} |"
        )
    lines += ["", "| image | model | min | max | spread |", "|---|---|---|---|---|"]
    for s in spreads(rows):
        flag = "" if s["spread"] < SPREAD_TARGET_DB else " ⚠"
        lines.append(
            f"| {s['image']} | {s['model']} | {s['min']:+.2f} | {s['max']:+.2f} "
            f"| {s['spread']:.3f}{flag} |"
        )
    return lines
