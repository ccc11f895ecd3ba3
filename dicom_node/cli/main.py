"""The ``srnode`` command. Sub-commands live in their own modules and register here."""

from __future__ import annotations

import logging
import sys

import typer

from dicom_node import __version__

app = typer.Typer(
    name="srnode",
    help="srnode: a DICOM node that super-resolves CT, MR and radiograph series "
    "and sends them back to the PACS as derived series.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the srnode version."""
    typer.echo(f"srnode {__version__}")


def _register_all() -> None:
    from dicom_node.cli import admin as cli_admin
    from dicom_node.cli import batch as cli_batch
    from dicom_node.cli import pull as cli_pull
    from dicom_node.cli import service as cli_service

    cli_batch.register(app)
    cli_service.register(app)
    cli_pull.register(app)
    cli_admin.register(app)
    try:
        from training.cli import register as register_training
    except ImportError:  # pragma: no cover - training module itself missing
        return
    register_training(app)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _register_all()
    app()


if __name__ == "__main__":
    main()
