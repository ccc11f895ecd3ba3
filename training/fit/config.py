"""What one training run is: :class:`TrainConfig` (every option of ``srnode train fit``,
recorded in ``config.json`` and the generator file) and its learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    name: str = "model"
    stage: str = "psnr"  # psnr | gan
    data_dir: str = "runs/data"
    datasets: list[str] = field(default_factory=list)  # prepared names; empty = all
    out_dir: str = "runs"
    arch: str = "RRDBNet"
    arch_params: dict[str, Any] = field(
        default_factory=lambda: {"num_feat": 32, "num_block": 6, "num_grow_ch": 16}
    )
    scale: int = 2
    intensity: dict[str, Any] = field(
        default_factory=lambda: {"model": "percentile", "percentiles": [0.0, 99.8]}
    )
    degradation: str = "area"
    train_axes: list[int] = field(default_factory=lambda: [0, 1, 2])
    patch: int = 128  # HR patch edge
    batch: int = 16
    iters: int = 10000
    minutes: float | None = None
    lr: float | None = None  # default 2e-4 (psnr) / 1e-4 (gan)
    lr_min_ratio: float = 0.02
    warmup: int = 0
    pixel_loss: str = "l1"
    ema_decay: float = 0.999
    val_every: int = 500
    log_every: int = 50
    ckpt_every: int = 2000
    ckpt_minutes: float = 5.0  # also checkpoint when this much time passed since the last
    max_val_images: int = 48
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    resume: bool = False
    init_from: str | None = None  # generator.pt of the PSNR stage (GAN stage)
    # GAN stage
    discriminator: str = "vgg"  # vgg | unet
    d_num_feat: int = 64
    d_lr: float = 1e-4
    vgg_weights: str | None = None
    pixel_weight: float = 1e-2
    perceptual_weight: float = 1.0
    gan_weight: float = 5e-3
    # augmentation
    scale_range: list[float] = field(default_factory=lambda: [0.8, 1.25])
    intensity_aug: bool = False
    noise_prob: float = 0.0
    noise_sigma: float = 0.01
    realistic_prob: float = 0.0
    interp_prob: float = 0.0  # share of HR patches sinc-interpolated as MR scanners display them
    interp_anisotropic: float = 0.0  # share of those interpolated further along one axis
    realistic_kind: str = "mr"  # mr | ct
    progress: bool = True
    amp: str = "auto"  # bf16 autocast: auto (on CUDA) | on | off
    channels_last: str = "auto"  # NHWC tensors: auto (on CUDA) | on | off
    command: str = ""  # the command line that started the run (the card's history names it)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name / self.stage

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.stage == "psnr" else 1e-4)

    def lr_at(self, progress: float, it: int) -> float:
        """Linear warm-up, then cosine decay to ``lr_min_ratio`` of the rate over
        ``progress`` in [0, 1]."""
        base = self.resolved_lr()
        if self.warmup and it < self.warmup:
            return base * (it + 1) / self.warmup
        p = min(max(progress, 0.0), 1.0)
        lo = base * self.lr_min_ratio
        return lo + (base - lo) * 0.5 * (1 + math.cos(math.pi * p))
