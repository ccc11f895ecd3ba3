"""Console users: admin or read-only, with a scrypt-hashed password
(``srnode admin set-password``)."""

from __future__ import annotations

import re
from typing import Any

from dicom_node.admin.errors import Actor, Invalid, NotFound
from dicom_node.admin.passwords import hash_password, verify_password
from dicom_node.store import audit
from dicom_node.store import users as rows

ROLES = ("admin", "read-only")
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@\-]{0,63}$")


def set_password(engine: Any, actor: Actor, name: str, password: str, role: str = "admin") -> bool:
    """Create the user or change its password and role. True when the user is new."""
    if not _USER.match(name or ""):
        raise Invalid("user: 1-64 letters, digits, '.', '_', '@' or '-'")
    if role not in ROLES:
        raise Invalid(f"role: one of {', '.join(ROLES)}")
    try:
        hashed = hash_password(password)
    except ValueError as e:
        raise Invalid(str(e)) from None
    with engine.begin() as conn:
        old = rows.role(conn, name)
        if old is None:
            rows.add(conn, name, role, hashed)
        else:
            rows.change(conn, name, role, hashed)
        # the audit row never holds the password or its hash
        audit.record(
            conn,
            actor,
            "user.added" if old is None else "user.password_changed",
            name,
            None if old is None else {"role": old},
            {"role": role},
        )
    return old is None


def remove(engine: Any, actor: Actor, name: str) -> None:
    with engine.begin() as conn:
        old = rows.role(conn, name)
        if old is None:
            raise NotFound(f"no user {name!r}")
        rows.remove(conn, name)
        audit.record(conn, actor, "user.removed", name, {"role": old}, None)


def check(engine: Any, name: str, password: str) -> str | None:
    """The user's role when the password is right, else None."""
    found = credentials(engine, name)
    if found is None:
        verify_password(password, hash_password("x" * 16))  # same time for unknown users
        return None
    return found[0] if verify_password(password, found[1]) else None


def credentials(engine: Any, name: str) -> tuple[str, str] | None:
    """(role, password hash) of a user, None when there is no such user."""
    with engine.connect() as conn:
        return rows.credentials(conn, name)


def count(engine: Any) -> int:
    with engine.connect() as conn:
        return rows.count(conn)


def listing(engine: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return rows.listing(conn)
