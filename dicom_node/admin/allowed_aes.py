"""The allowed calling AEs of the live configuration: listed, added, changed and removed,
each change audited (a part of :class:`~dicom_node.admin.live_config.LiveConfig`)."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from dicom_node.admin.errors import Actor, Conflict, NotFound
from dicom_node.admin.validation import validate_ae
from dicom_node.store import audit
from dicom_node.store.schema import AETitle

log = logging.getLogger(__name__)


class AllowedAEs:
    """The allowed calling AEs: mixed into :class:`~dicom_node.admin.live_config.LiveConfig`,
    whose engine, write serialisation, revision bump and reload they use."""

    def list_aes(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(AETitle.ae_title, AETitle.host, AETitle.created_at).order_by(
                    AETitle.ae_title, AETitle.host
                )
            )
            return [{"ae_title": a, "host": h or None, "created_at": t} for a, h, t in rows]

    def add_ae(self, actor: Actor, ae_title: Any, host: Any = None) -> dict[str, Any]:
        a = validate_ae(ae_title, host)
        entry = {"ae_title": a.ae_title, "host": a.host}
        with self.engine.begin() as conn:
            self._serialise(conn)
            exists = conn.execute(
                select(AETitle.id).where(
                    AETitle.ae_title == a.ae_title, AETitle.host == (a.host or "")
                )
            ).first()
            if exists is not None:
                raise Conflict(f"{a.ae_title}@{a.host or '*'} is already allowed")
            conn.execute(
                insert(AETitle).values(
                    ae_title=a.ae_title, host=a.host or "", created_at=time.time()
                )
            )
            audit.record(conn, actor, "ae.added", a.ae_title, None, entry, ae_title=a.ae_title)
            self._bump(conn)
        self.reload()
        log.info(
            "allowed calling AE %s (host %s) added by %s", a.ae_title, a.host or "*", actor.user
        )
        return entry

    def update_ae(
        self, actor: Actor, ae_title: str, host: str | None, new_title: Any, new_host: Any
    ) -> dict[str, Any]:
        a = validate_ae(new_title, new_host)
        entry = {"ae_title": a.ae_title, "host": a.host}
        with self.engine.begin() as conn:
            self._serialise(conn)
            old = self._find_ae(conn, ae_title, host)
            before = {"ae_title": old.ae_title, "host": old.host or None}
            if before == entry:
                return entry
            clash = conn.execute(
                select(AETitle.id).where(
                    AETitle.ae_title == a.ae_title, AETitle.host == (a.host or "")
                )
            ).first()
            if clash is not None:
                raise Conflict(f"{a.ae_title}@{a.host or '*'} is already allowed")
            conn.execute(
                update(AETitle)
                .where(AETitle.id == old.id)
                .values(ae_title=a.ae_title, host=a.host or "")
            )
            audit.record(conn, actor, "ae.updated", a.ae_title, before, entry, ae_title=a.ae_title)
            self._bump(conn)
        self.reload()
        return entry

    def _find_ae(self, conn: Connection, ae_title: str, host: str | None) -> Any:
        q = select(AETitle.id, AETitle.ae_title, AETitle.host).where(
            AETitle.ae_title == ae_title.strip()
        )
        if host is not None:
            q = q.where(AETitle.host == ("" if host in ("*", "") else host))
        rows = conn.execute(q).all()
        if not rows:
            raise NotFound(f"calling AE {ae_title!r} is not allowed (nothing to change)")
        if len(rows) > 1:
            raise Conflict(f"{ae_title!r} is allowed from several hosts: name the host")
        return rows[0]

    def delete_ae(self, actor: Actor, ae_title: str, host: str | None = None) -> int:
        """Remove an allowed AE (every host, unless ``host`` is given); returns how many."""
        with self.engine.begin() as conn:
            self._serialise(conn)
            q = select(AETitle.id, AETitle.ae_title, AETitle.host).where(
                AETitle.ae_title == ae_title.strip()
            )
            if host is not None:
                q = q.where(AETitle.host == ("" if host in ("*", "") else host))
            rows = conn.execute(q).all()
            if not rows:
                raise NotFound(f"calling AE {ae_title!r} is not allowed (nothing to remove)")
            conn.execute(delete(AETitle).where(AETitle.id.in_([r.id for r in rows])))
            for r in rows:
                audit.record(
                    conn,
                    actor,
                    "ae.removed",
                    r.ae_title,
                    {"ae_title": r.ae_title, "host": r.host or None},
                    None,
                    ae_title=r.ae_title,
                )
            self._bump(conn)
        self.reload()
        log.info("allowed calling AE %s removed by %s", ae_title, actor.user)
        return len(rows)
