"""`srnode train evaluate`: the whole held-out evaluation run and its card metrics."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.evaluate.heldout import (
    DEFAULT_DATASETS,
    ROLE_CANDIDATES,
    ROLE_LABEL,
    ROLES,
    EngineRunner,
    Evaluation,
    engine_methods,
    evaluate,
    find_role_cards,
    heldout_samples,
    interpolate_onnx,
    interpolation_methods,
    model_family,
    training_images,
)
from training.evaluate.metrics import NiqeModel, fit_niqe_model
from training.evaluate.report import unseen_dicom, write_report
from training.evaluate.stats import summarize

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# the whole run (the CLI calls this)
# ---------------------------------------------------------------------------------------


def run_evaluation(
    model: str | Path,
    data_dir: Path,
    datasets: Sequence[str] | None = None,
    split: str = "test",
    max_images: int = 30,
    out_report: Path | None = None,
    figures_dir: Path | None = None,
    extra_cards: dict[str, Path] | None = None,
    interp_alpha: float = 0.8,
    niqe_params: Path | None = None,
    inception_weights: Path | None = None,
    unseen: bool = True,
    threads: int = 1,
    progress: bool = True,
    command: str = "",
    baselines_dirs: Sequence[Path] = (),
    notes: Sequence[str] = (),
    update_card: bool = False,
) -> Path:
    from sr_engine.model_card import load_card
    from sr_engine.registry import resolve_model

    card_path = resolve_model(model)
    card = load_card(card_path)
    fam = model_family(card.name)
    recorded = [d.get("name") if isinstance(d, dict) else d
                for d in card.training_data.get("datasets") or []]  # fmt: skip
    datasets = list(datasets or [d for d in recorded if d] or DEFAULT_DATASETS[fam])
    cards = find_role_cards(card_path, baselines_dirs)
    cards.update(extra_cards or {})
    tmp = Path(tempfile.mkdtemp(prefix="srnode-eval-"))
    runners: dict[str, EngineRunner] = {}
    try:
        if "esrgan-interp" not in cards and "esrgan-gan" in cards:
            try:
                cards["esrgan-interp"] = interpolate_onnx(cards["esrgan-psnr"], cards["esrgan-gan"],
                                                          interp_alpha, tmp)  # fmt: skip
            except ValueError as e:
                log.warning("no interpolated model: %s", e)
        methods = interpolation_methods(card.scale)
        for role in ROLES:
            if role in cards:
                runners[role] = EngineRunner(cards[role], threads=threads)
                label = ROLE_LABEL[role]
                methods += engine_methods(runners[role], label, role)
        samples = heldout_samples(data_dir, datasets, card.intensity, split, max_images)
        if not samples:
            raise ValueError(f"no {split} images in {data_dir} for {', '.join(datasets)}")
        train = training_images(data_dir, datasets, card.intensity)
        nm = fit_niqe_model(train, block_size=32,
                            source=f"fitted on {len(train)} HR training images of "
                                   f"{', '.join(datasets)}")  # fmt: skip
        std = NiqeModel.load(niqe_params) if niqe_params else None
        feats = None
        if inception_weights is not None:
            from training.evaluate.fid import InceptionFeatures

            feats = InceptionFeatures(inception_weights)
        ev = evaluate(samples, methods, card.scale, card.degradation.operator, nm, std,
                      progress=progress, features=feats)  # fmt: skip
        fid_note = fid_status(inception_weights, len(samples))
        unseen_rows = None
        if unseen:
            mods = {"mr": ["MR"], "ct": ["CT"]}.get(fam, ["CR", "MR", "CT"])
            unseen_rows = unseen_dicom(runners["esrgan-psnr"], mods)
        out_report = out_report or card_path.with_name(f"{card.name}.report.md")
        figures_dir = figures_dir or card_path.parent / "reports"
        ctx: dict[str, Any] = {
            "command": f"`{command}`" if command else "",
            "models": ", ".join(
                f"{ROLE_LABEL[r]} = `{runners[r].card.name}` {runners[r].card.version} "
                f"(sha256 {runners[r].card.short_sha})"
                for r in runners
            ),
            "architecture": f"{card.architecture.name} {card.architecture.params}",
            "intensity model": card.intensity.model
            + (f" window {list(card.intensity.window)} HU" if card.intensity.window else ""),
            "data": f"{', '.join(datasets)} from `{data_dir}`, split `{split}`",
            "PSNR data range 1.0 means": data_range_note(card.intensity),
            "FID": fid_note,
        }
        ctx.update(training_facts(runners))
        missing = [ROLE_LABEL[r] for r in ROLES if r not in runners]
        if missing:
            ctx["not evaluated"] = (
                ", ".join(missing)
                + ": no card found ("
                + "; ".join(
                    f"{ROLE_LABEL[r]}: "
                    + ", ".join(p.format(b=card.name) for p in ROLE_CANDIDATES[r])
                    for r in ROLES
                    if r in ROLE_CANDIDATES and r not in runners
                )
                + ")"
            )
        ctx = {k: v for k, v in ctx.items() if v}
        if "esrgan-interp" in runners and "esrgan-interp" not in (extra_cards or {}):
            ctx["interpolated model"] = f"alpha = {interp_alpha} (weights (1-α)·PSNR + α·GAN)"
        hist_card = runners.get("esrgan-gan", runners["esrgan-psnr"]).card
        training = hist_card.training_data if "history" in hist_card.training_data else None
        if training is not None:  # the history table says it better than per-card lines
            for role in ("esrgan-psnr", "esrgan-gan"):
                ctx.pop(f"training ({ROLE_LABEL[role]})", None)
        path = write_report(
            ev, card.name, out_report, figures_dir, ctx, unseen_rows, notes, training
        )
        if update_card:
            for role, r in runners.items():
                if role in ("esrgan-psnr", "esrgan-gan") and r.card_path.parent != tmp:
                    write_card_metrics(r.card_path, ev, f"{ROLE_LABEL[role]} node", split, path)
        return path
    finally:
        for r in runners.values():
            r.engine.close()
        shutil.rmtree(tmp, ignore_errors=True)


def data_range_note(intensity: Any) -> str:
    if intensity.model == "ct_hu":
        lo, hi = intensity.window
        return f"the card's HU window [{lo:g}, {hi:g}] ({hi - lo:g} HU)"
    if intensity.model == "percentile":
        p0, p1 = intensity.percentiles
        return f"each HR image's [{p0:g}, {p1:g}] percentile range of its stored values"
    return (
        "the full BitsStored range of each source (255 for the 8-bit Colin27 MRI, 4095 for "
        "the 12-bit stored Cranium CT, …)"
    )


def training_facts(runners: dict[str, EngineRunner]) -> dict[str, str]:
    """What the cards say about how each model was trained (command, wall time, device)."""
    out: dict[str, str] = {}
    for role in ("esrgan-psnr", "esrgan-gan", "srcnn", "srgan"):
        if role not in runners:
            continue
        td = runners[role].card.training_data
        parts = []
        if td.get("summary"):
            parts.append(str(td["summary"]))
        it = td.get("iterations", td.get("iters"))
        if it is not None:
            parts.append(f"{it} iterations")
        if td.get("wall_s") is not None:
            parts.append(f"wall time {float(td['wall_s']):.0f} s")
        if td.get("device"):
            parts.append(f"on {td['device']}")
        cmd = td.get("command") or td.get("train_command")
        if cmd:
            parts.append(f"command `{cmd}`")
        if parts:
            out[f"training ({ROLE_LABEL[role]})"] = "; ".join(parts)
    return out


def write_card_metrics(card_path: Path, ev: Evaluation, method: str, split: str, report: Path):
    """Record the held-out summary of ``method`` in the card's ``metrics.heldout`` (the
    weights and their sha256 are untouched)."""
    from sr_engine.model_card import load_card

    card = load_card(card_path, verify=False)
    row = next(r for r in summarize(ev) if r["method"] == method)
    bic = next(r for r in summarize(ev) if r["method"] == "bicubic")
    summary = {
        "split": split,
        "n_images": row["n"],
        "degradation": f"{ev.operator} x{ev.scale}",
        "psnr_db": round(row["psnr"][0], 3),
        "psnr_ci95_db": round(row["psnr"][1], 3),
        "ssim": round(row["ssim"][0], 4),
        "bicubic_psnr_db": round(bic["psnr"][0], 3),
        "bicubic_ssim": round(bic["ssim"][0], 4),
        "psnr_data_range": "1.0 = the card's intensity range",
        "report": report.name,
    }
    if np.isfinite(row["niqe"][0]):
        summary["niqe_fitted"] = round(row["niqe"][0], 3)
    metrics = dict(card.metrics) | {"heldout": summary}
    card_path.write_text(card.model_copy(update={"metrics": metrics}).to_json())


def fid_status(inception_weights: Path | None, n_images: int = 0) -> str:
    if inception_weights is None:
        return (
            "skipped: no Inception-v3 weights given (`--inception-weights`); nothing is downloaded"
        )
    return (
        f"Inception-v3 pool features ({inception_weights.name}) of each method's outputs vs "
        f"the {n_images} HR images; with fewer images than 2048 feature dimensions the "
        "covariances are rank-deficient: compare methods with each other only"
    )


# ---------------------------------------------------------------------------------------
# CLI: srnode train evaluate
# ---------------------------------------------------------------------------------------


def _command_line(argv: Sequence[str]) -> str:
    """``srnode …`` as typed, with each ``--note TEXT`` shortened (the notes are printed)."""
    import shlex

    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--note":
            out.append("--note …")
            skip = True
        elif a.startswith("--note="):
            out.append("--note …")
        else:
            out.append(shlex.quote(a))
    return "srnode " + " ".join(out)


def register_evaluate(train_app: Any) -> None:
    """Add ``evaluate`` to the ``srnode train`` typer app."""
    import sys

    import typer

    @train_app.command("evaluate")
    def evaluate_cmd(
        model: str = typer.Argument(
            ..., help="the ESRGAN-PSNR model: a name (mr-x2) or the path of its card (.json)"
        ),
        data_dir: Path = typer.Option(
            Path("runs/data"), "--data-dir", help="prepared datasets (`srnode train prepare`)"
        ),
        datasets: str = typer.Option(
            "", help="comma-separated dataset names (default: the card's, else by model family)"
        ),
        split: str = typer.Option("test", help="split to evaluate on"),
        max_images: int = typer.Option(30, help="held-out images, spread evenly over the split"),
        gan: Path | None = typer.Option(None, help="ESRGAN-GAN card (default: <name>-gan.json)"),
        srcnn: Path | None = typer.Option(None, help="SRCNN card (default: <name>-srcnn.json)"),
        srgan: Path | None = typer.Option(None, help="SRGAN card (default: <name>-srgan.json)"),
        interp: Path | None = typer.Option(
            None, help="interpolated-model card (default: <name>-interp.json, else built)"
        ),
        alpha: float = typer.Option(0.8, help="network interpolation weight of the GAN model"),
        niqe_params: Path | None = typer.Option(
            None, help="standard NIQE parameters (modelparameters.mat or .npz)"
        ),
        inception_weights: Path | None = typer.Option(
            None, help="Inception-v3 weights for FID (without: FID skipped)"
        ),
        unseen: bool = typer.Option(True, help="also evaluate on pydicom test DICOM files"),
        report: Path | None = typer.Option(
            None, help="report path (default: <card dir>/<name>.report.md)"
        ),
        figures_dir: Path | None = typer.Option(
            None, help="PNG / CSV folder (default: <card dir>/reports)"
        ),
        threads: int = typer.Option(1, help="ONNX Runtime threads per model"),
        baselines_dir: list[Path] = typer.Option(
            [], help="more folders to look for the baseline cards in (repeatable)"
        ),
        note: list[str] = typer.Option([], help="a note for the targets section (repeatable)"),
        update_card: bool = typer.Option(
            False, help="record the held-out summary in the cards' metrics.heldout"
        ),
    ) -> None:
        """Evaluate a model against interpolation and learned baselines; write the report."""
        from sr_engine.errors import SrEngineError

        extra = {
            role: p
            for role, p in (
                ("esrgan-gan", gan),
                ("srcnn", srcnn),
                ("srgan", srgan),
                ("esrgan-interp", interp),
            )
            if p is not None
        }
        for p in extra.values():
            if not p.is_file():
                raise typer.BadParameter(f"model card {p} not found")
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        try:
            path = run_evaluation(
                model,
                data_dir,
                [d.strip() for d in datasets.split(",") if d.strip()] or None,
                split,
                max_images,
                report,
                figures_dir,
                extra,
                alpha,
                niqe_params,
                inception_weights,
                unseen,
                threads,
                progress=sys.stderr.isatty(),
                command=_command_line(sys.argv[1:]),
                baselines_dirs=baselines_dir,
                notes=note,
                update_card=update_card,
            )
        except (SrEngineError, FileNotFoundError, ValueError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"report: {path}")
