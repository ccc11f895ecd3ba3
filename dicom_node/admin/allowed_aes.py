"""The allowed calling AEs of the live configuration: listed, added, changed and removed,
each change audited (a part of :class:`~dicom_node.admin.live_config.LiveConfig`)."""

from __future__ import annotations

import logging
from typing import Any

from dicom_node.admin.errors import Actor, Conflict, NotFound
from dicom_node.admin.validation import validate_ae
from dicom_node.store import audit
from dicom_node.store import live_config as rows

log = logging.getLogger(__name__)


class AllowedAEs:
    """The allowed calling AEs: mixed into :class:`~dicom_node.admin.live_config.LiveConfig`,
    whose engine, write serialisation, revision bump and reload they use."""

    def list_aes(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return rows.list_aes(conn)

    def add_ae(self, actor: Actor, ae_title: Any, host: Any = None) -> dict[str, Any]:
        a = validate_ae(ae_title, host)
        entry = {"ae_title": a.ae_title, "host": a.host}
        with self.engine.begin() as conn:
            self._serialise(conn)
            if rows.ae_exists(conn, a.ae_title, a.host or ""):
                raise Conflict(f"{a.ae_title}@{a.host or '*'} is already allowed")
            rows.add_ae(conn, a.ae_title, a.host or "")
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
            if rows.ae_exists(conn, a.ae_title, a.host or ""):
                raise Conflict(f"{a.ae_title}@{a.host or '*'} is already allowed")
            rows.update_ae(conn, old.id, a.ae_title, a.host or "")
            audit.record(conn, actor, "ae.updated", a.ae_title, before, entry, ae_title=a.ae_title)
            self._bump(conn)
        self.reload()
        return entry

    def _find_ae(self, conn: Any, ae_title: str, host: str | None) -> Any:
        found = rows.find_aes(conn, ae_title, host)
        if not found:
            raise NotFound(f"calling AE {ae_title!r} is not allowed (nothing to change)")
        if len(found) > 1:
            raise Conflict(f"{ae_title!r} is allowed from several hosts: name the host")
        return found[0]

    def delete_ae(self, actor: Actor, ae_title: str, host: str | None = None) -> int:
        """Remove an allowed AE (every host, unless ``host`` is given); returns how many."""
        with self.engine.begin() as conn:
            self._serialise(conn)
            found = rows.find_aes(conn, ae_title, host)
            if not found:
                raise NotFound(f"calling AE {ae_title!r} is not allowed (nothing to remove)")
            rows.delete_aes(conn, [r.id for r in found])
            for r in found:
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
        return len(found)
