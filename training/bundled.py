"""Recipes of the bundled models (``sr_engine/models``) and the baselines trained with them.

``python -m training.bundled [--only mr-x2 ...] [--psnr-minutes M] [--gan-minutes M]``
(or ``srnode train bundled``) trains every recipe: the PSNR stage, then, where the recipe
has one, the GAN stage from it. Recipes run in parallel processes (``--parallel``, on a
GPU host) or one after another. Each writes ``<out>/<recipe>/{psnr,gan}/generator.pt``.

The bundled generator is an RRDBNet small enough for about 2 s per 512x512 slice with
ONNX Runtime on 2 CPU cores (nf 32, nb 6, gc 16: 1.1 M parameters; ESRGAN's 64/23/32 takes
about 20 s) with a bilinear global skip (the trunk learns the residual detail).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RRDB_SMALL = {"num_feat": 32, "num_block": 6, "num_grow_ch": 16, "global_skip": "bilinear"}
CT_WINDOW = [-1024.0, 3071.0]

CT = {"model": "ct_hu", "window": CT_WINDOW}
MR = {"model": "percentile", "percentiles": [0.0, 99.8]}
GENERAL = {"model": "bits_stored"}

MR_DATA = ["colin27-1mm", "colin27-05mm"]
CT_DATA = ["cranium-ct"]

# recipe name -> (TrainConfig fields, has GAN stage)
RECIPES: dict[str, tuple[dict[str, Any], bool]] = {
    "mr-x2": (
        {"arch": "RRDBNet", "arch_params": RRDB_SMALL, "intensity": MR, "datasets": MR_DATA,
         "scale_range": [0.9, 1.12]},
        True,
    ),
    "ct-x2": (
        {"arch": "RRDBNet", "arch_params": RRDB_SMALL, "intensity": CT, "datasets": CT_DATA,
         "scale_range": [0.9, 1.12]},
        True,
    ),
    "general-x2": (
        {"arch": "RRDBNet", "arch_params": RRDB_SMALL, "intensity": GENERAL,
         "datasets": MR_DATA + CT_DATA, "scale_range": [0.8, 1.25], "intensity_aug": True},
        True,
    ),
    # baselines for the evaluation (SRCNN; SRResNet -> SRGAN)
    "srcnn-mr-x2": (
        {"arch": "SRCNN", "arch_params": {}, "intensity": MR, "datasets": MR_DATA,
         "pixel_loss": "mse", "scale_range": [0.9, 1.12]},
        False,
    ),
    "srcnn-ct-x2": (
        {"arch": "SRCNN", "arch_params": {}, "intensity": CT, "datasets": CT_DATA,
         "pixel_loss": "mse", "scale_range": [0.9, 1.12]},
        False,
    ),
    "srresnet-mr-x2": (
        {"arch": "SRResNet", "arch_params": {}, "intensity": MR, "datasets": MR_DATA,
         "pixel_loss": "mse", "scale_range": [0.9, 1.12]},
        True,
    ),
    "srresnet-ct-x2": (
        {"arch": "SRResNet", "arch_params": {}, "intensity": CT, "datasets": CT_DATA,
         "pixel_loss": "mse", "scale_range": [0.9, 1.12]},
        True,
    ),
}  # fmt: skip

BUNDLED = ("mr-x2", "ct-x2", "general-x2")


def run_recipe(
    name: str,
    data_dir: str,
    out_dir: str,
    psnr_minutes: float | None,
    gan_minutes: float | None,
    psnr_iters: int,
    gan_iters: int,
    device: str = "auto",
    threads: int | None = None,
    batch: int = 16,
    patch: int = 128,
    resume: bool = False,
    gan: bool = True,
) -> dict[str, str]:
    """Train one recipe (PSNR stage, then GAN stage); returns the generator paths."""
    from training.train import TrainConfig, fit

    fields, has_gan = RECIPES[name]
    common = dict(
        name=name, data_dir=data_dir, out_dir=out_dir, device=device, threads=threads,
        batch=batch, patch=patch, resume=resume, val_every=500, log_every=100,
        ckpt_every=1000, progress=True,
    )  # fmt: skip
    out: dict[str, str] = {}
    cfg = TrainConfig(stage="psnr", iters=psnr_iters, minutes=psnr_minutes, **common, **fields)
    out["psnr"] = str(fit(cfg))
    if has_gan and gan:
        cfg = TrainConfig(
            stage="gan", iters=gan_iters, minutes=gan_minutes, init_from=out["psnr"],
            **common, **fields,
        )  # fmt: skip
        out["gan"] = str(fit(cfg))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.bundled", description=__doc__)
    ap.add_argument("--only", nargs="*", default=None, help=f"recipes (of {', '.join(RECIPES)})")
    ap.add_argument("--data", default="runs/data")
    ap.add_argument("--out", default="runs/bundled")
    ap.add_argument("--psnr-minutes", type=float, default=None)
    ap.add_argument("--gan-minutes", type=float, default=None)
    ap.add_argument("--psnr-iters", type=int, default=20000)
    ap.add_argument("--gan-iters", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--parallel", action="store_true", help="one process per recipe (GPU host)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-gan", action="store_true")
    a = ap.parse_args(argv)
    names = a.only or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        ap.error(f"unknown recipe(s) {unknown}; known: {', '.join(RECIPES)}")
    t0 = time.perf_counter()
    if a.parallel and len(names) > 1:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        procs = []
        for n in names:
            cmd = [sys.executable, "-m", "training.bundled", "--only", n]
            for flag in ("data", "out", "psnr_minutes", "gan_minutes", "psnr_iters",
                         "gan_iters", "batch", "patch", "device", "threads"):  # fmt: skip
                v = getattr(a, flag)
                if v is not None:
                    cmd += [f"--{flag.replace('_', '-')}", str(v)]
            if a.resume:
                cmd.append("--resume")
            if a.no_gan:
                cmd.append("--no-gan")
            log = open(Path(a.out) / f"{n}.log", "w")  # noqa: SIM115 - child's stdout
            procs.append((n, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)))
        rc = 0
        for n, p in procs:
            r = p.wait()
            print(f"{n}: exit {r}", flush=True)
            rc = rc or r
        print(f"all recipes: {time.perf_counter() - t0:.0f} s", flush=True)
        return rc
    for n in names:
        paths = run_recipe(
            n, a.data, a.out, a.psnr_minutes, a.gan_minutes, a.psnr_iters, a.gan_iters,
            a.device, a.threads, a.batch, a.patch, a.resume, gan=not a.no_gan,
        )  # fmt: skip
        print(json.dumps({n: paths}), flush=True)
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
