"""Console users: admin or read-only, with a scrypt-hashed password
(``srnode admin set-password``)."""

from __future__ import annotations

import re
import time
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from dicom_node.admin.errors import Actor, Invalid, NotFound
from dicom_node.admin.passwords import hash_password, verify_password
from dicom_node.store import audit
from dicom_node.store.schema import ConsoleUser

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
    now = time.time()
    with engine.begin() as conn:
        old = conn.execute(select(ConsoleUser.role).where(ConsoleUser.name == name)).scalar()
        if old is None:
            conn.execute(
                insert(ConsoleUser).values(
                    name=name, role=role, password_hash=hashed, created_at=now, updated_at=now
                )
            )
        else:
            conn.execute(
                update(ConsoleUser)
                .where(ConsoleUser.name == name)
                .values(role=role, password_hash=hashed, updated_at=now)
            )
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
        old = conn.execute(select(ConsoleUser.role).where(ConsoleUser.name == name)).scalar()
        if old is None:
            raise NotFound(f"no user {name!r}")
        conn.execute(delete(ConsoleUser).where(ConsoleUser.name == name))
        audit.record(conn, actor, "user.removed", name, {"role": old}, None)


def check(engine: Any, name: str, password: str) -> str | None:
    """The user's role when the password is right, else None."""
    with engine.connect() as conn:
        row = conn.execute(
            select(ConsoleUser.role, ConsoleUser.password_hash).where(ConsoleUser.name == name)
        ).first()
    if row is None:
        verify_password(password, hash_password("x" * 16))  # same time for unknown users
        return None
    return row.role if verify_password(password, row.password_hash) else None


def credentials(engine: Any, name: str) -> tuple[str, str] | None:
    """(role, password hash) of a user, None when there is no such user."""
    with engine.connect() as conn:
        row = conn.execute(
            select(ConsoleUser.role, ConsoleUser.password_hash).where(ConsoleUser.name == name)
        ).first()
    return None if row is None else (row.role, row.password_hash)


def count(engine: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(ConsoleUser)).scalar_one()


def listing(engine: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(ConsoleUser.name, ConsoleUser.role, ConsoleUser.updated_at).order_by(
                ConsoleUser.name
            )
        )
        return [dict(r._mapping) for r in rows]
