"""Image-quality metrics for super-resolution, in numpy/scipy (no torch needed except FID).

Full-reference (prediction vs. ground truth, both float, same shape):

* :func:`psnr` with an explicit ``data_range`` (no guessing from the dtype or the data);
* :func:`ssim`: Wang et al. 2004, 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
  statistics over the "valid" region (windows entirely inside the image);
* :func:`mse`.

No-reference:

* NIQE (Mittal et al. 2013): a multivariate Gaussian of natural-scene statistics of sharp
  blocks of *pristine* images; the quality of an image is the distance of its own block
  statistics' Gaussian from that model. :func:`fit_niqe_model` fits the pristine model on
  the HR training images; :meth:`NiqeModel.load` reads the standard parameters from a file
  the user supplies (MATLAB ``modelparameters.mat`` or BasicSR ``niqe_pris_params.npz``).
  Lower is better.

FID needs Inception-v3 weights the user supplies; it lives in :mod:`training.evaluate.fid`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.special import gamma as gamma_fn

__all__ = [
    "NiqeModel",
    "fit_niqe_model",
    "mse",
    "niqe",
    "niqe_features",
    "psnr",
    "ssim",
]


def _pair(pred: np.ndarray, target: np.ndarray, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape} vs target {target.shape}")
    if pred.ndim != 2:
        raise ValueError(f"expected 2-D images, got shape {pred.shape}")
    if crop_border:
        c = crop_border
        pred, target = pred[c:-c, c:-c], target[c:-c, c:-c]
    return pred, target


def mse(pred: np.ndarray, target: np.ndarray, crop_border: int = 0) -> float:
    """Mean squared error (in the images' own units)."""
    p, t = _pair(pred, target, crop_border)
    return float(np.mean((p - t) ** 2))


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float, crop_border: int = 0) -> float:
    """``10 log10(data_range^2 / MSE)`` in dB; ``inf`` for identical images.

    ``data_range`` is the span of valid values (1.0 for images in [0, 1], 4095 for 12-bit
    stored values …); it is required because it cannot be told from the data.
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    err = mse(pred, target, crop_border)
    if err == 0:
        return math.inf
    return float(10.0 * math.log10(data_range**2 / err))


def _gauss1d(size: int, sigma: float) -> np.ndarray:
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def _filter_valid(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable correlation, keeping only positions where the window fits entirely."""
    r = len(k) // 2
    out = ndimage.correlate1d(img, k, axis=0, mode="constant")
    out = ndimage.correlate1d(out, k, axis=1, mode="constant")
    return out[r:-r, r:-r]


