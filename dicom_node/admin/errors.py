"""Errors of the admin service functions; the API maps ``status`` to the HTTP answer and the
CLI prints ``message``."""

from __future__ import annotations

from dataclasses import dataclass


class AdminError(Exception):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(AdminError):
    status = 404


class Conflict(AdminError):
    status = 409


class Invalid(AdminError):
    status = 422


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a console user, the token, the CLI or the config file."""

    user: str
    role: str = "admin"
    address: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"
