"""The live configuration: allowed calling AEs, destinations and routes, kept in the
database and applied to the running node without a restart.

:class:`LiveConfig` is the one implementation behind ``/api/aets``, ``/api/destinations``,
``/api/routes``, the console's forms and ``srnode aet …``. Every change commits together with
its audit row (who, when, before, after) and a revision number; a node notices a new revision
(its own changes at once, another process's within ``refresh`` seconds) and puts the new
lists on its :class:`~dicom_node.config.Settings`, which routing and export read for every
series, so the next series is routed with them. The SCP's allowlist reads :meth:`allowed_aes`
for every association.

The config file and ``--allow`` / ``--destination`` seed the database (:meth:`seed`): an entry
is written from the file when the file's definition of it is new or has changed since it was
last seeded; otherwise what was changed at run time stands (deleted entries stay deleted).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from typing import Any

from dicom_node.admin.allowed_aes import AllowedAEs
from dicom_node.admin.destinations_routes import DestinationsAndRoutes
from dicom_node.admin.errors import Actor, Invalid
from dicom_node.admin.validation import _DEST_LIST, _ROUTE_LIST, _dump, _valid_entries
from dicom_node.config import ConfigError, Settings, validate_settings
from dicom_node.config_checks import check_runnable, route_model_problem
from dicom_node.store import audit
from dicom_node.store import live_config as rows
from dicom_node.store.database import LOCK_LIVE_CONFIG

log = logging.getLogger(__name__)

REVISION_KEY = rows.REVISION_KEY
CONFIG_ACTOR = Actor("config", "admin", None)


def _digest(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _said(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_defaults=True)


class LiveConfig(AllowedAEs, DestinationsAndRoutes):
    """The live lists, their changes and their application to a running node."""

    def __init__(self, db: Any, settings: Settings | None = None, refresh: float = 2.0) -> None:
        self.db = db
        self.engine = db.engine
        self.settings = settings
        self.refresh = refresh
        self._lock = threading.Lock()
        self._revision: int | None = None
        self._checked = 0.0
        self._aes: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ revision / apply
    def _serialise(self, conn: Any) -> None:
        """Serialise writers of the live configuration (SQLite's BEGIN IMMEDIATE already
        does; on PostgreSQL a transaction-scoped advisory lock)."""
        self.db.serialise(conn, LOCK_LIVE_CONFIG)

    def _bump(self, conn: Any) -> None:
        rows.bump_revision(conn)

    def reload(self) -> None:
        """Read the lists and put them on the settings (routing and export read them there)."""
        # one reload at a time: a slower one that read older rows cannot land last
        with self._lock:
            self._reload()

    def _reload(self) -> None:
        with self.engine.connect() as conn:
            rev, dests, routes, aes = rows.read_state(conn)
        self._aes = aes
        if self.settings is not None:
            # assignment is atomic: a reader sees the old list or the new one
            self.settings.destinations = _valid_entries(_DEST_LIST, dests, "destination")
            self.settings.routes = self._runnable_routes(
                _valid_entries(_ROUTE_LIST, routes, "route")
            )
        self._revision = rev
        self._checked = time.monotonic()

    def _runnable_routes(self, routes: list[Any]) -> list[Any]:
        """The routes whose model loads here; one that does not (stored before this check,
        or its model removed since) is left out with an error naming it."""
        dirs = self.settings.engine.model_dirs if self.settings is not None else []
        out = []
        for r in routes:
            problem = route_model_problem(r, dirs)
            if problem:
                log.error(
                    "route %s left out: routes.%s.model: %s (edit or delete it in the console)",
                    r.name,
                    r.name,
                    problem,
                )
            else:
                out.append(r)
        return out

    def check_whole(self, destinations: list[dict[str, Any]], routes: list[dict[str, Any]]) -> None:
        """The configuration with these lists goes through the same validation as the file
        and the checks ``serve`` runs at start; :class:`Invalid` with their one line."""
        base = self.settings if self.settings is not None else Settings()
        raw = base.model_dump(mode="json", exclude_none=True)
        raw["destinations"], raw["routes"] = destinations, routes
        try:
            check_runnable(validate_settings(raw))
        except ConfigError as e:
            raise Invalid(str(e)) from None

    def maybe_reload(self) -> bool:
        """Reload when another process changed the configuration. True when it did."""
        if self._revision is not None and time.monotonic() - self._checked < self.refresh:
            return False
        with self.engine.connect() as conn:
            rev = rows.read_revision(conn)
        self._checked = time.monotonic()
        if rev == self._revision:
            return False
        self.reload()
        return True

    def allowed_aes(self) -> list[tuple[str, str]]:
        """(AE title, host or "") pairs the SCP accepts: called for every association."""
        self.maybe_reload()
        return self._aes

    # ------------------------------------------------------------------ seeding
    def seed(self, settings: Settings) -> int:
        """Write the file's entries that are new or changed there since last seeded; returns
        how many were written. Seeded entries are audited as the user ``config``."""
        # the digest covers what the file says (not the defaults), so a new version with a
        # new default does not count as a changed entry
        entries: list[tuple[str, str, dict[str, Any], str]] = []
        for a in settings.allow:
            entries.append(("ae", f"{a.ae_title}@{a.host or ''}", _dump(a), _digest(_said(a))))
        for pos, d in enumerate(settings.destinations):
            said = {**_said(d), "_position": pos}
            entries.append(("destination", d.name, {**_dump(d), "_position": pos}, _digest(said)))
        for pos, r in enumerate(settings.routes):
            said = {**_said(r), "_position": pos}
            entries.append(("route", r.name, {**_dump(r), "_position": pos}, _digest(said)))
        written = 0
        with self.engine.begin() as conn:
            self._serialise(conn)
            seen = rows.seed_digests(conn)
            for kind, key, body, digest in entries:
                if seen.get((kind, key)) == digest:
                    continue
                body = dict(body)
                position = body.pop("_position", None)
                if kind == "ae":
                    self._seed_ae(conn, body)
                else:
                    self._put(conn, kind, body, position)
                rows.set_seed_digest(conn, kind, key, digest, (kind, key) in seen)
                written += 1
            if written:
                self._bump(conn)
        if written:
            log.info("config: %d entries seeded into the live configuration", written)
        self.reload()
        return written

    def _seed_ae(self, conn: Any, body: dict[str, Any]) -> None:
        host = body.get("host") or ""
        if not rows.ae_exists(conn, body["ae_title"], host):
            rows.add_ae(conn, body["ae_title"], host)
            audit.record(
                conn,
                CONFIG_ACTOR,
                "ae.added",
                body["ae_title"],
                None,
                body,
                ae_title=body["ae_title"],
            )

    def _put(self, conn: Any, kind: str, body: dict[str, Any], position: int | None) -> None:
        name = body["name"]
        old = rows.get_entry(conn, kind, name)
        if position is None:
            position = rows.next_position(conn, kind) if old is None else old[1]
        if old is None:
            rows.insert_entry(conn, kind, name, position, body)
            audit.record(conn, CONFIG_ACTOR, f"{kind}.added", name, None, body)
        elif old[0] != body or old[1] != position:
            rows.update_entry(conn, kind, name, body, position=position)
            audit.record(conn, CONFIG_ACTOR, f"{kind}.updated", name, old[0], body)

    # ------------------------------------------------------------------ bulk
    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """The live lists as config sections (what ``srnode config export`` writes)."""
        return {
            "allow": [
                {k: v for k, v in a.items() if k != "created_at" and v is not None}
                for a in self.list_aes()
            ],
            "destinations": self.list_destinations(),
            "routes": self.list_routes(),
        }
