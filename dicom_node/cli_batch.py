"""``srnode models`` and ``srnode enhance``: batch super-resolution without a PACS."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the batch commands to the root app."""
