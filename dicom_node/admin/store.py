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
import re
import threading
import time
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.engine import Connection

from dicom_node.admin import audit
from dicom_node.admin.errors import Actor, Conflict, Invalid, NotFound
from dicom_node.admin.tables import ConfigSeed, LiveDestination, LiveRoute, ensure_tables
from dicom_node.config import AllowedAE, Settings
from dicom_node.jobs.schema import AETitle, Meta

log = logging.getLogger(__name__)

REVISION_KEY = "live_config_revision"
CONFIG_ACTOR = Actor("config", "admin", None)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._\-]{0,63}$")

_DEST_LIST = TypeAdapter(Settings.model_fields["destinations"].annotation)
_ROUTE_LIST = TypeAdapter(Settings.model_fields["routes"].annotation)


def _pydantic_message(e: ValidationError, what: str) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"][1:]) or what  # [0] is the list index
    return f"{loc}: {err['msg'].removeprefix('Value error, ')}"


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise Invalid(
            f"{what} name: 1-64 characters, letters, digits, space, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _check_text(value: Any, key: str, limit: int) -> None:
    if isinstance(value, str):
        if len(value) > limit:
            raise Invalid(f"{key}: at most {limit} characters")
        if any(ord(c) < 0x20 for c in value):
            raise Invalid(f"{key}: control characters are not allowed")
    elif isinstance(value, list):
        if len(value) > 64:
            raise Invalid(f"{key}: at most 64 entries")
        for v in value:
            _check_text(v, key, limit)


def _digest(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _dump(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


def _said(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_defaults=True)


def _valid_entries(adapter: TypeAdapter, entries: list[dict[str, Any]], kind: str) -> list[Any]:
    """The stored entries as config models. A field this version does not know is dropped
    (said once in the log); an entry that is still invalid is left out, named in the log."""
    out = []
    for body in entries:
        try:
            out.append(adapter.validate_python([body])[0])
            continue
        except ValidationError as e:
            unknown = {
                str(err["loc"][-1]) for err in e.errors() if err["type"] == "extra_forbidden"
            }
        trimmed = {k: v for k, v in body.items() if k not in unknown}
        try:
            out.append(adapter.validate_python([trimmed])[0])
            log.warning(
                "%s %s: stored fields %s are unknown here: ignored",
                kind,
                body.get("name"),
                ", ".join(sorted(unknown)),
            )
        except ValidationError as e:
            log.error(
                "%s %s in the database is not valid here, left out: %s",
                kind,
                body.get("name"),
                _pydantic_message(e, kind),
            )
    return out


def validate_destination(data: dict[str, Any]) -> Any:
    """A destination entry from user input, or :class:`Invalid` naming the field."""
    if not isinstance(data, dict):
        raise Invalid("destination: expected an object")
    for key in ("name", "ae_title", "host"):
        _check_text(data.get(key), key, 255)
    _check_text(data.get("url"), "url", 2048)
    for key in ("tls_ca", "tls_cert", "tls_key"):
        _check_text(data.get(key), key, 1024)
    _check_name(data.get("name"), "destination")
    try:
        dest = _DEST_LIST.validate_python([data])[0]
    except ValidationError as e:
        raise Invalid(_pydantic_message(e, "destination")) from None
    if dest.kind == "dimse":
        missing = [k for k in ("ae_title", "host", "port") if getattr(dest, k) in (None, "")]
        if missing:
            raise Invalid(f"{missing[0]}: required for a DIMSE destination")
        from dicom_node.config_base import _check_ae

        try:
            _check_ae(dest.ae_title)
        except ValueError as e:
            raise Invalid(f"ae_title: {e}") from None
    else:
        url = getattr(dest, "url", None) or ""
        if not re.match(r"^https?://[^\s/]+", url):
            raise Invalid("url: required for a STOW-RS destination, http:// or https://")
    return dest


def validate_route(data: dict[str, Any]) -> Any:
    if not isinstance(data, dict):
        raise Invalid("route: expected an object")
    for key, value in data.items():
        _check_text(value, key, 512)
    _check_name(data.get("name"), "route")
    try:
        return _ROUTE_LIST.validate_python([data])[0]
    except ValidationError as e:
        raise Invalid(_pydantic_message(e, "route")) from None


def validate_ae(ae_title: Any, host: Any) -> AllowedAE:
    _check_text(ae_title, "ae_title", 64)
    _check_text(host, "host", 255)
    if host is not None and not isinstance(host, str):
        raise Invalid("host: expected a string or null")
    if isinstance(host, str) and host.strip() in ("", "*"):
        host = None
    if isinstance(host, str) and not re.match(r"^[A-Za-z0-9.:\-\[\]]{1,255}$", host.strip()):
        raise Invalid("host: a host name or an IP address")
    try:
        return AllowedAE.model_validate({"ae_title": ae_title, "host": host})
    except ValidationError as e:
        raise Invalid(_pydantic_message(e, "ae_title")) from None


class LiveConfig:
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
        ensure_tables(self.engine)

    # ------------------------------------------------------------------ revision / apply
    def _read_revision(self, conn: Connection) -> int:
        v = conn.execute(select(Meta.value).where(Meta.key == REVISION_KEY)).scalar()
        return int(v) if v is not None else 0

    def _serialise(self, conn: Connection) -> None:
        """Serialise writers of the live configuration (SQLite's BEGIN IMMEDIATE already
        does; on PostgreSQL a transaction-scoped advisory lock)."""
        if not self.db.is_sqlite:
            conn.execute(text("SELECT pg_advisory_xact_lock(461717)"))

    def _bump(self, conn: Connection) -> None:
        rev = self._read_revision(conn)
        if (
            rev == 0
            and conn.execute(select(Meta.key).where(Meta.key == REVISION_KEY)).first() is None
        ):
            conn.execute(insert(Meta).values(key=REVISION_KEY, value="1"))
        else:
            conn.execute(update(Meta).where(Meta.key == REVISION_KEY).values(value=str(rev + 1)))

    def reload(self) -> None:
        """Read the lists and put them on the settings (routing and export read them there)."""
        # one reload at a time: a slower one that read older rows cannot land last
        with self._lock:
            self._reload()

    def _reload(self) -> None:
        with self.engine.connect() as conn:
            rev = self._read_revision(conn)
            dests = [
                json.loads(b)
                for b in conn.execute(
                    select(LiveDestination.body).order_by(
                        LiveDestination.position, LiveDestination.name
                    )
                ).scalars()
            ]
            routes = [
                json.loads(b)
                for b in conn.execute(
                    select(LiveRoute.body).order_by(LiveRoute.position, LiveRoute.name)
                ).scalars()
            ]
            aes = [
                (a, h)
                for a, h in conn.execute(
                    select(AETitle.ae_title, AETitle.host).order_by(AETitle.ae_title)
                )
            ]
        self._aes = aes
        if self.settings is not None:
            # assignment is atomic: a reader sees the old list or the new one
            self.settings.destinations = _valid_entries(_DEST_LIST, dests, "destination")
            self.settings.routes = _valid_entries(_ROUTE_LIST, routes, "route")
        self._revision = rev
        self._checked = time.monotonic()

    def maybe_reload(self) -> bool:
        """Reload when another process changed the configuration. True when it did."""
        if self._revision is not None and time.monotonic() - self._checked < self.refresh:
            return False
        with self.engine.connect() as conn:
            rev = self._read_revision(conn)
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
            seen = {
                (k, key): dg
                for k, key, dg in conn.execute(
                    select(ConfigSeed.kind, ConfigSeed.key, ConfigSeed.digest)
                )
            }
            for kind, key, body, digest in entries:
                if seen.get((kind, key)) == digest:
                    continue
                body = dict(body)
                position = body.pop("_position", None)
                if kind == "ae":
                    self._seed_ae(conn, body)
                elif kind == "destination":
                    self._put(conn, LiveDestination, "destination", body, position)
                else:
                    self._put(conn, LiveRoute, "route", body, position)
                if (kind, key) in seen:
                    conn.execute(
                        update(ConfigSeed)
                        .where(ConfigSeed.kind == kind, ConfigSeed.key == key)
                        .values(digest=digest)
                    )
                else:
                    conn.execute(insert(ConfigSeed).values(kind=kind, key=key, digest=digest))
                written += 1
            if written:
                self._bump(conn)
        if written:
            log.info("config: %d entries seeded into the live configuration", written)
        self.reload()
        return written

    def _seed_ae(self, conn: Connection, body: dict[str, Any]) -> None:
        host = body.get("host") or ""
        exists = conn.execute(
            select(AETitle.id).where(AETitle.ae_title == body["ae_title"], AETitle.host == host)
        ).first()
        if exists is None:
            conn.execute(
                insert(AETitle).values(ae_title=body["ae_title"], host=host, created_at=time.time())
            )
            audit.record(
                conn,
                CONFIG_ACTOR,
                "ae.added",
                body["ae_title"],
                None,
                body,
                ae_title=body["ae_title"],
            )

    def _put(
        self, conn: Connection, table: Any, kind: str, body: dict[str, Any], position: int | None
    ) -> None:
        name = body["name"]
        old = conn.execute(select(table.body, table.position).where(table.name == name)).first()
        if position is None:
            position = self._next_position(conn, table) if old is None else old.position
        if old is None:
            conn.execute(
                insert(table).values(
                    name=name, position=position, body=json.dumps(body), updated_at=time.time()
                )
            )
            audit.record(conn, CONFIG_ACTOR, f"{kind}.added", name, None, body)
        elif json.loads(old.body) != body or old.position != position:
            conn.execute(
                update(table)
                .where(table.name == name)
                .values(body=json.dumps(body), position=position, updated_at=time.time())
            )
            audit.record(conn, CONFIG_ACTOR, f"{kind}.updated", name, json.loads(old.body), body)

    @staticmethod
    def _next_position(conn: Connection, table: Any) -> int:
        return (conn.execute(select(func.max(table.position))).scalar() or 0) + 1

    # ------------------------------------------------------------------ allowed AEs
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

    # ------------------------------------------------------------------ destinations / routes
    def _list(self, table: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(table.body).order_by(table.position, table.name)).scalars()
            return [json.loads(b) for b in rows]

    def _get(self, table: Any, kind: str, name: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            body = conn.execute(select(table.body).where(table.name == name)).scalar()
        if body is None:
            raise NotFound(f"no {kind} named {name!r}")
        return json.loads(body)

    def _create(
        self, actor: Actor, table: Any, kind: str, body: dict[str, Any], position: int | None
    ) -> dict[str, Any]:
        with self.engine.begin() as conn:
            self._serialise(conn)
            if conn.execute(select(table.name).where(table.name == body["name"])).first():
                raise Conflict(f"a {kind} named {body['name']!r} exists")
            if position is None:
                position = self._next_position(conn, table)
            else:
                conn.execute(
                    update(table)
                    .where(table.position >= position)
                    .values(position=table.position + 1)
                )
            conn.execute(
                insert(table).values(
                    name=body["name"],
                    position=position,
                    body=json.dumps(body),
                    updated_at=time.time(),
                )
            )
            audit.record(conn, actor, f"{kind}.added", body["name"], None, body)
            self._bump(conn)
        self.reload()
        log.info("%s %s added by %s", kind, body["name"], actor.user)
        return body

    def _replace(
        self, actor: Actor, table: Any, kind: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        with self.engine.begin() as conn:
            self._serialise(conn)
            old = conn.execute(select(table.body).where(table.name == name)).scalar()
            if old is None:
                raise NotFound(f"no {kind} named {name!r}")
            renamed_onto = (
                body["name"] != name
                and conn.execute(select(table.name).where(table.name == body["name"])).first()
            )
            if renamed_onto:
                raise Conflict(f"a {kind} named {body['name']!r} exists")
            conn.execute(
                update(table)
                .where(table.name == name)
                .values(name=body["name"], body=json.dumps(body), updated_at=time.time())
            )
            audit.record(conn, actor, f"{kind}.updated", name, json.loads(old), body)
            self._bump(conn)
        self.reload()
        log.info("%s %s changed by %s", kind, name, actor.user)
        return body

    def _remove(self, actor: Actor, table: Any, kind: str, name: str) -> None:
        with self.engine.begin() as conn:
            self._serialise(conn)
            old = conn.execute(select(table.body).where(table.name == name)).scalar()
            if old is None:
                raise NotFound(f"no {kind} named {name!r}")
            if kind == "destination":
                users = [
                    r["name"]
                    for r in (json.loads(b) for b in conn.execute(select(LiveRoute.body)).scalars())
                    if name in (r.get("destinations") or [])
                ]
                if users:
                    raise Conflict(
                        f"destination {name!r} is named by route(s) {', '.join(users)}: "
                        "change them first"
                    )
            conn.execute(delete(table).where(table.name == name))
            audit.record(conn, actor, f"{kind}.removed", name, json.loads(old), None)
            self._bump(conn)
        self.reload()
        log.info("%s %s removed by %s", kind, name, actor.user)

    def list_destinations(self) -> list[dict[str, Any]]:
        return self._list(LiveDestination)

    def get_destination(self, name: str) -> dict[str, Any]:
        return self._get(LiveDestination, "destination", name)

    def destination(self, name: str) -> Any:
        """The destination as the exporter takes it."""
        valid = _valid_entries(_DEST_LIST, [self.get_destination(name)], "destination")
        if not valid:
            raise Invalid(f"destination {name!r} in the database is not valid: edit it")
        return valid[0]

    def add_destination(self, actor: Actor, data: dict[str, Any]) -> dict[str, Any]:
        body = _dump(validate_destination(data))
        return self._create(actor, LiveDestination, "destination", body, None)

    def update_destination(self, actor: Actor, name: str, data: dict[str, Any]) -> dict[str, Any]:
        body = _dump(validate_destination({**data, "name": data.get("name") or name}))
        if body["name"] != name:
            routes = [r["name"] for r in self.list_routes() if name in r.get("destinations", [])]
            if routes:
                raise Conflict(
                    f"destination {name!r} is named by route(s) {', '.join(routes)}: "
                    "it cannot be renamed"
                )
        return self._replace(actor, LiveDestination, "destination", name, body)

    def delete_destination(self, actor: Actor, name: str) -> None:
        self._remove(actor, LiveDestination, "destination", name)

    def list_routes(self) -> list[dict[str, Any]]:
        return self._list(LiveRoute)

    def get_route(self, name: str) -> dict[str, Any]:
        return self._get(LiveRoute, "route", name)

    def _check_route_destinations(self, body: dict[str, Any]) -> None:
        known = {d["name"] for d in self.list_destinations()}
        unknown = [d for d in body.get("destinations", []) if d not in known]
        if unknown:
            raise Invalid(f"destinations: no destination named {unknown[0]!r}")

    def add_route(
        self, actor: Actor, data: dict[str, Any], position: int | None = None
    ) -> dict[str, Any]:
        body = _dump(validate_route(data))
        self._check_route_destinations(body)
        if position is not None and not 0 <= position <= 10_000:
            raise Invalid("position: 0 to 10000")
        return self._create(actor, LiveRoute, "route", body, position)

    def update_route(self, actor: Actor, name: str, data: dict[str, Any]) -> dict[str, Any]:
        body = _dump(validate_route({**data, "name": data.get("name") or name}))
        self._check_route_destinations(body)
        return self._replace(actor, LiveRoute, "route", name, body)

    def delete_route(self, actor: Actor, name: str) -> None:
        self._remove(actor, LiveRoute, "route", name)

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


def dry_run(
    live: LiveConfig, facts: dict[str, Any] | None = None, series_uid: str | None = None
) -> dict[str, Any]:
    """Which route a series (by UID, from what the node recorded) or a set of attributes
    would take with the live routes and destinations; nothing is changed."""
    from dicom_node.jobs.routing import SeriesFacts, decide
    from dicom_node.jobs.schema import Series, Study

    if series_uid is not None:
        with live.engine.connect() as conn:
            r = conn.execute(
                select(
                    Series.modality,
                    Series.body_part,
                    Series.series_description,
                    Series.calling_ae,
                    Series.derived_by_srnode,
                    Study.study_description,
                )
                .join(Study, Study.id == Series.study_id)
                .where(Series.series_uid == series_uid)
            ).first()
        if r is None:
            raise NotFound(f"no series {series_uid} on this node")
        f = SeriesFacts(
            modality=r.modality or "",
            body_part=r.body_part or "",
            series_description=r.series_description or "",
            study_description=r.study_description or "",
            calling_ae=r.calling_ae or "",
            derived_by_srnode=bool(r.derived_by_srnode),
        )
    else:
        f = SeriesFacts(**{k: v for k, v in (facts or {}).items() if v is not None})
    routes = _valid_entries(_ROUTE_LIST, live.list_routes(), "route")
    names = [d["name"] for d in live.list_destinations()]
    d = decide(routes, f, names)
    return {
        "facts": {k: getattr(f, k) for k in f.__dataclass_fields__},
        "action": d.action,
        "route": d.route,
        "model": d.model,
        "destinations": list(d.destinations),
        "reason": d.reason,
    }
