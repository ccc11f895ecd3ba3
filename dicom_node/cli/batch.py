"""``srnode models`` and ``srnode enhance``: batch super-resolution without a PACS.

``srnode enhance INPUT... --out DIR`` reads DICOM files and folders (recursively), runs
each image instance through :func:`dicom_node.derive.pipeline.enhance_stream` (the same
pipeline the node's worker runs) and writes one derived file per input instance as
``DIR/<derived SeriesInstanceUID>/<derived SOPInstanceUID>.dcm``. Files that are not
DICOM, and DICOM objects without pixel data (SR, presentation states, DICOMDIR), are
skipped; images that cannot be processed are listed with the reason and the rest go on.

Exit status: 0 all images done, 1 some failed, 2 usage error (bad option, no such
input, unknown model, backend unavailable).

This module is the command line; the run itself is in :mod:`dicom_node.cli.enhance_run`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from dicom_node.cli.enhance_run import UsageError, print_summary, run_enhance
from dicom_node.config import ConfigError, load_settings
from dicom_node.jobs.engines import EngineCache
from sr_engine.backends import BACKEND_NAMES as BACKENDS  # every path, one list
from sr_engine.errors import SrEngineError

# -- typer commands ---------------------------------------------------------------------


def _settings(config: Path | None) -> Any:
    try:
        return load_settings(config)
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def models_command(
    model_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--model-dir", metavar="DIR", help="Extra folder with model cards (repeatable)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", metavar="FILE", help="srnode.toml (default: embedded)."),
    ] = None,
    bench: Annotated[
        bool,
        typer.Option(
            "--bench",
            help="Time and gate every backend path on this host (minutes per model) and "
            'print the table behind the choice of backend = "auto".',
        ),
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option("--threads", "-t", min=0, metavar="N", help="CPU threads (0 = all)."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="NAME",
            help="With --bench: only this model (name or card path).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """List the model cards srnode can use (bundled and from model folders); with --bench,
    measure the backends for them on this host."""
    from sr_engine.registry import list_models

    settings = _settings(config)
    dirs = tuple(settings.engine.model_dirs) + tuple(model_dir or ())
    if bench or name is not None:
        if not bench:
            typer.echo("error: NAME is for --bench (srnode models --bench NAME)", err=True)
            raise typer.Exit(2)
        n = settings.engine.threads if threads is None else threads
        raise typer.Exit(_bench_models(name, dirs, n))
    try:
        found = list_models(model_dirs=dirs)
    except SrEngineError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    console = Console(soft_wrap=True)
    if not found:
        console.print(
            "no models found" + (f" (searched {', '.join(map(str, dirs))})" if dirs else "")
        )
        return
    rows = [("name", "version", "scale", "modalities", "architecture", "intensity", "sha256")]
    for card, _path in found:
        rows.append(
            (
                card.name,
                card.version,
                f"x{card.scale}",
                ",".join(card.modalities) or "any",
                card.architecture.name,
                card.intensity.model,
                card.short_sha,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        line = "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        console.print(line, markup=False, highlight=False)
    console.print("cards:", markup=False, highlight=False)
    for card, path in found:
        console.print(f"  {card.name}: {path}", markup=False, highlight=False)


def _bench_models(name: str | None, dirs: tuple[Path, ...], threads: int) -> int:
    """``srnode models --bench``: the candidate table per model, measured now; the result
    also refreshes the cached choice of ``auto`` (in the user's cache folder)."""
    from sr_engine.registry import list_models
    from sr_engine.selection import bench_candidates

    err = Console(stderr=True, highlight=False)
    out = Console(soft_wrap=True, highlight=False)
    try:
        targets: list[str | Path] = (
            [name] if name is not None else [p for _, p in list_models(model_dirs=dirs)]
        )
    except SrEngineError as e:
        typer.echo(f"error: {e}", err=True)
        return 2
    if not targets:
        typer.echo("error: no models found", err=True)
        return 2
    for i, target in enumerate(targets, 1):
        label = Path(target).stem if str(target).endswith(".json") else str(target)
        err.print(
            f"[{i}/{len(targets)}] {label}: timing and gating every backend path "
            "(this takes minutes) ...",
            markup=False,
        )
        t0 = time.perf_counter()
        try:
            sel = bench_candidates(target, threads=threads, model_dirs=dirs)
        except SrEngineError as e:
            typer.echo(f"error: {label}: {e}", err=True)
            return 2
        err.print(f"[{i}/{len(targets)}] {label}: done in {time.perf_counter() - t0:.0f} s")
        out.print(sel.table(), markup=False)
        out.print(f"auto: {sel.chosen}", markup=False)
        out.print()
    return 0


def enhance_command(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            metavar="INPUT",
            help="DICOM files or folders (searched recursively).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", metavar="DIR", help="Output folder for the derived files."),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            metavar="MODEL",
            help="Bundled model name or card path (default: by modality).",
        ),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            "-b",
            metavar="NAME",
            help="auto (the fastest measured here) or one of: " + ", ".join(BACKENDS[1:]) + ".",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", "-t", min=0, metavar="N", help="CPU threads (0 = all)."),
    ] = None,
    model_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--model-dir", metavar="DIR", help="Extra folder with model cards (repeatable)."
        ),
    ] = None,
    consistency: Annotated[
        bool,
        typer.Option(
            "--consistency/--no-consistency", help="Data-consistency projection (default on)."
        ),
    ] = True,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", metavar="FILE", help="srnode.toml (default: embedded)."),
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Super-resolve DICOM files into a derived series each, without a PACS."""
    settings = _settings(config)
    chosen_backend = backend or settings.engine.backend
    if chosen_backend not in BACKENDS:
        typer.echo(
            f"error: --backend must be one of {', '.join(BACKENDS)}, not {chosen_backend!r}",
            err=True,
        )
        raise typer.Exit(2)
    derive = settings.derive.model_copy(
        update={"data_consistency": consistency and settings.derive.data_consistency}
    )
    dirs = tuple(settings.engine.model_dirs) + tuple(model_dir or ())
    engines = EngineCache(
        model=model,
        backend=chosen_backend,
        threads=settings.engine.threads if threads is None else threads,
        model_dirs=dirs,
    )
    err = Console(stderr=True)
    try:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} is a file; give a folder for the derived series")
        if model is not None:  # fail fast, before touching any file
            engines.for_modality("OT")
        else:
            from sr_engine.registry import list_models

            if not list_models(model_dirs=dirs):
                raise UsageError("no models installed; pass --model NAME or a card path")
        report = run_enhance(list(inputs), out, engines, derive, err, progress=not no_progress)
    except UsageError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except SrEngineError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    finally:
        engines.close()
    print_summary(report, Console(soft_wrap=True, highlight=False))
    raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    """Add the batch commands to the root app."""
    app.command("models")(models_command)
    app.command("enhance")(enhance_command)
