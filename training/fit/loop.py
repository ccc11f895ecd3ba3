"""Two-stage ESRGAN training: a PSNR-oriented stage, then a GAN stage started from it.

* PSNR stage: pixel loss (L1 by default) on random HR patches and their degraded LR
  inputs, Adam, cosine learning-rate decay, an exponential moving average (EMA) of the
  generator that is what gets validated, saved and exported.
* GAN stage: the generator starts from the PSNR stage's EMA weights; ESRGAN's losses
  (pixel 1e-2, perceptual 1, relativistic-average GAN 5e-3; without VGG19 weights the
  discriminator's feature-matching loss takes the perceptual term's place) against a
  VGG-style or U-Net (spectral norm) discriminator.
* Both: seeded, checkpoints (``ckpt_last.pt``) every ``ckpt_every`` iterations and at the
  end, ``resume=True`` continues from the last checkpoint, tqdm progress with the losses
  and the validation PSNR, ``log.csv`` and ``curves.png`` (training curves).

A run writes into ``<out_dir>/<name>/<stage>/``; ``generator.pt`` there holds the EMA
weights plus everything export needs (architecture, scale, intensity model, degradation,
data and split, wall time). :func:`interpolate` blends a PSNR and a GAN generator
(ESRGAN network interpolation, ``alpha`` = weight of the GAN network).

With ``minutes`` set, the schedule runs on the larger of iteration and time progress and
stops when either ends: useful on a shared machine, not bit-reproducible.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from training.archs import build_generator, count_params
from training.checkpoint import load_checkpoint, save_checkpoint
from training.data.dataset import Augment, PatchSampler, split_images
from training.data.prepare import load_prepared
from training.degradations import crop_to_multiple, degrade
from training.steps import Adversary, degraded_batch, gan_step, psnr_step

CSV_FIELDS = [
    "iter", "stage", "lr", "l_pix", "l_percep", "l_fm", "l_gan", "l_d", "d_real", "d_fake",
    "val_psnr", "val_psnr_bicubic", "elapsed_s",
]  # fmt: skip


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


# ---------------------------------------------------------------------------------------
def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    mse = float(F.mse_loss(a.float(), b.float()))
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def clamp_output(x: torch.Tensor, intensity_model: str) -> torch.Tensor:
    """The range the engine can write back: [0, 1] for ct_hu/bits_stored, >= 0 otherwise."""
    return x.clamp(0.0, 1.0) if intensity_model in ("ct_hu", "bits_stored") else x.clamp_min(0.0)


def upsample_bicubic(lr: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(lr, scale_factor=float(scale), mode="bicubic", align_corners=False)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


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


def load_generator(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """A ``generator.pt`` -> (model in eval mode, its info dict without the weights)."""
    blob = torch.load(path, map_location=map_location, weights_only=False)
    model = build_generator(blob["arch"], **blob["arch_params"])
    model.load_state_dict(blob["state_dict"])
    model.eval()
    info = {k: v for k, v in blob.items() if k != "state_dict"}
    return model, info


def save_generator(path: Path, model: nn.Module, info: dict) -> None:
    blob = dict(info)
    blob["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def interpolate(
    psnr_path: str | Path, gan_path: str | Path, alpha: float, out_path: str | Path
) -> Path:
    """ESRGAN network interpolation: ``(1 - alpha) * PSNR + alpha * GAN`` weights."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    a = torch.load(psnr_path, map_location="cpu", weights_only=False)
    b = torch.load(gan_path, map_location="cpu", weights_only=False)
    if a["arch"] != b["arch"] or a["arch_params"] != b["arch_params"]:
        raise ValueError("the two generators have different architectures")
    sd = {}
    for k, va in a["state_dict"].items():
        vb = b["state_dict"][k]
        sd[k] = (1 - alpha) * va + alpha * vb if va.is_floating_point() else vb
    out = dict(b)
    out["state_dict"] = sd
    out["stage"] = "interp"
    out["interpolation"] = {"alpha": alpha, "psnr": str(psnr_path), "gan": str(gan_path)}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, out_path)
    return out_path


