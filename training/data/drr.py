"""Radiograph-like training images: digitally reconstructed radiographs (DRRs) from CT.

No real radiograph at native bit depth is packaged anywhere this project can reach, so the
general model learns radiographs from projections of the CT volumes:

1. HU -> linear attenuation ``mu = mu_water * (1 + HU / 1000)`` (>= 0; ``mu_water`` about
   0.02 /mm at a 60 keV effective energy);
2. the volume is turned about its long axis by the projection angle and integrated along
   the beam (parallel beam): ``L = sum(mu) * dy``;
3. the projection is resampled along the slice axis to the in-plane pixel size (thick CT
   slices make the DRR smooth in that direction, a limit stated in the card);
4. Beer–Lambert: ``N = N0 * exp(-L)`` photons per pixel, Poisson noise (its Gaussian
   approximation), detector blur (scintillator light spread: Gaussian after the quantum
   noise, so the noise is correlated as in a real detector), electronic Gaussian noise;
5. the log image ``-log(N / N0)`` (bright = dense), windowed to its 0.1–99.9 percentiles
   and quantised to ``bits`` (10–15) stored bits, as MONOCHROME2, or inverted as
   MONOCHROME1.

A real detector's pixels (0.1–0.2 mm) are finer than a CT's (0.5–1 mm): the projection is
resampled by ``zoom`` (1–3) before the exposure, so the anatomy is smooth at the pixel
scale and the noise is the detector's, as in real CR/DX. The man-made parts of a real
radiograph (collimation, lead markers, burned-in text, electronic shutters) are drawn in
by :mod:`training.data.overlays`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from sr_engine.meta import PixelMeta
from training.data.overlays import Overlays, attenuate, burn_in, random_overlays
from training.data.readers import Volume

MU_WATER_PER_MM = 0.02


@dataclass(frozen=True)
class DrrParams:
    angle_deg: float = 0.0
    photons: float = 2e4  # expected counts of an unattenuated detector pixel
    blur_px: float = 0.7  # detector blur (Gaussian sigma, output pixels)
    read_sigma: float = 3.0  # electronic noise (counts)
    bits: int = 12
    monochrome1: bool = False
    zoom: float = 1.0  # detector pixels per CT pixel


def hu_volume(vol: Volume) -> np.ndarray:
    m = vol.meta
    return vol.array.astype(np.float32) * float(m.rescale_slope) + float(m.rescale_intercept)


def line_integrals(hu: np.ndarray, spacing: tuple[float, float, float], angle: float) -> np.ndarray:
    """Parallel-beam line integrals of attenuation through ``hu`` (z, y, x) at ``angle``
    degrees about z, resampled along z to the in-plane pixel size: (Z', X)."""
    from scipy import ndimage

    mu = np.clip(MU_WATER_PER_MM * (1.0 + hu / 1000.0), 0.0, None).astype(np.float32)
    if angle % 360:
        mu = ndimage.rotate(mu, angle, axes=(1, 2), reshape=False, order=1, cval=0.0)
    proj = mu.sum(axis=1) * float(spacing[1])  # (z, x)
    dz, dx = float(spacing[0]), float(spacing[2])
    if abs(dz - dx) > 1e-3:
        proj = ndimage.zoom(proj, (dz / dx, 1.0), order=3, mode="nearest")
    return np.clip(proj, 0.0, None)


def expose(
    proj: np.ndarray, p: DrrParams, rng: np.random.Generator
) -> tuple[np.ndarray, PixelMeta]:
    """Beer–Lambert, quantum and electronic noise, detector blur, log, quantisation."""
    from scipy import ndimage

    n = p.photons * np.exp(-proj)
    n = n + rng.standard_normal(n.shape) * np.sqrt(n)  # Poisson, Gaussian approximation
    if p.blur_px > 0:
        n = ndimage.gaussian_filter(n, p.blur_px)
    n = n + rng.standard_normal(n.shape) * p.read_sigma
    log_img = -np.log(np.clip(n, 1.0, None) / p.photons)
    lo, hi = np.percentile(log_img, [0.1, 99.9])
    top = (1 << p.bits) - 1
    stored = np.rint(np.clip((log_img - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * top)
    if p.monochrome1:
        stored = top - stored
    meta = PixelMeta(
        modality="DX",
        bits_stored=p.bits,
        pixel_representation=0,
        photometric="MONOCHROME1" if p.monochrome1 else "MONOCHROME2",
    )
    return stored.astype(np.uint16), meta


def random_params(rng: np.random.Generator, angle: float) -> DrrParams:
    return DrrParams(
        angle_deg=angle,
        photons=float(np.exp(rng.uniform(np.log(2e3), np.log(5e4)))),
        blur_px=float(rng.uniform(0.4, 1.2)),
        read_sigma=float(rng.uniform(0.0, 5.0)),
        bits=int(rng.integers(10, 16)),
        monochrome1=bool(rng.random() < 0.5),
        zoom=float(rng.choice([1.0, 1.5, 2.0, 3.0])),
    )


def drr_images(
    vol: Volume, angles: tuple[float, ...] = (0.0, 30.0, 60.0, 90.0, 120.0, 150.0), seed: int = 0
) -> list[tuple[Volume, DrrParams, Overlays]]:
    """One radiograph-like image (a 1-slice Volume, stored uint16) per angle, with its
    exposure and its man-made parts drawn at random."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    hu = hu_volume(vol)
    out = []
    for a in angles:
        p = random_params(rng, a)
        ov = random_overlays(rng)
        proj = line_integrals(hu, vol.spacing, a)
        if p.zoom != 1.0:
            proj = np.clip(ndimage.zoom(proj, p.zoom, order=3, mode="nearest"), 0.0, None)
        img, meta = expose(attenuate(proj, ov), p, rng)
        img = burn_in(img, ov, (1 << p.bits) - 1)
        px = vol.spacing[2] / p.zoom
        v = Volume(img[None], (1.0, px, px), replace(meta), vol.subject, f"DRR of {vol.source}")
        out.append((v, p, ov))
    return out
