"""The audit trail: every change of the live configuration and of a job, with who, when, from
where, and the entry before and after; association refusals are in the same table."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from dicom_node.admin.errors import Actor
from dicom_node.jobs.schema import AuditEvent


def record(
    conn: Connection,
    actor: Actor,
    kind: str,
    target: str,
    before: Any = None,
    after: Any = None,
    ae_title: str | None = None,
) -> None:
    """One audit row, in the caller's transaction (so a change and its audit commit together)."""
    detail = {"user": actor.user, "target": target, "before": before, "after": after}
    conn.execute(
        insert(AuditEvent).values(
            at=time.time(),
            kind=kind[:64],
            ae_title=ae_title,
            host=actor.address,
            detail=json.dumps(detail, default=str),
        )
    )


def _row(r: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": r.id,
        "at": r.at,
        "kind": r.kind,
        "user": None,
        "target": r.ae_title,
        "host": r.host,
        "before": None,
        "after": None,
        "detail": None,
    }
    detail = r.detail or ""
    parsed = None
    if detail.startswith("{"):
        try:
            parsed = json.loads(detail)
        except ValueError:
            parsed = None
    if isinstance(parsed, dict) and "user" in parsed:
        out.update(
            user=parsed.get("user"),
            target=parsed.get("target") or r.ae_title,
            before=parsed.get("before"),
            after=parsed.get("after"),
        )
    else:
        out["detail"] = detail or None
    return out


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
