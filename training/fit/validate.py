"""Validation during a run: PSNR of the EMA generator and of bicubic on the validation
slices, in the network's [0, 1] space, clipped as the engine clips its output."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from training.data.degradations import crop_to_multiple, degrade


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    mse = float(F.mse_loss(a.float(), b.float()))
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def clamp_output(x: torch.Tensor, intensity_model: str) -> torch.Tensor:
    """The range the engine can write back: [0, 1] for ct_hu/bits_stored, >= 0 otherwise."""
    return x.clamp(0.0, 1.0) if intensity_model in ("ct_hu", "bits_stored") else x.clamp_min(0.0)


def upsample_bicubic(lr: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(lr, scale_factor=float(scale), mode="bicubic", align_corners=False)


@torch.no_grad()
def evaluate_psnr(
    model: nn.Module,
    images: list[torch.Tensor],
    scale: int,
    degradation: str,
    intensity_model: str,
) -> tuple[float, float]:
    """Mean PSNR (data range 1 in the network's [0, 1] space) of model and bicubic."""
    was_training = model.training
    model.eval()
    ps, pb = [], []
    for hr in images:
        hr = crop_to_multiple(hr[None, None], scale)
        lr = degrade(hr, degradation, scale)
        sr = clamp_output(model(lr), intensity_model)
        bi = clamp_output(upsample_bicubic(lr, scale), intensity_model)
        ps.append(psnr(sr, hr))
        pb.append(psnr(bi, hr))
    model.train(was_training)
    return float(np.mean(ps)), float(np.mean(pb))
