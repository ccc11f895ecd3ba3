"""From prepared volumes to network-ready images and random training patches.

Images are mapped to [0, 1] by the card's intensity model exactly as the engine maps
them (:mod:`training.data.intensity`), one 2-D image at a time, after the engine's padding
fill (:mod:`sr_engine.padding`): padding and constant backgrounds touching the border are
replaced by the tissue next to them, as the node does before inference, so the network is
never trained on them as tissue.

Augmentation (training only): 90-degree rotations and flips, random scaling (a crop of
``patch * z`` pixels resized to ``patch``, z in ``scale_range``), optional intensity
augmentation (gamma and contrast; for the ``bits_stored`` general model that must serve
radiographs of any exposure), optional synthetic Gaussian noise on the LR input, and an
optional share of realistic degradations. Optional target preprocessing (contrast
stretch, light denoising of the HR targets) is off by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from sr_engine.padding import find_padding
from training.data.intensity import StoredMeta, to_unit


def _meta(doc: dict) -> StoredMeta:
    return StoredMeta(**doc["meta"])


def split_images(
    prepared: Sequence[dict],
    split: str,
    intensity: Any,
    axes: Sequence[int] = (0,),
    min_foreground: float = 0.10,
    min_edge: int = 32,
) -> list[np.ndarray]:
    """2-D float32 images of ``split`` from prepared volumes.

    Along axis 0 each slice of the split's slabs is one image; along axes 1 and 2 the
    images are cut from the slab sub-volume only (never crossing into another split).
    Images with less than ``min_foreground`` of their pixels above 0.1 (background,
    vertex, neck) are left out.
    """
    out: list[np.ndarray] = []
    for doc in prepared:
        vol = doc["volume"]
        meta = _meta(doc)
        for a, b in doc["slabs"].get(split, []):
            sub = vol[a:b]
            for axis in axes:
                for k in range(sub.shape[axis]):
                    frame = np.take(sub, k, axis=axis)
                    if min(frame.shape) < min_edge:
                        continue
                    pad = find_padding(frame, meta)  # as the engine: never seen as tissue
                    x = to_unit(frame if pad is None else pad.fill_input(frame), intensity, meta)
                    if float((x > 0.1).mean()) < min_foreground:
                        continue
                    out.append(x)
    return out


def preprocess_target(x: np.ndarray, contrast: bool = False, denoise: float = 0.0) -> np.ndarray:
    """Optional target preprocessing (off by default): contrast stretch to the 0.5-99.5
    percentiles and Gaussian denoising with sigma ``denoise`` pixels."""
    if contrast:
        lo, hi = np.percentile(x, [0.5, 99.5])
        if hi > lo:
            x = ((x - lo) / (hi - lo)).astype(np.float32)
    if denoise > 0:
        from scipy.ndimage import gaussian_filter

        x = gaussian_filter(x, denoise).astype(np.float32)
    return x


@dataclass
class Augment:
    rot_flip: bool = True
    scale_range: tuple[float, float] = (0.8, 1.25)
    intensity: bool = False  # gamma, contrast and offset (see PatchSampler._one)
    noise_prob: float = 0.0  # probability of Gaussian noise on the LR input
    noise_sigma: float = 0.01  # its maximum std
    realistic_prob: float = 0.0  # share of realistic degradations (kspace / blur_noise)
    # share of HR patches made as MR scanners display a small acquisition matrix: zero-filled
    # in k-space to a larger one (sinc interpolation), by a factor in interp_factor
    interp_prob: float = 0.0
    interp_factor: tuple[float, float] = (1.4, 2.0)
    # share of those with fewer phase-encoding lines than readout samples: one axis (at
    # random) is interpolated by a further factor of 1-2 (a 256x134 matrix shown at 484²)
    interp_anisotropic: float = 0.0
    min_std: float = 0.01  # reject flat (background) patches


def fourier_upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """``[1, 1, ch, cw]`` -> ``[1, 1, size, size]`` by zero-filling its centred spectrum, the
    way MR scanners reconstruct a small acquisition matrix to a larger display matrix (sinc
    interpolation; magnitude images stay non-negative). Mirrored first, so the periodic FFT
    sees no jump at the crop's edges."""
    ch, cw = x.shape[-2:]
    m = torch.cat([x, x.flip(-1)], -1)
    m = torch.cat([m, m.flip(-2)], -2).double()  # even-symmetric: no wrap-around edge
    n = 2 * size
    spec = torch.fft.fftshift(torch.fft.fft2(m), dim=(-2, -1))
    py, px = (n - 2 * ch) // 2, (n - 2 * cw) // 2
    spec = F.pad(spec, (px, n - 2 * cw - px, py, n - 2 * ch - py))
    up = torch.fft.ifft2(torch.fft.ifftshift(spec, dim=(-2, -1))).real * (n * n) / (4 * ch * cw)
    return up[..., :size, :size].clamp_min(0).to(x.dtype).contiguous()


