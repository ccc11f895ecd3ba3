"""Two-stage ESRGAN training: a PSNR-oriented stage, then a GAN stage started from it.

* PSNR stage: pixel loss (L1 by default) on random HR patches and their degraded LR
  inputs, Adam, cosine learning-rate decay, an exponential moving average (EMA) of the
  generator that is what gets validated, saved and exported.
* GAN stage: the generator starts from the PSNR stage's EMA weights; ESRGAN's losses
  (pixel 1e-2, perceptual 1, relativistic-average GAN 5e-3; without VGG19 weights the
  discriminator's feature-matching loss takes the perceptual term's place) against a
  VGG-style or U-Net (spectral norm) discriminator.
* Both: seeded, checkpoints (``ckpt_last.pt``) every ``ckpt_every`` iterations, every
  ``ckpt_minutes`` and at the end, ``resume=True`` continues from the last checkpoint, tqdm
  progress with the losses and the validation PSNR, ``log.csv`` and ``curves.png``.

A run writes into ``<out_dir>/<name>/<stage>/``; ``generator.pt`` there holds the EMA
weights plus everything export needs (:meth:`training.fit.run.Run.info`).

With ``minutes`` set, the schedule runs on the larger of iteration and time progress and
stops when either ends: useful on a shared machine, not bit-reproducible.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from training.fit.checkpoint import load_checkpoint
from training.fit.config import TrainConfig
from training.fit.generator import save_generator
from training.fit.log import RunLog, plot_curves, postfix
from training.fit.run import Run, start_run
from training.fit.runtime import StopOnSignal


def fit(cfg: TrainConfig) -> Path:
    """Run one stage; returns the path of ``generator.pt`` (EMA weights + info)."""
    run = start_run(cfg)
    ckpt_path = cfg.run_dir / "ckpt_last.pt"
    start_it, elapsed0 = 0, 0.0
    resumed = cfg.resume and ckpt_path.is_file()
    if resumed:
        start_it, elapsed0 = load_checkpoint(
            ckpt_path, run.device, run.g, run.g_ema, run.opt_g, run.adv, run.sampler.rng
        )
    log = RunLog(cfg.run_dir / "log.csv", keep=resumed)
    t0 = time.perf_counter() - elapsed0
    bar = _progress_bar(cfg, start_it)
    last_val: tuple[float, float] | None = None
    it = start_it
    run.g.train()
    stop = StopOnSignal()
    last_ckpt = time.perf_counter()
    while it < cfg.iters and not stop.requested:
        progress = it / cfg.iters
        if cfg.minutes:
            progress = max(progress, (time.perf_counter() - t0) / (cfg.minutes * 60))
            if progress >= 1.0:
                break
        lr = cfg.lr_at(progress, it)
        log.add(run.step(lr, it))
        it += 1
        bar.update(1)
        do_val = it % cfg.val_every == 0 or it == cfg.iters
        if it % cfg.log_every == 0 or do_val:
            rate = (it - start_it) / max(time.perf_counter() - t0 - elapsed0, 1e-9)
            last_val = _log_row(run, log, it, lr, time.perf_counter() - t0, do_val, last_val)
            rate = rate if it - start_it >= cfg.log_every else 0.0
            bar.set_postfix(postfix(log.last_row, rate, last_val), refresh=False)
        if it % cfg.ckpt_every == 0 or time.perf_counter() - last_ckpt > cfg.ckpt_minutes * 60:
            run.checkpoint(it, time.perf_counter() - t0)
            last_ckpt = time.perf_counter()
    bar.close()
    stop.restore()
    if stop.requested:
        print(f"stopped by signal at iteration {it}: checkpoint saved, --resume continues",
              file=sys.stderr, flush=True)  # fmt: skip
    return _finish(run, log, it, time.perf_counter() - t0, last_val)


def _progress_bar(cfg: TrainConfig, start_it: int) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=cfg.iters,
        initial=start_it,
        desc=f"{cfg.name}/{cfg.stage}",
        disable=not cfg.progress,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        dynamic_ncols=True,
    )


def _log_row(
    run: Run,
    log: RunLog,
    it: int,
    lr: float,
    elapsed_s: float,
    validate: bool,
    last_val: tuple[float, float] | None,
) -> tuple[float, float] | None:
    """Write a row of ``log.csv`` (validating first when due); the latest validation."""
    means = log.take_means(it)
    if validate:
        last_val = run.validate()
    log.write(it, run.cfg.stage, elapsed_s, lr, means, last_val if validate else None)
    return last_val


def _finish(
    run: Run, log: RunLog, it: int, wall_s: float, last_val: tuple[float, float] | None
) -> Path:
    """The final validation, checkpoint, curves, ``generator.pt`` and ``summary.json``."""
    cfg = run.cfg
    if last_val is None or it % cfg.val_every:
        last_val = run.validate()
        log.write(it, cfg.stage, wall_s, val=last_val)
    log.close()
    run.checkpoint(it, wall_s)
    try:
        plot_curves(log.path, cfg.run_dir / "curves.png", f"{cfg.name} — {cfg.stage} stage")
    except Exception as e:  # noqa: BLE001 - plots must not lose a finished run
        print(f"warning: training-curve plot failed: {e}", file=sys.stderr)
    info = run.info(it, wall_s, last_val)
    out = cfg.run_dir / "generator.pt"
    save_generator(out, run.g_ema, info)
    (cfg.run_dir / "summary.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return out
