"""Invented grain: noise power by frequency band in flat patches, output against the truth.

A network that takes noise for structure sharpens it into a fine grain that no acquisition
holds. In the flattest ``SIZE``² patches of each benchmark image (no padding, no background at
the image's lowest or highest value), the power spectrum (Hann window, mean removed) is summed
over two radial bands of the high-resolution grid, as fractions of its Nyquist frequency:

* ``input`` (0-0.5): what the x2 input also holds (a data-consistent output keeps it, and the
  input's aliased noise with it);
* ``sub-pixel`` (above 0.5): what only the high-resolution grid holds, the band a x2 method
  invents.

Each method's band power is compared with the original's (the truth) in the same patches. A
method is noisier than the original in a band when its power exceeds the original's by more
than the rounding to stored integers adds (variance 1/12 spread evenly over the spectrum: its
share of the band, :func:`rounding_power`), which every stored output carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SIZE = 32
COUNT = 4
BANDS = (("input", 0.0, 0.5), ("sub-pixel", 0.5, np.inf))
FLAT_FACTOR = 2.0  # patches up to this many times the flattest one's std


def flat_patches(hr: np.ndarray, size: int = SIZE, count: int = COUNT) -> list[tuple[int, int]]:
    """Top-left corners of the ``count`` flattest non-overlapping ``size``² patches of ``hr``
    that hold neither its lowest nor its highest value (padding, background, burned-in text),
    are not constant, and have at most :data:`FLAT_FACTOR` times the flattest one's std."""
    lo, hi = hr.min(), hr.max()
    cands = []
    for y in range(0, hr.shape[0] - size + 1, size // 2):
        for x in range(0, hr.shape[1] - size + 1, size // 2):
            b = hr[y : y + size, x : x + size]
            if b.min() > lo and b.max() < hi and b.std() > 0:
                cands.append((float(b.std()), y, x))
    cands.sort()
    cands = [c for c in cands if c[0] <= FLAT_FACTOR * cands[0][0]]
    return apart(cands, size, count)


def apart(cands: Sequence[tuple[float, int, int]], size: int, count: int) -> list[tuple[int, int]]:
    """Top-left corners of the first ``count`` of ``(score, y, x)`` candidates whose ``size``
    patches do not overlap one already taken."""
    picked: list[tuple[int, int]] = []
    for _, y, x in cands:
        if all(abs(y - py) >= size or abs(x - px) >= size for py, px in picked):
            picked.append((y, x))
        if len(picked) == count:
            break
    return picked


def band_power(patch: np.ndarray) -> dict[str, float]:
    """Power (mean square, per pixel) of ``patch`` in each band of :data:`BANDS`."""
    n = patch.shape[0]
    w = np.hanning(n)[:, None] * np.hanning(patch.shape[1])[None, :]
    p = patch.astype(np.float64)
    spec = np.abs(np.fft.fft2((p - p.mean()) * w)) ** 2 / (w**2).sum()
    fy = np.fft.fftfreq(p.shape[0])[:, None]
    fx = np.fft.fftfreq(p.shape[1])[None, :]
    r = np.sqrt(fy**2 + fx**2) / 0.5  # 1 = Nyquist along an axis
    return {name: float(spec[(r > lo) & (r <= hi)].sum() / p.size) for name, lo, hi in BANDS}


def rounding_power(size: int = SIZE) -> dict[str, float]:
    """What rounding to integers adds to each band (uniform error, variance 1/12)."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    r = np.sqrt(fy**2 + fx**2) / 0.5
    return {name: float(((r > lo) & (r <= hi)).mean() / 12) for name, lo, hi in BANDS}


def noise_bands(
    images: Sequence[Any], outputs: dict[str, dict[str, np.ndarray]]
) -> list[dict[str, Any]]:
    """One row per (image, method): band powers of the original and of the method in the same
    flat patches, and their ratios (method / original)."""
    rows = []
    for img in images:
        outs = outputs.get(img.name)
        if not outs:
            continue
        corners = flat_patches(img.hr)
        if not corners:
            continue

        def mean_power(a: np.ndarray, corners: list[tuple[int, int]] = corners) -> dict:
            ps = [band_power(a[y : y + SIZE, x : x + SIZE]) for y, x in corners]
            return {b: float(np.mean([p[b] for p in ps])) for b, _, _ in BANDS}

        orig = mean_power(img.hr)
        allow = rounding_power()
        for method, out in outs.items():
            if method == "nearest":
                continue
            pw = mean_power(out)
            rows.append({
                "image": img.name, "group": img.group, "method": method,
                "patches": len(corners), "original": orig, "power": pw,
                "ratio": {b: pw[b] / orig[b] if orig[b] > 0 else np.inf for b in pw},
                "noisier": [b for b in pw if pw[b] > orig[b] + allow[b]],
            })  # fmt: skip
    return rows


def noise_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group and method: the largest ratio to the original in each band, and how many
    images exceed the original in any band."""
    out = []
    for g in sorted({r["group"] for r in rows}):
        grp = [r for r in rows if r["group"] == g]
        for m in dict.fromkeys(r["method"] for r in grp):
            have = [r for r in grp if r["method"] == m]
            out.append({
                "group": g, "method": m, "n": len(have),
                "max_ratio": {b: max(r["ratio"][b] for r in have) for b, _, _ in BANDS},
                "median_ratio": {b: float(np.median([r["ratio"][b] for r in have]))
                                 for b, _, _ in BANDS},
                "noisier": sum(bool(r["noisier"]) for r in have),
            })  # fmt: skip
    return out


def noise_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The report section: per image and method, band power relative to the original."""
    lines = [
        f"## Noise by band in flat {SIZE}² patches (power relative to the original)",
        "",
        "The flattest patches of each image without padding or background "
        "(:mod:`training.evaluate.unseen_noise`). *input*: frequencies up to half the high-"
        "resolution Nyquist, which the x2 input also holds; *sub-pixel*: above it, the band a x2 "
        "method invents. ⚠: more power than the original beyond what rounding to stored integers "
        "adds. A data-consistent output keeps the input's aliased noise in the input band (the "
        "floor shows it too); invented grain shows in the sub-pixel band.",
        "",
        "| image | method | patches | input | sub-pixel |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"{r['ratio'][b]:.2f}{' ⚠' if b in r['noisier'] else ''}" for b, _, _ in BANDS]
        row = f"| {r['image']} | {r['method']} | {r['patches']} | "
        lines.append(row + " | ".join(cells) + " |")
    lines += ["", "| modality | method | n | largest ratio: input | sub-pixel | images noisier |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for s in noise_summary(rows):
        lines.append(
            f"| {s['group']} | {s['method']} | {s['n']} | {s['max_ratio']['input']:.2f} "
            f"| {s['max_ratio']['sub-pixel']:.2f} | {s['noisier']} |"
        )
    return lines
