"""``srnode pull``: fetch a study from a PACS (QIDO/WADO-RS or C-GET/C-MOVE) to (re)process it."""

from __future__ import annotations

from pathlib import Path

import typer


def _destination(settings, name: str):
    """A configured destination by name, or an ad-hoc one: ``AE@HOST:PORT`` or a URL."""
    from dicom_node.config import ConfigError
    from dicom_node.config_routing import DimseDestination, StowDestination

    for d in settings.destinations:
        if d.name == name:
            return d
    if name.startswith(("http://", "https://")):
        return StowDestination(name="web", kind="stow", url=name)
    from dicom_node.cli.service import parse_destination

    try:
        return DimseDestination(**parse_destination(name))
    except ConfigError:
        known = ", ".join(d.name for d in settings.destinations) or "none configured"
        raise typer.BadParameter(
            f"{name!r} is not a configured destination ({known}), AE@HOST:PORT or a URL",
            param_hint="--from",
        ) from None


def register(app: typer.Typer) -> None:
    """Add the pull command to the root app."""

    @app.command()
    def pull(
        study_uid: str = typer.Argument(..., metavar="STUDY_UID", help="StudyInstanceUID to fetch"),
        source: str = typer.Option(
            ...,
            "--from",
            metavar="SOURCE",
            help="destination name from the config, AE@HOST:PORT or a DICOMweb URL",
        ),
        series: list[str] | None = typer.Option(
            None, "--series", metavar="UID", help="only this SeriesInstanceUID (repeatable)"
        ),
        method: str = typer.Option(
            "auto",
            "--method",
            metavar="METHOD",
            help="auto (WADO-RS for DICOMweb, C-GET for DIMSE), get, or move (to our AE; "
            "needs `srnode serve` running and the PACS to know us)",
        ),
        config: Path | None = typer.Option(
            None, "--config", "-c", metavar="FILE", help="srnode.toml"
        ),
        data_dir: Path | None = typer.Option(
            None, "--data-dir", metavar="DIR", help="the node's data dir"
        ),
    ) -> None:
        """Fetch a study from a PACS into the node, which then processes it as if sent."""
        from dicom_node.cli.service import build_settings
        from dicom_node.config import ConfigError
        from dicom_node.receive.pull import PullError
        from dicom_node.receive.pull import pull as do_pull

        try:
            settings = build_settings(config, data_dir=data_dir)
        except ConfigError as e:
            typer.echo(str(e), err=True)
            raise typer.Exit(2) from None
        dest = _destination(settings, source)
        ae = settings.node.ae_title
        db = None
        if method == "move":
            store = None  # the instances arrive at the running node's SCP
        else:
            from dicom_node.service import open_intake

            intake = open_intake(settings)
            db, store = intake.db, intake.ingestor.store
        try:
            result = do_pull(
                dest,
                study_uid,
                store or (lambda *a, **k: 0),
                series_uids=series or (),
                method=method,
                calling_ae=ae,
            )
        except PullError as e:
            typer.echo(f"pull: {e}", err=True)
            raise typer.Exit(1) from None
        finally:
            if db is not None:
                db.close()
        verb = "moved to " + ae if result.method == "cmove" else "stored"
        typer.echo(
            f"pull {study_uid} from {dest.name} ({result.method}): {result.series} series, "
            f"{result.stored} instances {verb}, {len(result.failed)} failed"
            + (f" ({result.detail})" if result.detail else "")
        )
        for uid, why in result.failed[:20]:
            typer.echo(f"  failed {uid}: {why}", err=True)
        raise typer.Exit(0 if result.ok else 1)
