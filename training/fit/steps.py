"""One training iteration: the degraded input of a batch, a PSNR-stage step, a GAN-stage
step, the EMA update.

:meth:`training.fit.run.Run.step` calls these once per iteration; :func:`training.fit.loop.fit`
owns the run (schedule, logs, checkpoints). Each step returns the detached losses it logs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from training.data.degradations import degrade, random_realistic

Autocast = Callable[[], AbstractContextManager[Any]]


def degraded_batch(
    hr: torch.Tensor,
    degradation: str,
    scale: int,
    realistic_prob: float = 0.0,
    realistic_kind: str = "mr",
    noise_prob: float = 0.0,
    noise_sigma: float = 0.0,
) -> torch.Tensor:
    """The LR input of an HR batch: the degradation operator, sometimes a realistic chain
    instead, then Gaussian noise of a random std up to ``noise_sigma`` on a ``noise_prob``
    share of the images."""
    with torch.no_grad():
        lr = degrade(hr, degradation, scale)
        if realistic_prob > 0 and random.random() < realistic_prob:
            lr = random_realistic(hr, scale, realistic_kind)
        if noise_prob > 0:
            n = hr.shape[0]
            on = (torch.rand(n, 1, 1, 1, device=hr.device) < noise_prob).float()
            std = torch.rand(n, 1, 1, 1, device=hr.device) * noise_sigma
            lr = lr + on * std * torch.randn_like(lr)
    return lr


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


def psnr_step(
    g: nn.Module,
    opt_g: torch.optim.Optimizer,
    pixel_loss: nn.Module,
    lr: torch.Tensor,
    hr: torch.Tensor,
    autocast: Autocast,
) -> dict[str, torch.Tensor]:
    """One optimiser step on the pixel loss (computed in fp32 under bf16 autocast)."""
    with autocast():
        sr = g(lr)
    loss = pixel_loss(sr.float(), hr)
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    opt_g.step()
    return {"l_pix": loss.detach()}


@dataclass
class Adversary:
    """The GAN stage's discriminator, its optimiser and ESRGAN's losses by name
    (``pixel``, ``gan``, and ``perceptual`` or ``feature_matching``)."""

    d: nn.Module
    opt_d: torch.optim.Optimizer
    losses: dict[str, nn.Module]


def gan_step(
    g: nn.Module,
    opt_g: torch.optim.Optimizer,
    adv: Adversary,
    lr: torch.Tensor,
    hr: torch.Tensor,
    autocast: Autocast,
) -> dict[str, torch.Tensor]:
    """The generator's step (pixel + perceptual or feature matching + relativistic GAN
    loss, discriminator frozen), then the discriminator's step on real and detached fake."""
    d, losses = adv.d, adv.losses
    for p in d.parameters():
        p.requires_grad_(False)
    with autocast():
        sr = g(lr)
        with torch.no_grad():
            real_logits, real_feats = d.forward_features(hr)
        fake_logits, fake_feats = d.forward_features(sr)
    sr = sr.float()
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    l_pix = losses["pixel"](sr, hr)
    l_gan = losses["gan"].generator_loss(real_logits, fake_logits)
    logs: dict[str, torch.Tensor] = {}
    if "perceptual" in losses:
        l_p = losses["perceptual"](sr, hr)
        logs["l_percep"] = l_p.detach()
    else:
        l_p = losses["feature_matching"](
            [f.float() for f in real_feats], [f.float() for f in fake_feats]
        )
        logs["l_fm"] = l_p.detach()
    opt_g.zero_grad(set_to_none=True)
    (l_pix + l_gan + l_p).backward()
    opt_g.step()

    for p in d.parameters():
        p.requires_grad_(True)
    with autocast():
        real_logits = d(hr).float()
        fake_logits = d(sr.detach()).float()
    l_d = losses["gan"].discriminator_loss(real_logits, fake_logits)
    adv.opt_d.zero_grad(set_to_none=True)
    l_d.backward()
    adv.opt_d.step()
    return logs | {
        "l_pix": l_pix.detach(),
        "l_gan": l_gan.detach(),
        "l_d": l_d.detach(),
        "d_real": real_logits.detach().mean(),
        "d_fake": fake_logits.detach().mean(),
    }
