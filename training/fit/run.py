"""Everything one run trains with, built once from its config: device, data, generator and
its EMA, optimisers, the GAN stage's adversary; one iteration, validation, checkpoint, and
the facts the generator file records."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from training.archs import build_discriminator, build_generator, count_params
from training.data.dataset import Augment, PatchSampler, split_images
from training.data.prepare import load_prepared
from training.fit.checkpoint import save_checkpoint
from training.fit.config import TrainConfig
from training.fit.generator import load_generator
from training.fit.runtime import device_name, pick_device, seed_everything
from training.fit.steps import Adversary, degraded_batch, ema_update, gan_step, psnr_step
from training.fit.validate import evaluate_psnr

# what the generator file keeps of each prepared dataset (the card's training data)
DATASET_KEYS = ("name", "subject", "source", "shape", "spacing_mm", "slabs")
DATASET_OPTIONAL = ("license", "origin", "drr", "gap_mm", "fractions", "seed")


@dataclass
class Run:
    """One run's state; :func:`start_run` builds it, :func:`training.fit.loop.fit` drives it."""

    cfg: TrainConfig
    device: torch.device
    prepared: list[dict[str, Any]]
    n_train: int
    val: list[torch.Tensor]
    sampler: PatchSampler
    params: dict[str, Any]
    g: nn.Module
    g_ema: nn.Module
    opt_g: torch.optim.Optimizer
    pixel_loss: nn.Module
    adv: Adversary | None
    amp: bool
    channels_last: bool

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def step(self, lr: float, it: int) -> dict[str, torch.Tensor]:
        """One iteration at learning rate ``lr``; returns the detached losses."""
        cfg = self.cfg
        for pg in self.opt_g.param_groups:
            pg["lr"] = lr
        hr = self.sampler.sample(cfg.batch).contiguous(memory_format=self.memory_format)
        lr_img = degraded_batch(
            hr, cfg.degradation, cfg.scale, cfg.realistic_prob, cfg.realistic_kind,
            cfg.noise_prob, cfg.noise_sigma,
        )  # fmt: skip
        if self.adv is None:
            logs = psnr_step(self.g, self.opt_g, self.pixel_loss, lr_img, hr, self.autocast)
        else:
            logs = gan_step(self.g, self.opt_g, self.adv, lr_img, hr, self.autocast)
        ema_update(self.g_ema, self.g, cfg.ema_decay if it >= 100 else 0.0)
        return logs

    def validate(self) -> tuple[float, float]:
        """Mean validation PSNR of the EMA generator and of bicubic."""
        cfg = self.cfg
        return evaluate_psnr(
            self.g_ema, self.val, cfg.scale, cfg.degradation, cfg.intensity["model"]
        )

    def checkpoint(self, it: int, elapsed_s: float) -> None:
        save_checkpoint(
            self.cfg.run_dir / "ckpt_last.pt", self.g, self.g_ema, self.opt_g, self.adv, it,
            elapsed_s, self.sampler.rng, asdict(self.cfg),
        )  # fmt: skip

    def info(self, it: int, wall_s: float, val: tuple[float, float]) -> dict[str, Any]:
        """What ``generator.pt`` and ``summary.json`` record beside the weights."""
        cfg = self.cfg
        datasets = [
            {k: doc[k] for k in DATASET_KEYS} | {k: doc[k] for k in DATASET_OPTIONAL if k in doc}
            for doc in self.prepared
        ]
        return {
            "arch": cfg.arch, "arch_params": self.params, "n_params": count_params(self.g),
            "scale": cfg.scale, "stage": cfg.stage, "intensity": cfg.intensity,
            "degradation": cfg.degradation, "datasets": datasets,
            "n_train_images": self.n_train, "n_val_images": len(self.val), "iters": it,
            "batch": cfg.batch, "patch": cfg.patch, "wall_s": round(wall_s, 1),
            "device": device_name(self.device), "val_psnr": round(val[0], 3),
            "val_psnr_bicubic": round(val[1], 3), "init_from": cfg.init_from,
            "amp_bf16": self.amp, "channels_last": self.channels_last, "config": asdict(cfg),
            "torch": torch.__version__,
        }  # fmt: skip


def _want(option: str, device: torch.device) -> bool:
    return option == "on" or (option == "auto" and device.type == "cuda")


def start_run(cfg: TrainConfig) -> Run:
    """Seed, write ``config.json``, load the data, build the networks and optimisers."""
    if cfg.stage not in ("psnr", "gan"):
        raise ValueError(f"stage must be psnr or gan, got {cfg.stage!r}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    seed_everything(cfg.seed)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    (cfg.run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    prepared = load_prepared(cfg.data_dir, cfg.datasets or None)
    train_imgs = split_images(prepared, "train", cfg.intensity, axes=cfg.train_axes)
    val_imgs = split_images(prepared, "val", cfg.intensity, axes=(0,))
    if len(val_imgs) > cfg.max_val_images:  # evenly spaced, deterministic
        idx = np.linspace(0, len(val_imgs) - 1, cfg.max_val_images).round().astype(int)
        val_imgs = [val_imgs[i] for i in idx]
    aug = Augment(
        scale_range=tuple(cfg.scale_range),  # type: ignore[arg-type]
        intensity=cfg.intensity_aug, noise_prob=cfg.noise_prob, noise_sigma=cfg.noise_sigma,
        realistic_prob=cfg.realistic_prob, interp_prob=cfg.interp_prob,
        interp_anisotropic=cfg.interp_anisotropic,
    )  # fmt: skip
    sampler = PatchSampler(train_imgs, cfg.patch, device, aug, seed=cfg.seed)

    params = {"num_in_ch": 1, "num_out_ch": 1, "scale": cfg.scale, **cfg.arch_params}
    amp, cl = _want(cfg.amp, device), _want(cfg.channels_last, device)
    mem_fmt = torch.channels_last if cl else torch.contiguous_format
    g = build_generator(cfg.arch, **params).to(device).to(memory_format=mem_fmt)
    if cfg.init_from:
        g.load_state_dict(load_generator(cfg.init_from, device)[0].state_dict())
    elif cfg.stage == "gan":
        raise ValueError("the GAN stage starts from a PSNR generator: give init_from")
    g_ema = copy.deepcopy(g).eval()
    for p in g_ema.parameters():
        p.requires_grad_(False)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.resolved_lr(), betas=(0.9, 0.99))
    pixel_loss = nn.L1Loss() if cfg.pixel_loss == "l1" else nn.MSELoss()
    return Run(
        cfg, device, prepared, len(train_imgs), [torch.from_numpy(v).to(device) for v in val_imgs],
        sampler, params, g, g_ema, opt_g, pixel_loss, _adversary(cfg, device, mem_fmt), amp, cl,
    )  # fmt: skip


def _adversary(cfg: TrainConfig, device: torch.device, mem_fmt: Any) -> Adversary | None:
    """The GAN stage's discriminator, its optimiser and ESRGAN's losses (None for PSNR)."""
    if cfg.stage != "gan":
        return None
    from training.fit.losses import build_esrgan_losses

    d = build_discriminator(cfg.discriminator, cfg.d_num_feat, cfg.patch)
    d = d.to(device, memory_format=mem_fmt)
    losses = build_esrgan_losses(
        cfg.vgg_weights, cfg.pixel_weight, cfg.perceptual_weight, cfg.gan_weight
    )
    return Adversary(
        d,
        torch.optim.Adam(d.parameters(), lr=cfg.d_lr, betas=(0.9, 0.99)),
        {k: v.to(device) for k, v in losses.items()},
    )