class PatchSampler:
    """Random HR patches ``[B, 1, P, P]`` on ``device`` from a list of 2-D images.

    Patches are cut and augmented on the CPU (cheap, no GPU syncs) and moved as a batch.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        patch: int,
        device: torch.device | str = "cpu",
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        if not images:
            raise ValueError("no training images (check the split and the data folder)")
        self.patch = patch
        self.augment = augment or Augment()
        self.device = torch.device(device)
        small = [im.shape for im in images if min(im.shape) < patch]
        self.images = [torch.from_numpy(im) for im in images if min(im.shape) >= patch]
        if not self.images:
            raise ValueError(f"all {len(small)} images are smaller than the patch size {patch}")
        areas = np.array([im.numel() for im in self.images], np.float64)
        self.p = areas / areas.sum()
        self.rng = np.random.default_rng(seed)

    def _one(self) -> torch.Tensor:
        a, r, p = self.augment, self.rng, self.patch
        interp = a.interp_prob > 0 and r.random() < a.interp_prob
        for _ in range(10):
            im = self.images[r.choice(len(self.images), p=self.p)]
            h, w = im.shape
            z = r.uniform(*a.scale_range) if a.scale_range != (1.0, 1.0) else 1.0
            zy = zx = z
            if interp:
                zy = zx = 1.0 / r.uniform(*a.interp_factor)
                if a.interp_anisotropic > 0 and r.random() < a.interp_anisotropic:
                    k = r.uniform(1.0, 2.0)
                    zy, zx = (zy / k, zx) if r.random() < 0.5 else (zy, zx / k)
            ch, cw = int(min(round(p * zy), h, w)), int(min(round(p * zx), h, w))
            y0, x0 = int(r.integers(0, h - ch + 1)), int(r.integers(0, w - cw + 1))
            crop = im[y0 : y0 + ch, x0 : x0 + cw][None, None]
            if interp and ch <= p and cw <= p and (ch, cw) != (p, p):
                crop = fourier_upsample(crop, p)
            elif (ch, cw) != (p, p):
                crop = F.interpolate(
                    crop,
                    size=(p, p),
                    mode="bicubic",
                    align_corners=False,
                    antialias=max(ch, cw) > p,
                )
            if float(crop.std()) >= a.min_std:
                break
        if a.rot_flip:
            crop = torch.rot90(crop, int(r.integers(0, 4)), dims=(2, 3))
            if r.random() < 0.5:
                crop = torch.flip(crop, dims=(3,))
        if a.intensity:
            # gamma, then either a plain contrast scale or a narrow window at an offset
            # (signed data or MONOCHROME1 radiographs sit high in the stored range)
            g = r.uniform(0.7, 1.5)
            crop = crop.clamp_min(0) ** g
            crop = crop / max(float(crop.max()), 1.0)
            if r.random() < 0.5:
                crop = crop * r.uniform(0.4, 1.0)
            else:
                scale = float(np.exp(r.uniform(np.log(0.03), np.log(0.6))))
                crop = crop * scale + r.uniform(0.0, 1.0 - scale)
        return crop

    def sample(self, batch: int) -> torch.Tensor:
        out = torch.cat([self._one() for _ in range(batch)], 0).contiguous()
        if self.device.type == "cuda":
            return out.pin_memory().to(self.device, non_blocking=True)
        return out.to(self.device)
