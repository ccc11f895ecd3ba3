"""``srnode gc``: what the retention settings allow to delete from the node's disk, and
deleting it (dicom_node.jobs.retention)."""

from __future__ import annotations

from pathlib import Path

import typer

from dicom_node.cli.service import ConfigOpt, DataDirOpt, _db, _settings_or_exit


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def register(app: typer.Typer) -> None:
    """Add ``srnode gc`` to the root app."""

    @app.command()
    def gc(
        config: Path | None = ConfigOpt,
        data_dir: Path | None = DataDirOpt,
        apply: bool = typer.Option(
            False, "--apply", help="delete the files (without it: a dry run that only shows them)"
        ),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="only show what would be deleted (the default)"
        ),
    ) -> None:
        """Show the files retention allows to delete now, and with --apply delete them.

        Derived files sent to every destination, received files of exported, skipped
        and failed series past their retention ([derived] and [spool] settings), and
        empty folders. A running node does the same every 10 minutes."""
        from dicom_node.jobs import retention

        if apply and dry_run:
            typer.echo("gc: --apply and --dry-run exclude each other", err=True)
            raise typer.Exit(2)
        s = _settings_or_exit(config=config, data_dir=data_dir)
        d = _db(s)
        try:
            plan = retention.plan(d, s)
            typer.echo(
                f"data dir {Path(s.node.data_dir).resolve()}: "
                + ("deleting" if apply else "dry run, nothing is deleted (add --apply to delete)")
            )
            for b in plan.buckets:
                typer.echo(f"  {b.label:<36} {b.count:>7} files {_mb(b.size):>12}")
            typer.echo(f"  {'empty folders':<36} {len(plan.empty_folders):>7}")
            if not apply:
                typer.echo(f"would free {_mb(plan.size)}")
                return
            n, freed = retention.apply(d, plan)
        finally:
            d.close()
        typer.echo(f"freed {_mb(freed)} ({n} files)")
