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
# radiographs and unknown modalities: their own percentile range, as MR (the whole BitsStored
# range made the gain depend on the container: an 8-bit range in 16 bits lost its contrast)
GENERAL = {"model": "percentile", "percentiles": [0.0, 99.8]}

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
    lr: float | None = None,
    init_dir: str | None = None,
) -> dict[str, str]:
    """Train one recipe (PSNR stage, then GAN stage); returns the generator paths."""
    from training.fit.config import TrainConfig
    from training.fit.loop import fit

    fields, has_gan = RECIPES[name]
    common = dict(
        name=name, data_dir=data_dir, out_dir=out_dir, device=device, threads=threads,
        batch=batch, patch=patch, resume=resume, val_every=500, log_every=100,
        ckpt_every=1000, progress=True,
    )  # fmt: skip
    out: dict[str, str] = {}
    init = str(Path(init_dir) / name / "psnr" / "generator.pt") if init_dir else None
    cfg = TrainConfig(
        stage="psnr", iters=psnr_iters, minutes=psnr_minutes, lr=lr, init_from=init,
        **common, **fields,
    )  # fmt: skip
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
    ap.add_argument("--lr", type=float, default=None, help="PSNR-stage learning rate")
    ap.add_argument(
        "--init-dir", default=None, help="continue the PSNR stage from <dir>/<recipe>/psnr"
    )
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
            flags = ("data", "out", "psnr_minutes", "gan_minutes", "psnr_iters", "gan_iters",
                     "batch", "patch", "device", "threads", "lr", "init_dir")  # fmt: skip
            for flag in flags:
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
            a.device, a.threads, a.batch, a.patch, a.resume, gan=not a.no_gan, lr=a.lr,
            init_dir=a.init_dir,
        )  # fmt: skip
        print(json.dumps({n: paths}), flush=True)
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


# --- export of the bundled set ---------------------------------------------------------
MODALITIES = {
    "mr-x2": ["MR"],
    "ct-x2": ["CT"],
    "general-x2": ["CR", "DX", "MG", "XA", "RF", "IO", "PX", "OT", "SC"],
}
DESCRIPTIONS = {
    "mr-x2": "x2 super-resolution of MR images (percentile intensity model), Colin27 T1.",
    "ct-x2": "x2 super-resolution of CT images in HU (window -1024..3071), head CT.",
    "general-x2": "x2 super-resolution of any grayscale image over its whole stored range "
    "(radiographs and unknown modalities); trained on brain MR and head CT with gamma and "
    "contrast augmentation.",
}
LICENSES = {
    "mr-x2": "Apache-2.0 weights; trained on Colin27 (mricron-data, BSD-3-clause)",
    "ct-x2": "Apache-2.0 weights; trained on the InVesalius Cranium example (GPL-2)",
    "general-x2": "Apache-2.0 weights; trained on Colin27 (BSD-3-clause) and the InVesalius "
    "Cranium example (GPL-2)",
}
SRCNN_BASELINE = {"mr-x2": "srcnn-mr-x2", "ct-x2": "srcnn-ct-x2"}


