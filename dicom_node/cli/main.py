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
    rich_markup_mode=None,  # plain click help: no type names such as <bool> or list[str]
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"srnode {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the srnode version and exit.",
    ),
) -> None:
    """srnode: a DICOM node that super-resolves CT, MR and radiograph series and sends
    them back to the PACS as derived series."""


@app.command()
def version() -> None:
    """Print the srnode version."""
    _print_version(True)


TRAIN_HELP = (
    "Train and export super-resolution networks (needs the train extra: "
    "pip install 'srnode\\[train]')."
)


def _register_all(training: bool = True) -> None:
    """Add every command group. ``training=False`` lists ``train`` without importing the
    training package (it pulls in scipy and more): ``main`` does so unless the command
    line asks for ``srnode train``."""
    from dicom_node.cli import admin as cli_admin
    from dicom_node.cli import batch as cli_batch
    from dicom_node.cli import live as cli_live
    from dicom_node.cli import pull as cli_pull
    from dicom_node.cli import service as cli_service
    from dicom_node.cli import storage as cli_storage

    cli_batch.register(app)
    cli_service.register(app)
    cli_admin.register(app)
    cli_live.register(app)
    cli_pull.register(app)
    cli_storage.register(app)
    if not training:
        _train_placeholder()
        return
    try:
        from training.cli import register as register_training
    except ImportError:  # pragma: no cover - training module itself missing
        return
    register_training(app)


def _train_placeholder() -> None:
    @app.command(
        "train",
        help=TRAIN_HELP,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def train(ctx: typer.Context) -> None:  # pragma: no cover - main() registers the real one
        raise typer.Exit(main_with_training(ctx.args))


def main_with_training(args: list[str]) -> int:
    """Run ``srnode train ARGS`` with the training package loaded."""
    sys.argv = [sys.argv[0], "train", *args]
    main()
    return 0


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pynetdicom logs every association step (and each failure twice); the commands say in
    # one line what happened. `srnode serve` sets its own level (service.Node.start).
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    # pydicom's decoders log each plugin's failure with a traceback; srnode says in one line
    # which file could not be decoded and why (enhance's summary, the node's job reason)
    logging.getLogger("pydicom.pixels").setLevel(logging.CRITICAL)
    logging.getLogger("openjpeg").setLevel(logging.WARNING)  # "tile number 1 / 1" per frame
    argv = sys.argv[1:]
    _register_all(training=bool(argv) and argv[0] == "train")
    app()


if __name__ == "__main__":
    main()
