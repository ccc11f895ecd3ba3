"""``srnode train ...``: data preparation, training, export (needs the ``train`` extra).

Nothing here imports torch at module level: ``srnode`` runs without it, and a train
command says plainly when torch is missing.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import typer

from training.data.sources import FILL_CACHE_COMMAND

train_app = typer.Typer(
    name="train",
    help="Train and export super-resolution networks (needs the train extra: "
    "pip install 'srnode\\[train]').",
    no_args_is_help=True,
)


def _need_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        typer.echo(
            "error: `srnode train` needs PyTorch, which is not installed: "
            "pip install 'srnode[train]'",
            err=True,
        )
        raise typer.Exit(2) from None


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


PREPARE_HELP = (
    "Gather the training data into prepared datasets, split by slabs/subjects.\n\n"
    "From Debian packages: Colin27 MRI (mricron-data) and the InVesalius head CT "
    "(invesalius-examples). From the cache folder (--cache): pyradiomics 3.0.1 chest CT and "
    "brain MR, pycortex 1.4.0 T1 MR, Debian heudiconv's Siemens mosaics, and radiograph-like "
    "DRRs of every CT. Nothing is downloaded: fill the cache once with\n\n{fill}"
)


@train_app.command(help=PREPARE_HELP.format(fill=FILL_CACHE_COMMAND))
def prepare(
    out: Path = typer.Option(Path("runs/data"), "--out", help="folder for the prepared datasets"),
    cache: Path | None = typer.Option(
        None, "--cache", help="folder holding the packaged sources (see above)"
    ),
    drr: bool = typer.Option(True, help="synthesise DRRs (radiographs) from the CT volumes"),
    gap_mm: float = typer.Option(4.0, help="gap between train/val/test slabs (mm)"),
    seed: int = typer.Option(0, help="split seed (recorded)"),
) -> None:
    from training.data.prepare import prepare_cached, prepare_debian

    try:
        paths = prepare_debian(out, gap_mm=gap_mm, seed=seed)
        if cache is not None:
            paths += prepare_cached(out, cache, gap_mm=gap_mm, seed=seed, drr=drr)
    except (FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    for p in paths:
        doc = json.loads(p.read_text())
        n = {k: sum(b - a for a, b in v) for k, v in doc["slabs"].items()}
        typer.echo(f"{doc['name']}: {doc['shape']} {doc['dtype']}, slices {n}")


@train_app.command("prepare-folder")
def prepare_folder(
    source: Path = typer.Argument(..., help="the data folder"),
    kind: str = typer.Option(..., help="nifti | dicom | images | ixi | cxr14"),
    out: Path = typer.Option(Path("runs/data"), "--out"),
    prefix: str = typer.Option("user", help="prefix of the prepared dataset names"),
    modality: str = typer.Option("OT", help="DICOM modality of NIfTI / image data"),
    seed: int = typer.Option(0, help="patient-level split seed (70/15/15)"),
    limit: int = typer.Option(0, help="use at most this many items (0 = all)"),
) -> None:
    """Prepare your own data with a patient-level split (one subject per file or series)."""
    import numpy as np

    from training.data import adapters, readers
    from training.data.prepare import prepare_volumes

    vols: list[readers.Volume] = []
    if kind == "nifti":
        for p in sorted(source.rglob("*.nii*"))[: limit or None]:
            vols.append(readers.read_nifti(p, modality))
    elif kind == "ixi":
        for it in adapters.ixi(source)[: limit or None]:
            v = readers.read_nifti(it.path, "MR", subject=it.subject)
            vols.append(v)
    elif kind == "dicom":
        folders = sorted({p.parent for p in source.rglob("*") if p.is_file()})
        for f in folders[: limit or None]:
            try:
                vols.append(readers.read_dicom_series(f))
            except ValueError as e:
                typer.echo(f"skipped {f}: {e}", err=True)
    elif kind in ("images", "cxr14"):
        if kind == "cxr14":
            pairs = [(it.subject, it.path) for it in adapters.chestxray14(source)]
        else:
            pairs = [(p.stem, p) for p, _ in readers.read_image_folder(source)]
        for subject, p in pairs[: limit or None]:
            a = readers.read_image(p)
            vols.append(
                readers.Volume(a[None], (1.0, 1.0, 1.0), readers.image_meta(a, modality),
                               subject, str(p))
            )  # fmt: skip
    else:
        raise typer.BadParameter(
            "kind must be nifti, dicom, images, ixi or cxr14", param_hint="--kind"
        )
    if not vols:
        typer.echo("error: no images found", err=True)
        raise typer.Exit(1)
    paths = prepare_volumes(out, vols, prefix, seed=seed)
    subjects = {v.subject for v in vols}
    typer.echo(f"{len(paths)} datasets from {len(subjects)} subjects -> {out}")
    del np


@train_app.command()
def fit(
    name: str = typer.Option(..., help="run name (folder under --out)"),
    stage: str = typer.Option("psnr", help="psnr | gan"),
    datasets: str = typer.Option("", help="prepared dataset names, comma separated (all)"),
    data: Path = typer.Option(Path("runs/data"), "--data"),
    out: Path = typer.Option(Path("runs"), "--out"),
    intensity: str = typer.Option("percentile", help="ct_hu | percentile | bits_stored"),
    window: str = typer.Option("-1024,3071", help="ct_hu window lo,hi (HU)"),
    arch: str = typer.Option("RRDBNet", help="RRDBNet | SRCNN | SRResNet"),
    nf: int = typer.Option(32, help="RRDBNet/SRResNet features"),
    nb: int = typer.Option(6, help="RRDBNet/SRResNet blocks"),
    gc: int = typer.Option(16, help="RRDBNet growth channels"),
    scale: int = typer.Option(2),
    degradation: str = typer.Option("area", help="area | bicubic | kspace | blur_noise"),
    iters: int = typer.Option(10000),
    minutes: float | None = typer.Option(None, help="stop after this many minutes"),
    batch: int = typer.Option(16),
    patch: int = typer.Option(128, help="HR patch edge"),
    lr: float | None = typer.Option(None),
    init_from: Path | None = typer.Option(None, help="generator.pt to start from (GAN stage)"),
    vgg_weights: Path | None = typer.Option(None, help="torchvision VGG19 state dict (.pth)"),
    discriminator: str = typer.Option("vgg", help="vgg | unet"),
    device: str = typer.Option("auto"),
    threads: int | None = typer.Option(None, help="CPU threads (torch.set_num_threads)"),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, help="continue from ckpt_last.pt"),
    intensity_aug: bool | None = typer.Option(
        None, help="gamma/contrast/offset augmentation (default: on for bits_stored)"
    ),
    scale_range: str = typer.Option("0.9,1.12", help="random scaling of HR patches lo,hi"),
    val_every: int = typer.Option(500),
    log_every: int = typer.Option(50),
    train_axes: str = typer.Option("0,1,2", help="slice axes of the training volumes"),
    amp: str = typer.Option("auto", help="bf16 autocast: auto (CUDA) | on | off"),
    channels_last: str = typer.Option("auto", help="NHWC tensors: auto (CUDA) | on | off"),
    noise_prob: float = typer.Option(0.0, help="share of LR inputs with added Gaussian noise"),
    noise_sigma: float = typer.Option(0.01, help="its largest std ([0, 1] units)"),
    srcnn_residual: bool = typer.Option(
        True, help="SRCNN: learn the detail over bicubic (the 2014 paper learns the image)"
    ),
    interp_prob: float = typer.Option(
        0.0,
        help="share of HR patches zero-filled in k-space by x1.4-2 first, as MR scanners "
        "display a small acquisition matrix",
    ),
    interp_anisotropic: float = typer.Option(
        0.0,
        help="share of those with fewer phase-encoding lines: one axis interpolated by a "
        "further x1-2 (a 256x134 acquisition shown at 484²)",
    ),
    ckpt_minutes: float = typer.Option(5.0, help="checkpoint at least this often (minutes)"),
    max_val_images: int = typer.Option(48, help="validation images (evenly spaced)"),
) -> None:
    """Train one stage (PSNR, or GAN from a PSNR generator)."""
    _need_torch()
    from training.fit.config import TrainConfig
    from training.fit.loop import fit as run_fit

    inten: dict = {"model": intensity}
    if intensity == "ct_hu":
        lo, hi = (float(v) for v in window.split(","))
        inten["window"] = [lo, hi]
    elif intensity == "percentile":
        inten["percentiles"] = [0.0, 99.8]
    if arch == "RRDBNet":
        params = {"num_feat": nf, "num_block": nb, "num_grow_ch": gc, "global_skip": "bilinear"}
    elif arch == "SRResNet":
        params = {"num_feat": nf, "num_block": nb}
    elif arch == "SRCNN":
        params = {"residual": srcnn_residual}
    else:
        params = {}
    cfg = TrainConfig(
        name=name, stage=stage, datasets=_csv(datasets), data_dir=str(data), out_dir=str(out),
        arch=arch, arch_params=params, scale=scale, intensity=inten, degradation=degradation,
        iters=iters, minutes=minutes, batch=batch, patch=patch, lr=lr,
        init_from=str(init_from) if init_from else None,
        vgg_weights=str(vgg_weights) if vgg_weights else None, discriminator=discriminator,
        device=device, threads=threads, seed=seed, resume=resume,
        intensity_aug=intensity == "bits_stored" if intensity_aug is None else intensity_aug,
        scale_range=[float(v) for v in scale_range.split(",")], val_every=val_every,
        log_every=log_every, train_axes=[int(v) for v in _csv(train_axes)], amp=amp,
        channels_last=channels_last, noise_prob=noise_prob, noise_sigma=noise_sigma,
        interp_prob=interp_prob, interp_anisotropic=interp_anisotropic,
        ckpt_minutes=ckpt_minutes, max_val_images=max_val_images,
        command="srnode train fit " + shlex.join(sys.argv[3:]),
    )  # fmt: skip
    path = run_fit(cfg)
    typer.echo(f"generator: {path}")


@train_app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def bundled(ctx: typer.Context) -> None:
    """Train the bundled recipes (options as `python -m training.bundled --help`)."""
    _need_torch()
    from training.bundled import main

    raise typer.Exit(main(list(ctx.args)))


@train_app.command()
def interpolate(
    psnr: Path = typer.Argument(..., help="generator.pt of the PSNR stage"),
    gan: Path = typer.Argument(..., help="generator.pt of the GAN stage"),
    alpha: float = typer.Option(0.8, help="weight of the GAN network (ESRGAN interpolation)"),
    out: Path = typer.Option(..., "--out", help="output generator.pt"),
) -> None:
    """Network interpolation between a PSNR and a GAN generator."""
    _need_torch()
    from training.fit.generator import interpolate as interp

    typer.echo(f"written {interp(psnr, gan, alpha, out)}")


@train_app.command()
def export(
    generator: Path = typer.Argument(..., help="generator.pt"),
    name: str = typer.Option(..., help="model name (file stem and card name)"),
    out: Path = typer.Option(Path("runs/export"), "--out"),
    modalities: str = typer.Option("", help="DICOM modalities it serves, comma separated"),
    data: Path | None = typer.Option(None, "--data", help="prepared data: held-out metrics"),
    tensorrt: bool = typer.Option(False, help="also build a TensorRT engine (GPU host)"),
    description: str = typer.Option("", help="one line for the card: what the model is for"),
    update: Path | None = typer.Option(
        None,
        help="the card of the bundled model this replaces: one major version up, its "
        "history and sources kept (the modalities are the bundled model's)",
    ),
    init_card: Path | None = typer.Option(
        None,
        help="with --update: the card whose weights the run started from, when it is "
        "another model (a -gan model's GAN stage starts from its PSNR model)",
    ),
) -> None:
    """ONNX (dynamic H/W, parity-checked) + model card; optionally a TensorRT engine."""
    _need_torch()
    from training.export.onnx import export_all
    from training.export.tensorrt import build_tensorrt_engine

    if update is not None:
        from training.bundled import export_finetuned

        card = export_finetuned(
            name, generator, update, out, data or Path("runs/data"), init_card=init_card
        )
        onnx_path = card.with_suffix(".onnx")
        metrics = json.loads(card.read_text())["metrics"]
    else:
        onnx_path, card, metrics = export_all(
            generator, out, name, _csv(modalities), data, description=description
        )
    typer.echo(f"{onnx_path}\n{card}\n{json.dumps(metrics, indent=1)}")
    if tensorrt:
        try:
            e = build_tensorrt_engine(onnx_path, onnx_path.with_suffix(".engine"))
        except RuntimeError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"engine: {e}")


@train_app.command("export-bundled")
def export_bundled_cmd(
    runs: Path = typer.Option(Path("runs/bundled"), help="folder of the trained recipes"),
    baselines: Path | None = typer.Option(None, help="folder with srcnn-* runs (comparison)"),
    out: Path = typer.Option(Path("sr_engine/models"), "--out"),
    data: Path = typer.Option(Path("runs/data"), "--data"),
) -> None:
    """Export mr-x2, ct-x2, general-x2 and their -gan versions with cards and metrics."""
    _need_torch()
    from training.bundled import export_bundled

    rep = export_bundled(runs, out, data, baselines)
    typer.echo(json.dumps(rep, indent=1))


@train_app.command("tensorrt")
def tensorrt_cmd(
    onnx_path: Path = typer.Argument(..., help="model .onnx"),
    engine: Path | None = typer.Option(None, help="output .engine (default: beside the ONNX)"),
    fp16: bool = typer.Option(True),
    print_only: bool = typer.Option(False, help="print the trtexec command only"),
) -> None:
    """Build a TensorRT engine on a GPU host (untested here: TensorRT is not installable)."""
    from training.export.tensorrt import build_tensorrt_engine, tensorrt_command

    engine = engine or onnx_path.with_suffix(".engine")
    if print_only:
        typer.echo(" ".join(tensorrt_command(onnx_path, engine, fp16)))
        return
    try:
        typer.echo(f"engine: {build_tensorrt_engine(onnx_path, engine, fp16)}")
    except RuntimeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


@train_app.command()
def benchmark(
    models: list[Path] = typer.Option(
        None, "--model", help="model card (.json); repeat it (default: the bundled models)"
    ),
    srcnn: list[Path] = typer.Option(
        None, "--srcnn", help="SRCNN card(s) to compare (default: the bundled baselines)"
    ),
    baselines: bool = typer.Option(
        True, help="the bundled SRCNN baselines (sr_engine/models/baselines) when no --srcnn"
    ),
    update_cards: bool = typer.Option(
        False, help="record each model's numbers in its card's metrics.unseen_benchmark"
    ),
    out: Path = typer.Option(Path("runs/unseen"), "--out", help="report folder"),
    only: str = typer.Option("", help="image names to run (comma separated; all by default)"),
    noise: bool = typer.Option(True, help="noise in flat CT patches (needs a CT model)"),
    variants: bool = typer.Option(
        True, help="storage variants: the same crops in each container real archives use"
    ),
    threads: int = typer.Option(2, help="ONNX Runtime threads"),
) -> None:
    """The unseen benchmark: every CT, MR, CR/DX/MG image of pydicom's test files and
    pydicom-data (>= 128², decompressed), area x2; nearest, bicubic, the floor (bicubic +
    exact area projection), SRCNN and each model through the node's own path (Engine with
    data consistency); noise by frequency band in flat patches; the same crops in each
    storage container (--variants). Writes unseen.md (tables, crops) and unseen.json into
    --out."""
    import time

    from rich.progress import Progress

    from sr_engine.registry import bundled_model_dir
    from training.evaluate.storage_variants import run_variants, variants_table
    from training.evaluate.unseen import (
        ModelRunner,
        noise_in_flat_patches,
        run_benchmark,
        summarize,
        unseen_images,
    )
    from training.evaluate.unseen_noise import noise_bands, noise_table
    from training.evaluate.unseen_report import write_report

    t0 = time.perf_counter()
    if not models:
        models = [bundled_model_dir() / f"{n}.json" for n in ("ct-x2", "mr-x2", "general-x2")]
    if not srcnn and baselines:
        srcnn = sorted((bundled_model_dir() / "baselines").glob("srcnn-*.json"))
    runners = [ModelRunner(c, threads=threads) for c in models]
    runners += [ModelRunner(c, f"SRCNN ({c.stem})", threads) for c in srcnn or []]
    labels = [r.label for r in runners]
    for r in runners:  # two versions of one model: name them by version
        if labels.count(r.label) > 1:
            r.label = f"{r.label} {r.engine.card.version}"
    images, skipped = unseen_images()
    if only:
        images = [i for i in images if i.name in set(_csv(only))]
    with Progress() as bar:
        task = bar.add_task("images", total=len(images))
        rows, outputs = run_benchmark(images, runners, lambda _n: bar.advance(task))
    ct = next((r for r in runners if "CT" in r.modalities and not r.label.startswith("SRCNN")),
              None)  # fmt: skip
    noise_rows = noise_in_flat_patches(images, ct) if noise and ct else []
    labels = [r.label for r in runners]
    summary = summarize(rows)
    bands = noise_bands(images, outputs)
    sections, extra = [noise_table(bands)], {"noise_bands": bands}
    if variants:
        models_only = [r for r in runners if not r.label.startswith("SRCNN")]
        var_rows = run_variants(images, models_only)
        sections.append(variants_table(var_rows))
        extra["storage_variants"] = var_rows
    report = write_report(
        out, rows, summary, noise_rows, images, outputs, labels, skipped,
        "srnode train benchmark " + shlex.join(sys.argv[3:]), time.perf_counter() - t0,
        sections, extra,
    )  # fmt: skip
    typer.echo(f"report: {report}")
    if update_cards:
        from training.evaluate.unseen_report import add_to_card

        for r, card in zip(runners, models, strict=False):  # the models come first
            add_to_card(card, summary, r.label, os.path.relpath(report, card.parent))
            typer.echo(f"card: {card}")


@train_app.command("residual-scale")
def residual_scale_cmd(
    card: Path = typer.Argument(..., help="model card (.json) of an RRDBNet with a global skip"),
    datasets: str = typer.Option(..., help="prepared datasets whose validation slices decide"),
    data: Path = typer.Option(Path("runs/data"), "--data"),
    alphas: str = typer.Option("0.5,0.75,1", help="residual scales to try"),
    per_dataset: int = typer.Option(3, help="validation slices per dataset"),
    out: Path = typer.Option(Path("runs/export"), "--out", help="folder of the scaled model"),
    name: str = typer.Option("", help="name of the scaled model (default: the card's)"),
) -> None:
    """Choose how much detail the network adds (out = bilinear + a * residual) on the
    validation split, with the unseen benchmark's protocol, and write the scaled model."""
    from training.export.residual_scale import choose_alpha, scale_residual

    res = choose_alpha(card, data, _csv(datasets), [float(a) for a in _csv(alphas)],
                       per_dataset, out / "residual_scale")  # fmt: skip
    typer.echo(json.dumps({k: res[k] for k in ("alpha", "validation", "images")}, indent=1))
    target = scale_residual(card, res["alpha"], out, name or json.loads(card.read_text())["name"])
    doc = json.loads(target.read_text())
    doc["training_data"]["residual_scale_validation"] = {
        k: res[k] for k in ("validation", "images")
    }
    target.write_text(json.dumps(doc, indent=2) + "\n")
    typer.echo(f"written {target}")


def register(app: typer.Typer) -> None:
    """Add ``srnode train`` to the root app (called by dicom_node.cli)."""
    try:
        from training.evaluate.cli import register_evaluate
    except ImportError:
        pass
    else:
        register_evaluate(train_app)
    app.add_typer(train_app, name="train")