def export_bundled(
    runs: str | Path,
    models_dir: str | Path,
    data_dir: str | Path = "runs/data",
    baselines_runs: str | Path | None = None,
    names: tuple[str, ...] = BUNDLED,
    training: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Export ``<runs>/<name>/{psnr,gan}/generator.pt`` as ``<name>`` and ``<name>-gan``.

    The SRCNN baselines (``<baselines_runs>/srcnn-*/psnr``) are exported to a temporary
    folder and scored on the same held-out inputs. Returns the metrics per model.
    """
    import tempfile

    from training.export.onnx import export_all, export_onnx

    runs, models_dir = Path(runs), Path(models_dir)
    report: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            baselines = {}
            b = SRCNN_BASELINE.get(name)
            if b and baselines_runs and (Path(baselines_runs) / b / "psnr/generator.pt").is_file():
                p = Path(tmp) / f"{b}.onnx"
                export_onnx(Path(baselines_runs) / b / "psnr/generator.pt", p)
                baselines["srcnn"] = p
            for stage, suffix in (("psnr", ""), ("gan", "-gan")):
                gen = runs / name / stage / "generator.pt"
                if not gen.is_file():
                    continue
                extra = dict((training or {}).get(name, {}))
                _, card, metrics = export_all(
                    gen, models_dir, name + suffix, MODALITIES[name], data_dir, baselines,
                    extra, DESCRIPTIONS[name] + (" GAN (ESRGAN) version." if suffix else
                                                 " PSNR-oriented version."),
                    LICENSES[name],
                )  # fmt: skip
                report[name + suffix] = metrics
    return report


def export_finetuned(
    name: str,
    generator: str | Path,
    previous_card: str | Path,
    out_dir: str | Path,
    data_dir: str | Path = "runs/data",
    command: str = "",
    prepare_command: str = "srnode train prepare --out runs/data --cache ~/srnode-cache",
    init_card: str | Path | None = None,
) -> Path:
    """Export a new version of the bundled model ``previous_card``: ONNX, held-out metrics,
    and a card one major version up. ``init_card`` is the model whose weights the generator
    started from (default ``previous_card``; a ``-gan`` model's GAN stage starts from its
    PSNR model): the card keeps that model's history, adds this step, and its licence names
    every source the weights were ever trained on."""
    from training.export.card import licence_text
    from training.export.onnx import export_all
    from training.fit.config import TrainConfig
    from training.fit.generator import load_generator

    prev = json.loads(Path(previous_card).read_text())
    init = json.loads(Path(init_card).read_text()) if init_card else prev
    _, info = load_generator(generator)
    datasets = info.get("datasets", [])
    prev_sources = init.get("training_data", {}).get("datasets", [])
    cfg = info.get("config", {})
    history = list(init.get("training_data", {}).get("history", []))
    how = "GAN stage from" if info.get("stage") == "gan" else "fine-tuned from"
    step = {
        "step": f"{how} {init['name']} {init['version']} (sha256 {init['sha256'][:12]})",
        "command": command or cfg.get("command", ""), "device": info.get("device"),
        "iterations": info.get("iters"), "batch": info.get("batch"),
        "patch": info.get("patch"), "wall_s": info.get("wall_s"),
        "lr": TrainConfig(stage=info.get("stage", "psnr"), lr=cfg.get("lr")).resolved_lr(),
        "bf16_autocast": info.get("amp_bf16", cfg.get("amp") == "on"),
        "channels_last": info.get("channels_last", cfg.get("channels_last") == "on"),
    }  # fmt: skip
    if info.get("stage") == "gan":
        percep = (
            f"VGG19 perceptual {cfg.get('perceptual_weight')}"
            if cfg.get("vgg_weights")
            else f"discriminator feature matching {cfg.get('perceptual_weight')} (no VGG19 weights)"
        )
        step["losses"] = (
            f"L1 {cfg.get('pixel_weight')} + {percep} + relativistic GAN {cfg.get('gan_weight')}, "
            f"{cfg.get('discriminator', 'vgg').upper()}-style discriminator"
        )
    history.append(step)
    extra = {
        "prepare_command": prepare_command,
        "history": history,
        "previous_datasets": [d.get("name") for d in prev_sources],
        "augmentation": "rot90/flips, random scaling "
        f"{info.get('config', {}).get('scale_range')}, Gaussian noise on "
        f"{info.get('config', {}).get('noise_prob')} of the inputs (std up to "
        f"{info.get('config', {}).get('noise_sigma')}), padding filled as the engine does"
        + (", gamma/contrast/window" if info.get("config", {}).get("intensity_aug") else "")
        + (
            f", {cfg['interp_prob']} of the HR patches zero-filled in k-space by x1.4-2 first "
            "(as MR scanners display a small acquisition matrix)"
            if cfg.get("interp_prob")
            else ""
        ),
    }
    version = prev.get("version", "1.0.0").split(".")
    new_version = f"{int(version[0]) + 1}.0.0"
    lic = licence_text([*datasets, *prev_sources])
    modalities = prev.get("modalities") or MODALITIES[name.removesuffix("-gan")]
    onnx_path, card, _ = export_all(
        generator, out_dir, name, modalities, data_dir,
        training_data_extra=extra, description=prev.get("description", ""), license=lic,
        tile=prev.get("tile"),
    )  # fmt: skip
    doc = json.loads(card.read_text())
    doc["version"] = new_version
    card.write_text(json.dumps(doc, indent=2) + "\n")
    return card
