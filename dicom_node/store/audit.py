"""The audit trail: every change of the live configuration and of a job (who, when, from where,
the entry before and after) and the node's own events (an association refused), one row each
in ``audit_events``, written by :func:`record` in the transaction of the change it describes.

One format: ``detail`` holds the JSON object ``{"user", "target", "before", "after",
"detail"}`` (revision 0002 rewrote the plain-text rows of srnode 0.1.0 into it).
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from dicom_node.error_text import scrub
from dicom_node.store.schema import AuditEvent


class Who(Protocol):
    """Who made a change (:class:`dicom_node.admin.errors.Actor`)."""

    @property
    def user(self) -> str: ...

    @property
    def address(self) -> str | None: ...


def entry(
    user: str | None, target: str | None, before: Any = None, after: Any = None, detail: Any = None
) -> str:
    """The ``detail`` column of one audit row."""
    body = {"user": user, "target": target, "before": before, "after": after, "detail": detail}
    return json.dumps(body, default=str)


def record(
    conn: Connection,
    actor: Who | None,
    kind: str,
    target: str | None,
    before: Any = None,
    after: Any = None,
    *,
    ae_title: str | None = None,
    host: str | None = None,
    detail: str | None = None,
) -> None:
    """One audit row, in the caller's transaction (so a change and its audit commit together).
    ``actor`` None: the node's own event, from ``host``; ``detail`` is scrubbed of values."""
    conn.execute(
        insert(AuditEvent).values(
            at=time.time(),
            kind=kind[:64],
            ae_title=ae_title,
            host=actor.address if actor is not None else host,
            detail=entry(
                actor.user if actor is not None else None,
                target,
                before,
                after,
                None if detail is None else scrub(detail),
            ),
        )
    )


def _row(r: Any) -> dict[str, Any]:
    try:
        body = json.loads(r.detail or "{}")
    except ValueError:  # written by hand into the table: shown as it is
        body = {"detail": r.detail}
    if not isinstance(body, dict):
        body = {"detail": r.detail}
    return {
        "id": r.id,
        "at": r.at,
        "kind": r.kind,
        "user": body.get("user"),
        "target": body.get("target") or r.ae_title,
        "host": r.host,
        "before": body.get("before"),
        "after": body.get("after"),
        "detail": body.get("detail"),
    }


def query(
    engine: Any,
    *,
    kind: str | None = None,
    user: str | None = None,
    since: float | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, newest first page). ``kind`` matches a prefix (``destination``)."""
    q = select(*AuditEvent.__table__.columns)
    if kind:
        q = q.where(AuditEvent.kind.like(kind.replace("%", "").replace("_", r"\_") + "%", "\\"))
    if user:
        q = q.where(AuditEvent.detail.like(f'%"user": {json.dumps(user)}%'))
    if since is not None:
        q = q.where(AuditEvent.at >= since)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(q.subquery())).scalar_one()
        rows = conn.execute(q.order_by(AuditEvent.id.desc()).limit(limit).offset(offset))
        return total, [_row(r) for r in rows]
