"""``srnode pull``: fetch a study from a PACS (QIDO/WADO-RS or C-GET/C-MOVE) to (re)process it."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the pull command to the root app."""