def ssim(
    pred: np.ndarray,
    target: np.ndarray,
    data_range: float,
    crop_border: int = 0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity (Wang et al. 2004) over the valid region."""
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    p, t = _pair(pred, target, crop_border)
    if min(p.shape) < win_size:
        raise ValueError(f"image {p.shape} smaller than the SSIM window {win_size}")
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    k = _gauss1d(win_size, sigma)
    mu_p, mu_t = _filter_valid(p, k), _filter_valid(t, k)
    var_p = _filter_valid(p * p, k) - mu_p**2
    var_t = _filter_valid(t * t, k) - mu_t**2
    cov = _filter_valid(p * t, k) - mu_p * mu_t
    num = (2 * mu_p * mu_t + c1) * (2 * cov + c2)
    den = (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
    return float(np.mean(num / den))


# ---------------------------------------------------------------------------------------
# NIQE
# ---------------------------------------------------------------------------------------

_GAM = np.arange(0.2, 10.001, 0.001)
_R_GAM = gamma_fn(2 / _GAM) ** 2 / (gamma_fn(1 / _GAM) * gamma_fn(3 / _GAM))  # increasing
_NIQE_WINDOW = np.outer(_gauss1d(7, 7 / 6), _gauss1d(7, 7 / 6))
NIQE_SCALE = 255.0  # NIQE's statistics (the +1 in the MSCN denominator) assume 0..255


def _aggd(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric generalised Gaussian fit (moment matching) of each row of ``blocks``.

    Returns alpha, beta_left, beta_right; NaN where a block has no negative or no
    positive values (e.g. flat background).
    """
    neg, pos = blocks < 0, blocks > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt((blocks**2 * neg).sum(1) / neg.sum(1))
        right = np.sqrt((blocks**2 * pos).sum(1) / pos.sum(1))
        g = left / right
        rhat = np.mean(np.abs(blocks), 1) ** 2 / np.mean(blocks**2, 1)
        rnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    ok = np.isfinite(rnorm)
    alpha = np.full(len(blocks), np.nan)
    if ok.any():
        # nearest grid value of the monotonic r(gamma)
        i = np.clip(np.searchsorted(_R_GAM, rnorm[ok]), 1, len(_R_GAM) - 1)
        lower_closer = np.abs(_R_GAM[i - 1] - rnorm[ok]) <= np.abs(_R_GAM[i] - rnorm[ok])
        alpha[ok] = _GAM[np.where(lower_closer, i - 1, i)]
    with np.errstate(invalid="ignore"):
        f = np.sqrt(gamma_fn(1 / alpha) / gamma_fn(3 / alpha))
    return alpha, left * f, right * f


def _block_features(mscn: np.ndarray, bh: int, bw: int) -> np.ndarray:
    """18 NIQE features for each ``bh x bw`` block of an MSCN map -> [n_blocks, 18]."""
    nh, nw = mscn.shape[0] // bh, mscn.shape[1] // bw
    b = mscn[: nh * bh, : nw * bw].reshape(nh, bh, nw, bw).transpose(0, 2, 1, 3)
    b = b.reshape(nh * nw, bh, bw)
    feats = []
    a, bl, br = _aggd(b.reshape(len(b), -1))
    feats += [a, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        prod = b * np.roll(b, shift, axis=(1, 2))  # circular within the block, as MATLAB
        a, bl, br = _aggd(prod.reshape(len(b), -1))
        with np.errstate(invalid="ignore"):
            mean = (br - bl) * (gamma_fn(2 / a) / gamma_fn(1 / a))
        feats += [a, mean, bl, br]
    return np.stack(feats, axis=1)


def _mscn(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = ndimage.convolve(img, _NIQE_WINDOW, mode="nearest")
    var = ndimage.convolve(img * img, _NIQE_WINDOW, mode="nearest") - mu * mu
    sigma = np.sqrt(np.abs(var))
    return (img - mu) / (sigma + 1), sigma


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return ((1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)) + (
        (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    )


def downscale_half(img: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(img, 0.5)``: antialiased bicubic, symmetric padding (even edges)."""
    offsets = np.arange(-3.5, 4.0)  # 8 taps around the output centre, in input pixels
    w = 0.5 * _cubic(0.5 * offsets)
    w /= w.sum()
    pad = 4
    x = np.pad(img, pad, mode="symmetric")
    # output i is centred at input 2i + 0.5: taps 2i-3 … 2i+4
    out = sum(wk * x[pad - 3 + k : pad - 3 + k + img.shape[0] : 2, :] for k, wk in enumerate(w))
    out = sum(wk * out[:, pad - 3 + k : pad - 3 + k + img.shape[1] : 2] for k, wk in enumerate(w))
    return out


def niqe_features(
    img: np.ndarray, block_size: int = 96, sharp_only: float | None = None
) -> np.ndarray:
    """36 features (18 at full, 18 at half resolution) per block -> ``[n_blocks, 36]``.

    ``img`` is a 2-D float image in [0, 1] (scaled to 0..255 inside, never rounded).
    ``sharp_only``: keep only blocks whose mean local deviation exceeds that fraction of the
    image's sharpest block (pristine-model fitting, MATLAB's ``sh_th``, 0.75).
    """
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    if block_size % 2:
        raise ValueError("block_size must be even (blocks are halved at the second scale)")
    nh, nw = img.shape[0] // block_size, img.shape[1] // block_size
    if nh == 0 or nw == 0:
        raise ValueError(f"image {img.shape} smaller than one NIQE block ({block_size})")
    x = img[: nh * block_size, : nw * block_size] * NIQE_SCALE
    mscn1, sigma = _mscn(x)
    f1 = _block_features(mscn1, block_size, block_size)
    mscn2, _ = _mscn(downscale_half(x))
    f2 = _block_features(mscn2, block_size // 2, block_size // 2)
    feats = np.concatenate([f1, f2], axis=1)
    if sharp_only is not None:
        sharp = sigma.reshape(nh, block_size, nw, block_size).mean(axis=(1, 3)).reshape(-1)
        if sharp.max() <= 0:
            return feats[:0]
        feats = feats[sharp > sharp_only * sharp.max()]
    return feats


@dataclass
class NiqeModel:
    """The pristine multivariate Gaussian (mean [36], covariance [36, 36]) and its block size."""

    mu: np.ndarray
    cov: np.ndarray
    block_size: int = 96
    source: str = ""
    n_blocks: int = 0

    def save(self, path: str | Path) -> None:
        np.savez(
            path,
            mu_pris_param=self.mu,
            cov_pris_param=self.cov,
            block_size=self.block_size,
            source=self.source,
            n_blocks=self.n_blocks,
        )

    @classmethod
    def load(cls, path: str | Path, block_size: int = 96) -> NiqeModel:
        """Read ``.npz`` (BasicSR/ours: ``mu_pris_param``, ``cov_pris_param``) or ``.mat``
        (MATLAB release: ``mu_prisparam``, ``cov_prisparam``). Standard parameters use
        96-pixel blocks."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"NIQE parameters not found: {path}")
        if path.suffix == ".mat":
            from scipy.io import loadmat

            d = loadmat(path)
            mu, cov = d["mu_prisparam"], d["cov_prisparam"]
            src = f"standard parameters ({path.name})"
        else:
            d = np.load(path, allow_pickle=False)
            mu, cov = d["mu_pris_param"], d["cov_pris_param"]
            if "block_size" in d:
                block_size = int(d["block_size"])
            src = str(d["source"]) if "source" in d else f"parameters ({path.name})"
        mu = np.asarray(mu, np.float64).reshape(-1)
        cov = np.asarray(cov, np.float64)
        if mu.shape != (36,) or cov.shape != (36, 36):
            raise ValueError(f"NIQE parameters {path}: expected mu[36] and cov[36,36]")
        n = int(d["n_blocks"]) if "n_blocks" in d else 0
        return cls(mu, cov, block_size, src, n)


def fit_niqe_model(
    images: list[np.ndarray] | tuple[np.ndarray, ...],
    block_size: int = 32,
    sharpness: float = 0.75,
    source: str = "fitted on HR training images",
) -> NiqeModel:
    """Fit the pristine model on sharp blocks of HR images (2-D floats in [0, 1])."""
    feats = [niqe_features(im, block_size, sharp_only=sharpness) for im in images]
    f = np.concatenate([x for x in feats if len(x)], axis=0) if feats else np.empty((0, 36))
    f = f[np.isfinite(f).all(axis=1)]
    if len(f) < 2:
        raise ValueError("too few usable blocks to fit a NIQE model (images flat or too small)")
    return NiqeModel(f.mean(0), np.cov(f, rowvar=False), block_size, source, len(f))


def niqe(img: np.ndarray, model: NiqeModel) -> float:
    """NIQE of a 2-D float image in [0, 1] against ``model`` (lower = more natural).

    NaN when no block of the image has usable statistics (an entirely flat image).
    """
    f = niqe_features(img, model.block_size)
    f = f[np.isfinite(f).all(axis=1)]
    if len(f) == 0:
        return math.nan
    mu = f.mean(0)
    cov = np.cov(f, rowvar=False) if len(f) > 1 else np.zeros((36, 36))
    d = model.mu - mu
    q = d @ np.linalg.pinv((model.cov + cov) / 2) @ d
    return float(math.sqrt(max(q, 0.0)))
