"""Interpolation baselines for super-resolution, in numpy + PyWavelets.

Every function maps a 2-D float LR image to ``scale`` times its size, with the pixel-centre
convention of the area degradation (output pixel ``j`` sits at input ``(j + 0.5) / s - 0.5``)
and edge replication at the borders. Values are not clipped.

* ``nearest``, ``bicubic`` (Keys, a = -0.5), ``lanczos`` (Lanczos-3);
* ``wavelet``: wavelet-domain interpolation. The LR image becomes the Haar approximation
  band of the output (for the ``area`` degradation this is exact: the Haar approximation of
  the HR image *is* ``2^levels`` times its block means) and the detail bands are estimated
  from the bicubic interpolant (interpolated high-frequency sub-bands, as in Demirel &
  Anbarjafari's DWT-based resolution enhancement). The result is consistent with the LR
  image under block averaging.

The learned baselines (SRCNN, SRGAN, ESRGAN-PSNR/GAN, interpolated) are exported ONNX models
run through :mod:`sr_engine`; see :mod:`training.evaluate.heldout`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["INTERPOLATORS", "bicubic", "lanczos", "nearest", "resize", "upscale", "wavelet"]


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    ax = np.abs(x)
    near = ((a + 2) * ax**3 - (a + 3) * ax**2 + 1) * (ax <= 1)
    far = (a * ax**3 - 5 * a * ax**2 + 8 * a * ax - 4 * a) * ((ax > 1) & (ax < 2))
    return near + far


def _lanczos3(x: np.ndarray) -> np.ndarray:
    return np.sinc(x) * np.sinc(x / 3) * (np.abs(x) < 3)


_KERNELS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    "bicubic": (_cubic, 2.0),  # Keys a = -0.5: MATLAB, PIL
    "bicubic-0.75": (lambda x: _cubic(x, -0.75), 2.0),  # PyTorch, OpenCV
    "lanczos": (_lanczos3, 3.0),
}


def _weights(in_len: int, out_len: int, kernel: str) -> np.ndarray:
    """Resampling matrix ``[out_len, in_len]`` (antialiased when shrinking)."""
    fn, support = _KERNELS[kernel]
    s = out_len / in_len
    k = min(s, 1.0)  # stretch the kernel when downsampling
    centres = (np.arange(out_len) + 0.5) / s - 0.5
    reach = int(np.ceil(support / k))
    first = np.floor(centres).astype(int) - reach + 1
    taps = first[:, None] + np.arange(2 * reach)[None, :]
    w = fn((centres[:, None] - taps) * k)
    w /= w.sum(axis=1, keepdims=True)
    m = np.zeros((out_len, in_len))
    np.add.at(
        m,
        (np.repeat(np.arange(out_len), taps.shape[1]), np.clip(taps, 0, in_len - 1).ravel()),
        w.ravel(),
    )
    return m


def resize(img: np.ndarray, shape: tuple[int, int], kernel: str = "bicubic") -> np.ndarray:
    """Separable resampling of a 2-D image to ``shape`` with ``kernel``."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    wh = _weights(img.shape[0], shape[0], kernel)
    ww = _weights(img.shape[1], shape[1], kernel)
    return wh @ img @ ww.T


def nearest(lr: np.ndarray, scale: int) -> np.ndarray:
    lr = np.asarray(lr, dtype=np.float64)
    return np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)


def bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    h, w = np.shape(lr)
    return resize(lr, (h * scale, w * scale), "bicubic")


def lanczos(lr: np.ndarray, scale: int) -> np.ndarray:
    h, w = np.shape(lr)
    return resize(lr, (h * scale, w * scale), "lanczos")


def wavelet(lr: np.ndarray, scale: int, detail_from: str = "bicubic") -> np.ndarray:
    """Haar approximation band = the LR image, detail bands from ``detail_from``."""
    import pywt

    levels = int(np.log2(scale))
    if 2**levels != scale:
        raise ValueError(f"wavelet interpolation needs a power-of-two scale, got {scale}")
    lr = np.asarray(lr, dtype=np.float64)
    guess = INTERPOLATORS[detail_from](lr, scale)
    coeffs = pywt.wavedec2(guess, "haar", level=levels, mode="periodization")
    coeffs[0] = lr * (2.0**levels)  # orthonormal Haar: approximation = 2^L x block mean
    return pywt.waverec2(coeffs, "haar", mode="periodization")


INTERPOLATORS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "nearest": nearest,
    "bicubic": bicubic,
    "lanczos": lanczos,
}
INTERPOLATORS["wavelet"] = wavelet


def upscale(lr: np.ndarray, scale: int, method: str) -> np.ndarray:
    """``lr`` upscaled by ``scale`` with the interpolator named ``method``."""
    try:
        fn = INTERPOLATORS[method]
    except KeyError:
        raise ValueError(
            f"unknown interpolator {method!r}; known: {', '.join(INTERPOLATORS)}"
        ) from None
    return fn(lr, scale)
