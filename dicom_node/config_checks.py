"""What ``srnode serve`` refuses beyond the schema of :mod:`dicom_node.config`: a route whose
model does not resolve, a destination's TLS file that cannot be read. The same checks run on
the config file at start, on ``srnode config check`` and on every live change (console, API,
CLI), so the running configuration is never one the node would refuse after a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dicom_node.config import ConfigError, Settings


def route_model_problem(route: Any, model_dirs: list[Path]) -> str | None:
    """Why ``route``'s model cannot be loaded here, or None (an ignore route and a route
    taking the model for the series' modality name none)."""
    if route.action != "enhance" or not route.model:
        return None
    from sr_engine.errors import ModelCardError
    from sr_engine.registry import resolve_model

    try:
        resolve_model(route.model, model_dirs=model_dirs)
    except (ModelCardError, OSError, ValueError) as e:
        return str(e)
    return None


def _unreadable(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        return f"cannot read {path} ({e.strerror or e})"
    return None


def check_runnable(settings: Settings) -> None:
    """Raise :class:`ConfigError` (one line naming the key) for what ``serve`` would refuse
    in the destinations and routes of valid ``settings``."""
    for d in settings.destinations:
        for key in ("tls_ca", "tls_cert", "tls_key"):
            problem = _unreadable(getattr(d, key, None))
            if problem:
                raise ConfigError(f"config: destinations.{d.name}.{key}: {problem}")
    for r in settings.routes:
        problem = route_model_problem(r, settings.engine.model_dirs)
        if problem:
            raise ConfigError(f"config: routes.{r.name}.model: {problem}")
