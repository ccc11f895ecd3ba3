"""Degradation operators that make the low-resolution (LR) network inputs from HR images.

All operators take and return float tensors ``[N, C, H, W]`` (any float dtype, CPU or
GPU) in the network's [0, 1] intensity space. Nothing is rounded or quantised: 12/16-bit
and float data stay float end to end.

``area``, ``bicubic`` and ``kspace`` are the engine's operators
(:func:`sr_engine.consistency.degrade`, the forward model its data-consistency step
enforces), applied to tensors: ``area`` as the block mean, the other two with the engine's
own per-axis matrices (:func:`sr_engine.consistency.axis_matrices`). A network is trained on
exactly the LR the node holds its output to, so that step leaves the ground truth in place.

* ``area`` (the default): mean of each ``scale x scale`` block.
* ``bicubic``: antialiased bicubic downsampling (a = -0.5, edges clamped).
* ``kspace``: MR acquired at lower resolution and shown as a magnitude image: the central
  ``1/scale`` of k-space in each direction (truncation, hence Gibbs ringing), then the
  magnitude; optionally with complex Gaussian noise added before the magnitude (Rician
  noise).
* ``blur_noise`` (augmentation only): CT / X-ray: Gaussian blur of the system's
  point-spread function, area downsampling, then Poisson-Gaussian noise (signal-dependent
  quantum noise + electronic noise). The engine enforces its area part.

HR images must have a height and width divisible by ``scale``; ``crop_to_multiple``
crops them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from sr_engine.consistency import OPERATORS, axis_matrices


def crop_to_multiple(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the last two dims so each is a multiple of ``scale`` (bottom/right)."""
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


def _check(x: torch.Tensor, scale: int) -> None:
    if x.ndim != 4:
        raise ValueError(f"degradation expects [N, C, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"degradation expects a float tensor, got {x.dtype}")
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not divisible by scale {scale}: crop_to_multiple")


def area(x: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """Block mean over ``scale x scale`` pixels (the engine's data-consistency operator)."""
    _check(x, scale)
    return F.avg_pool2d(x, kernel_size=scale, stride=scale)


_AXES: dict[tuple[str, int, int, torch.device, torch.dtype], torch.Tensor] = {}


def _axis(op: str, n: int, scale: int, like: torch.Tensor) -> torch.Tensor:
    """The engine's matrix of ``op`` along one axis (``n`` LR samples), as a tensor."""
    key = (op, n, scale, like.device, like.dtype)
    if key not in _AXES:
        _AXES[key] = torch.from_numpy(axis_matrices(op, n, scale)[0]).to(like.device, like.dtype)
    return _AXES[key]


def _separable(op: str, x: torch.Tensor, scale: int) -> torch.Tensor:
    _check(x, scale)
    h, w = x.shape[-2:]
    return _axis(op, h // scale, scale, x) @ x @ _axis(op, w // scale, scale, x).T


def bicubic(x: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """Antialiased bicubic downsampling by ``scale`` (the engine's matrices)."""
    return _separable("bicubic", x, scale)


def kspace(
    x: torch.Tensor,
    scale: int = 2,
    noise_sigma: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The central ``H/scale x W/scale`` of the spectrum, then the magnitude image.

    ``noise_sigma`` is the standard deviation (in [0, 1] image units, per real/imaginary
    channel) of complex white noise added before the magnitude, i.e. Rician noise.
    """
    low = _separable("kspace", x, scale)
    if noise_sigma <= 0:
        return low.abs()
    re = torch.randn(low.shape, generator=generator, device="cpu").to(low.device, low.dtype)
    im = torch.randn(low.shape, generator=generator, device="cpu").to(low.device, low.dtype)
    return torch.hypot(low + noise_sigma * re, noise_sigma * im)


def gaussian_kernel(sigma: float, device: torch.device | None = None) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (t / max(sigma, 1e-6)) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding; ``sigma`` in HR pixels."""
    if sigma <= 0:
        return x
    k = gaussian_kernel(sigma, x.device).to(x.dtype)
    r = k.numel() // 2
    c = x.shape[1]
    kh = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    kv = k.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), kh, groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), kv, groups=c)


def blur_noise(
    x: torch.Tensor,
    scale: int = 2,
    blur_sigma: float = 0.6,
    photons: float = 0.0,
    read_sigma: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian PSF blur, area downsampling, Poisson-Gaussian noise.

    ``photons``: expected counts at intensity 1.0 (0 = no quantum noise); the Poisson part
    is drawn with the Gaussian approximation N(0, x / photons) so that it stays float and
    differentiable-free of integer rounding. ``read_sigma``: electronic noise std.
    """
    _check(x, scale)
    y = area(gaussian_blur(x, blur_sigma), scale)
    if photons > 0 or read_sigma > 0:
        n = torch.randn(y.shape, generator=generator, device="cpu").to(y.device, y.dtype)
        var = torch.zeros_like(y)
        if photons > 0:
            var = var + y.clamp_min(0) / photons
        var = var + read_sigma**2
        y = y + n * var.sqrt()
    return y


_OPS: dict[str, Callable[..., torch.Tensor]] = {
    "area": area,
    "bicubic": bicubic,
    "kspace": kspace,
    "blur_noise": blur_noise,
}


def degrade(x: torch.Tensor, operator: str = "area", scale: int = 2, **kw: Any) -> torch.Tensor:
    """Apply the operator named ``operator`` (one of OPERATORS) to ``x``."""
    try:
        op = _OPS[operator]
    except KeyError:
        raise ValueError(
            f"unknown degradation {operator!r}; known: {', '.join(OPERATORS)}"
        ) from None
    return op(x, scale, **kw)


def degrade_np(img: np.ndarray, operator: str = "area", scale: int = 2, **kw: Any) -> np.ndarray:
    """numpy ``(H, W)`` float -> ``(H/s, W/s)`` float32 (H, W cropped to a multiple of s)."""
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
    return degrade(crop_to_multiple(t, scale), operator, scale, **kw)[0, 0].numpy()


def random_realistic(
    x: torch.Tensor, scale: int, kind: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Randomised realistic degradation for augmentation: ``kind`` = ``mr`` or ``ct``/``xr``."""

    def u(a: float, b: float) -> float:
        return a + (b - a) * float(torch.rand((), generator=generator))

    if kind == "mr":
        return kspace(x, scale, noise_sigma=u(0.0, 0.02), generator=generator)
    return blur_noise(
        x,
        scale,
        blur_sigma=u(0.3, 1.0),
        photons=u(2e3, 5e4),
        read_sigma=u(0.0, 0.01),
        generator=generator,
    )
