"""What the routers share: the node's settings, database and live configuration, and who
is asking (set by the auth middleware)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request

from dicom_node.admin.errors import Actor
from dicom_node.admin.live_config import LiveConfig
from dicom_node.config import Settings
from dicom_node.web.auth import Auth


@dataclass
class Console:
    settings: Settings
    db: Any
    live: LiveConfig | None
    auth: Auth


def console(request: Request) -> Console:
    return request.app.state.console


def live(request: Request) -> LiveConfig:
    c: Console = request.app.state.console
    if c.live is None:
        raise HTTPException(503, "no database: the live configuration is not available")
    return c.live


def database(request: Request) -> Any:
    c: Console = request.app.state.console
    if c.db is None:
        raise HTTPException(503, "no database")
    return c.db


def actor(request: Request) -> Actor:
    return getattr(request.state, "actor", None) or Actor("anonymous", "read-only", None)
