"""The console users' rows: name, role and password hash (``console_users``). The checks
and hashing are :mod:`dicom_node.admin.users`'; these functions work in the caller's
connection, so a change and its audit row commit together."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from dicom_node.store.schema import ConsoleUser


def role(conn: Connection, name: str) -> str | None:
    return conn.execute(select(ConsoleUser.role).where(ConsoleUser.name == name)).scalar()


def credentials(conn: Connection, name: str) -> tuple[str, str] | None:
    """(role, password hash), None when there is no such user."""
    row = conn.execute(
        select(ConsoleUser.role, ConsoleUser.password_hash).where(ConsoleUser.name == name)
    ).first()
    return None if row is None else (row.role, row.password_hash)


def add(conn: Connection, name: str, role: str, password_hash: str) -> None:
    now = time.time()
    conn.execute(
        insert(ConsoleUser).values(
            name=name, role=role, password_hash=password_hash, created_at=now, updated_at=now
        )
    )


def change(conn: Connection, name: str, role: str, password_hash: str) -> None:
    conn.execute(
        update(ConsoleUser)
        .where(ConsoleUser.name == name)
        .values(role=role, password_hash=password_hash, updated_at=time.time())
    )


def remove(conn: Connection, name: str) -> None:
    conn.execute(delete(ConsoleUser).where(ConsoleUser.name == name))


def count(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(ConsoleUser)).scalar_one()


def listing(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(ConsoleUser.name, ConsoleUser.role, ConsoleUser.updated_at).order_by(
            ConsoleUser.name
        )
    )
    return [dict(r._mapping) for r in rows]
