"""The destinations and routes of the live configuration: listed, added, changed and
removed, each change audited (a part of :class:`~dicom_node.admin.live_config.LiveConfig`)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from sqlalchemy import delete, insert, select, update

from dicom_node.admin.errors import Actor, Conflict, Invalid, NotFound
from dicom_node.admin.validation import (
    _DEST_LIST,
    _dump,
    _valid_entries,
    validate_destination,
    validate_route,
)
from dicom_node.store import audit
from dicom_node.store.schema import LiveDestination, LiveRoute

log = logging.getLogger(__name__)


class DestinationsAndRoutes:
    """The destinations and routes: mixed into
    :class:`~dicom_node.admin.live_config.LiveConfig`, whose engine, write serialisation,
    revision bump, reload and next position they use."""

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

    def _check_change(
        self, conn: Any, table: Any, name: str | None, body: dict[str, Any] | None
    ) -> None:
        """The whole configuration after this change (``name`` replaced by ``body``, added
        when ``name`` is None, removed when ``body`` is None) must be one ``serve`` runs."""
        lists = {
            t: [
                json.loads(b)
                for b in conn.execute(select(t.body).order_by(t.position, t.name)).scalars()
            ]
            for t in (LiveDestination, LiveRoute)
        }
        entries = lists[table]
        at = next((i for i, e in enumerate(entries) if e.get("name") == name), None)
        if at is None:
            entries.append(body)
        elif body is None:
            del entries[at]
        else:
            entries[at] = body
        self.check_whole(lists[LiveDestination], lists[LiveRoute])

    def _create(
        self, actor: Actor, table: Any, kind: str, body: dict[str, Any], position: int | None
    ) -> dict[str, Any]:
        with self.engine.begin() as conn:
            self._serialise(conn)
            if conn.execute(select(table.name).where(table.name == body["name"])).first():
                raise Conflict(f"a {kind} named {body['name']!r} exists")
            self._check_change(conn, table, None, body)
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
            self._check_change(conn, table, name, body)
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
            self._check_change(conn, table, name, None)
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

    def move_route(self, actor: Actor, name: str, position: int) -> list[str]:
        """Put route ``name`` at ``position`` (0: first; past the end: last); the others
        keep their order. Returns the route names in their new order."""
        if not 0 <= position <= 10_000:
            raise Invalid("position: 0 to 10000")
        with self.engine.begin() as conn:
            self._serialise(conn)
            names = list(
                conn.execute(
                    select(LiveRoute.name).order_by(LiveRoute.position, LiveRoute.name)
                ).scalars()
            )
            if name not in names:
                raise NotFound(f"no route named {name!r}")
            before = names.index(name)
            names.remove(name)
            names.insert(min(position, len(names)), name)
            for i, n in enumerate(names):
                conn.execute(update(LiveRoute).where(LiveRoute.name == n).values(position=i))
            if names.index(name) != before:
                audit.record(
                    conn,
                    actor,
                    "route.moved",
                    name,
                    {"position": before},
                    {"position": names.index(name)},
                )
                self._bump(conn)
        self.reload()
        log.info("route %s moved to position %d by %s", name, names.index(name), actor.user)
        return names

    def delete_route(self, actor: Actor, name: str) -> None:
        self._remove(actor, LiveRoute, "route", name)
