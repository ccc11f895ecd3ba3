"""``srnode serve`` and the admin commands (status, jobs, echo, aet, pull)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the service commands to the root app."""