def _lr_at(cfg: TrainConfig, progress: float, it: int) -> float:
    base = cfg.resolved_lr()
    if cfg.warmup and it < cfg.warmup:
        return base * (it + 1) / cfg.warmup
    p = min(max(progress, 0.0), 1.0)
    lo = base * cfg.lr_min_ratio
    return lo + (base - lo) * 0.5 * (1 + math.cos(math.pi * p))


def _build_discriminator(cfg: TrainConfig) -> nn.Module:
    if cfg.discriminator == "vgg":
        from training.archs.discriminator_vgg_arch import VGGStyleDiscriminator

        return VGGStyleDiscriminator(num_in_ch=1, num_feat=cfg.d_num_feat, input_size=cfg.patch)
    if cfg.discriminator == "unet":
        from training.archs.discriminator_unet_arch import UNetDiscriminatorSN

        return UNetDiscriminatorSN(num_in_ch=1, num_feat=cfg.d_num_feat, skip_connection=True)
    raise ValueError(f"unknown discriminator {cfg.discriminator!r} (vgg or unet)")


def _plot_curves(csv_path: Path, png_path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return

    def col(name: str) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for r in rows:
            if r.get(name) not in (None, ""):
                xs.append(int(r["iter"]))
                ys.append(float(r[name]))
        return xs, ys

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name in ("l_pix", "l_percep", "l_fm", "l_gan", "l_d"):
        xs, ys = col(name)
        if xs:
            ax1.plot(xs, ys, label=name, lw=1)
    ax1.set_yscale("log")
    ax1.set_xlabel("iteration")
    ax1.set_title("training losses (weighted)")
    ax1.legend(fontsize=8)
    xs, ys = col("val_psnr")
    if xs:
        ax2.plot(xs, ys, "o-", label="model (EMA)", ms=3)
        xb, yb = col("val_psnr_bicubic")
        ax2.plot(xb, yb, "--", label="bicubic")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("PSNR (dB, data range 1)")
    ax2.set_title("validation PSNR")
    ax2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
def fit(cfg: TrainConfig) -> Path:
    """Run one stage; returns the path of ``generator.pt`` (EMA weights + info)."""
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
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    # data ------------------------------------------------------------------------------
    prepared = load_prepared(cfg.data_dir, cfg.datasets or None)
    train_imgs = split_images(prepared, "train", cfg.intensity, axes=cfg.train_axes)
    val_imgs = split_images(prepared, "val", cfg.intensity, axes=(0,))
    if len(val_imgs) > cfg.max_val_images:  # evenly spaced, deterministic
        idx = np.linspace(0, len(val_imgs) - 1, cfg.max_val_images).round().astype(int)
        val_imgs = [val_imgs[i] for i in idx]
    val_t = [torch.from_numpy(v).to(device) for v in val_imgs]
    aug = Augment(
        scale_range=tuple(cfg.scale_range),  # type: ignore[arg-type]
        intensity=cfg.intensity_aug,
        noise_prob=cfg.noise_prob,
        noise_sigma=cfg.noise_sigma,
        realistic_prob=cfg.realistic_prob,
        interp_prob=cfg.interp_prob,
        interp_anisotropic=cfg.interp_anisotropic,
    )
    sampler = PatchSampler(train_imgs, cfg.patch, device, aug, seed=cfg.seed)

    # models ----------------------------------------------------------------------------
    params = {"num_in_ch": 1, "num_out_ch": 1, "scale": cfg.scale, **cfg.arch_params}
    g = build_generator(cfg.arch, **params).to(device)
    use_amp = cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda")
    use_cl = cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cuda")
    mem_fmt = torch.channels_last if use_cl else torch.contiguous_format
    g = g.to(memory_format=mem_fmt)

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp)

    if cfg.init_from:
        g0, _ = load_generator(cfg.init_from, device)
        g.load_state_dict(g0.state_dict())
    elif cfg.stage == "gan":
        raise ValueError("the GAN stage starts from a PSNR generator: give init_from")
    g_ema = copy.deepcopy(g).eval()
    for p in g_ema.parameters():
        p.requires_grad_(False)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.resolved_lr(), betas=(0.9, 0.99))
    pix_loss = nn.L1Loss() if cfg.pixel_loss == "l1" else nn.MSELoss()

    adv: Adversary | None = None
    if cfg.stage == "gan":
        from training.losses import build_esrgan_losses

        d = _build_discriminator(cfg).to(device, memory_format=mem_fmt)
        losses = build_esrgan_losses(
            cfg.vgg_weights, cfg.pixel_weight, cfg.perceptual_weight, cfg.gan_weight
        )
        adv = Adversary(
            d,
            torch.optim.Adam(d.parameters(), lr=cfg.d_lr, betas=(0.9, 0.99)),
            {k: v.to(device) for k, v in losses.items()},
        )

    # resume ----------------------------------------------------------------------------
    start_it, elapsed0 = 0, 0.0
    ckpt_path = run_dir / "ckpt_last.pt"
    log_path = run_dir / "log.csv"
    if cfg.resume and ckpt_path.is_file():
        start_it, elapsed0 = load_checkpoint(ckpt_path, device, g, g_ema, opt_g, adv, sampler.rng)
    elif log_path.exists():
        log_path.unlink()
    new_log = not log_path.exists()
    log_f = open(log_path, "a", newline="")  # noqa: SIM115 - open for the whole run
    writer = csv.DictWriter(log_f, fieldnames=CSV_FIELDS)
    if new_log:
        writer.writeheader()

    def save_ckpt(it: int, elapsed: float) -> None:
        save_checkpoint(ckpt_path, g, g_ema, opt_g, adv, it, elapsed, sampler.rng, asdict(cfg))

    # loop ------------------------------------------------------------------------------
    from tqdm import tqdm

    t0 = time.perf_counter() - elapsed0
    bar = tqdm(
        total=cfg.iters,
        initial=start_it,
        desc=f"{cfg.name}/{cfg.stage}",
        disable=not cfg.progress,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        dynamic_ncols=True,
    )
    last_val: tuple[float, float] | None = None
    acc: dict[str, list[torch.Tensor]] = {}
    it = start_it
    g.train()
    stop = _StopOnSignal()
    last_ckpt = time.perf_counter()
    while it < cfg.iters and not stop.requested:
        elapsed = time.perf_counter() - t0
        progress = it / cfg.iters
        if cfg.minutes:
            progress = max(progress, elapsed / (cfg.minutes * 60))
            if progress >= 1.0:
                break
        lr = _lr_at(cfg, progress, it)
        for pg in opt_g.param_groups:
            pg["lr"] = lr

        hr = sampler.sample(cfg.batch).contiguous(memory_format=mem_fmt)
        lr_img = degraded_batch(
            hr, cfg.degradation, cfg.scale, cfg.realistic_prob, cfg.realistic_kind,
            cfg.noise_prob, cfg.noise_sigma,
        )  # fmt: skip
        if adv is None:
            logs = psnr_step(g, opt_g, pix_loss, lr_img, hr, autocast)
        else:
            logs = gan_step(g, opt_g, adv, lr_img, hr, autocast)
        ema_update(g_ema, g, cfg.ema_decay if it >= 100 else 0.0)
        for k, v in logs.items():
            acc.setdefault(k, []).append(v)
        it += 1
        bar.update(1)

        do_val = it % cfg.val_every == 0 or it == cfg.iters
        if it % cfg.log_every == 0 or do_val:
            row: dict[str, Any] = {
                "iter": it,
                "stage": cfg.stage,
                "lr": f"{lr:.3g}",
                "elapsed_s": f"{time.perf_counter() - t0:.1f}",
            }
            if it - start_it >= cfg.log_every:
                post_rate = (it - start_it) / max(time.perf_counter() - t0 - elapsed0, 1e-9)
            else:
                post_rate = 0.0
            means = {k: float(torch.stack(v).mean()) for k, v in acc.items()}
            if not all(math.isfinite(v) for v in means.values()):
                raise FloatingPointError(f"non-finite loss before iteration {it}: {means}")
            row.update({k: f"{v:.5g}" for k, v in means.items()})
            acc = {}
            if do_val:
                last_val = evaluate_psnr(
                    g_ema, val_t, cfg.scale, cfg.degradation, cfg.intensity["model"]
                )
                row["val_psnr"] = f"{last_val[0]:.3f}"
                row["val_psnr_bicubic"] = f"{last_val[1]:.3f}"
            writer.writerow(row)
            log_f.flush()
            post = {k: row[k] for k in ("l_pix", "l_fm", "l_percep", "l_gan", "l_d") if k in row}
            if post_rate:
                post["it/s"] = f"{post_rate:.1f}"
            if last_val:
                post["val"] = f"{last_val[0]:.2f}/{last_val[1]:.2f}bic"
            bar.set_postfix(post, refresh=False)
        if it % cfg.ckpt_every == 0 or time.perf_counter() - last_ckpt > cfg.ckpt_minutes * 60:
            save_ckpt(it, time.perf_counter() - t0)
            last_ckpt = time.perf_counter()
    bar.close()
    stop.restore()
    if stop.requested:
        print(f"stopped by signal at iteration {it}: checkpoint saved, --resume continues",
              file=sys.stderr, flush=True)  # fmt: skip

    wall = time.perf_counter() - t0
    if last_val is None or it % cfg.val_every:
        last_val = evaluate_psnr(g_ema, val_t, cfg.scale, cfg.degradation, cfg.intensity["model"])
        writer.writerow(
            {
                "iter": it,
                "stage": cfg.stage,
                "val_psnr": f"{last_val[0]:.3f}",
                "val_psnr_bicubic": f"{last_val[1]:.3f}",
                "elapsed_s": f"{wall:.1f}",
            }
        )
    log_f.close()
    save_ckpt(it, wall)
    try:
        _plot_curves(log_path, run_dir / "curves.png", f"{cfg.name} — {cfg.stage} stage")
    except Exception as e:  # noqa: BLE001 - plots must not lose a finished run
        print(f"warning: training-curve plot failed: {e}", file=sys.stderr)

    info = {
        "arch": cfg.arch,
        "arch_params": params,
        "n_params": count_params(g),
        "scale": cfg.scale,
        "stage": cfg.stage,
        "intensity": cfg.intensity,
        "degradation": cfg.degradation,
        "datasets": [
            {k: doc[k] for k in ("name", "subject", "source", "shape", "spacing_mm", "slabs")}
            | {
                k: doc[k]
                for k in ("license", "origin", "drr", "gap_mm", "fractions", "seed")
                if k in doc
            }
            for doc in prepared
        ],
        "n_train_images": len(train_imgs),
        "n_val_images": len(val_imgs),
        "iters": it,
        "batch": cfg.batch,
        "patch": cfg.patch,
        "wall_s": round(wall, 1),
        "device": _device_name(device),
        "val_psnr": round(last_val[0], 3),
        "val_psnr_bicubic": round(last_val[1], 3),
        "init_from": cfg.init_from,
        "amp_bf16": use_amp,
        "channels_last": use_cl,
        "config": asdict(cfg),
        "torch": torch.__version__,
    }
    out = run_dir / "generator.pt"
    save_generator(out, g_ema, info)
    (run_dir / "summary.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return out


class _StopOnSignal:
    """SIGTERM/SIGINT end the loop after the current iteration (checkpoint and generator
    are written as at a normal end), so a killed background run loses nothing."""

    def __init__(self) -> None:
        import signal
        import threading

        self.requested = False
        self._old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def restore(self) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"cpu ({platform.processor() or platform.machine()}, {n} thread{'s' * (n != 1)})"
