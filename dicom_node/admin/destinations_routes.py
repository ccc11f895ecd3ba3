"""The destinations and routes of the live configuration: listed, added, changed and
removed, each change audited (a part of :class:`~dicom_node.admin.live_config.LiveConfig`)."""

from __future__ import annotations

import logging
from typing import Any

from dicom_node.admin.errors import Actor, Conflict, Invalid, NotFound
from dicom_node.admin.validation import (
    _DEST_LIST,
    _dump,
    _valid_entries,
    validate_destination,
    validate_route,
)
from dicom_node.store import audit
from dicom_node.store import live_config as rows

log = logging.getLogger(__name__)


class DestinationsAndRoutes:
    """The destinations and routes: mixed into
    :class:`~dicom_node.admin.live_config.LiveConfig`, whose engine, write serialisation,
    revision bump, reload and next position they use."""

    def _list(self, kind: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return rows.list_bodies(conn, kind)

    def _get(self, kind: str, name: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            body = rows.get_body(conn, kind, name)
        if body is None:
            raise NotFound(f"no {kind} named {name!r}")
        return body

    def _check_change(
        self, conn: Any, kind: str, name: str | None, body: dict[str, Any] | None
    ) -> None:
        """The whole configuration after this change (``name`` replaced by ``body``, added
        when ``name`` is None, removed when ``body`` is None) must be one ``serve`` runs."""
        lists = {k: rows.list_bodies(conn, k) for k in ("destination", "route")}
        entries = lists[kind]
        at = next((i for i, e in enumerate(entries) if e.get("name") == name), None)
        if at is None:
            entries.append(body)
        elif body is None:
            del entries[at]
        else:
            entries[at] = body
        self.check_whole(lists["destination"], lists["route"])

    def _create(
        self, actor: Actor, kind: str, body: dict[str, Any], position: int | None
    ) -> dict[str, Any]:
        with self.engine.begin() as conn:
            self._serialise(conn)
            if rows.exists(conn, kind, body["name"]):
                raise Conflict(f"a {kind} named {body['name']!r} exists")
            self._check_change(conn, kind, None, body)
            if position is None:
                position = rows.next_position(conn, kind)
            else:
                rows.make_room(conn, kind, position)
            rows.insert_entry(conn, kind, body["name"], position, body)
            audit.record(conn, actor, f"{kind}.added", body["name"], None, body)
            self._bump(conn)
        self.reload()
        log.info("%s %s added by %s", kind, body["name"], actor.user)
        return body

    def _replace(self, actor: Actor, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.engine.begin() as conn:
            self._serialise(conn)
            old = rows.get_body(conn, kind, name)
            if old is None:
                raise NotFound(f"no {kind} named {name!r}")
            if body["name"] != name and rows.exists(conn, kind, body["name"]):
                raise Conflict(f"a {kind} named {body['name']!r} exists")
            self._check_change(conn, kind, name, body)
            rows.update_entry(conn, kind, name, body, new_name=body["name"])
            audit.record(conn, actor, f"{kind}.updated", name, old, body)
            self._bump(conn)
        self.reload()
        log.info("%s %s changed by %s", kind, name, actor.user)
        return body

    def _remove(self, actor: Actor, kind: str, name: str) -> None:
        with self.engine.begin() as conn:
            self._serialise(conn)
            old = rows.get_body(conn, kind, name)
            if old is None:
                raise NotFound(f"no {kind} named {name!r}")
            if kind == "destination":
                users = rows.routes_naming(conn, name)
                if users:
                    raise Conflict(
                        f"destination {name!r} is named by route(s) {', '.join(users)}: "
                        "change them first"
                    )
            self._check_change(conn, kind, name, None)
            rows.delete_entry(conn, kind, name)
            audit.record(conn, actor, f"{kind}.removed", name, old, None)
            self._bump(conn)
        self.reload()
        log.info("%s %s removed by %s", kind, name, actor.user)

    def list_destinations(self) -> list[dict[str, Any]]:
        return self._list("destination")

    def get_destination(self, name: str) -> dict[str, Any]:
        return self._get("destination", name)

    def destination(self, name: str) -> Any:
        """The destination as the exporter takes it."""
        valid = _valid_entries(_DEST_LIST, [self.get_destination(name)], "destination")
        if not valid:
            raise Invalid(f"destination {name!r} in the database is not valid: edit it")
        return valid[0]

    def add_destination(self, actor: Actor, data: dict[str, Any]) -> dict[str, Any]:
        body = _dump(validate_destination(data))
        return self._create(actor, "destination", body, None)

    def update_destination(self, actor: Actor, name: str, data: dict[str, Any]) -> dict[str, Any]:
        body = _dump(validate_destination({**data, "name": data.get("name") or name}))
        if body["name"] != name:
            routes = [r["name"] for r in self.list_routes() if name in r.get("destinations", [])]
            if routes:
                raise Conflict(
                    f"destination {name!r} is named by route(s) {', '.join(routes)}: "
                    "it cannot be renamed"
                )
        return self._replace(actor, "destination", name, body)

    def delete_destination(self, actor: Actor, name: str) -> None:
        self._remove(actor, "destination", name)

    def list_routes(self) -> list[dict[str, Any]]:
        return self._list("route")

    def get_route(self, name: str) -> dict[str, Any]:
        return self._get("route", name)

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
        return self._create(actor, "route", body, position)

    def update_route(self, actor: Actor, name: str, data: dict[str, Any]) -> dict[str, Any]:
        body = _dump(validate_route({**data, "name": data.get("name") or name}))
        self._check_route_destinations(body)
        return self._replace(actor, "route", name, body)

    def move_route(self, actor: Actor, name: str, position: int) -> list[str]:
        """Put route ``name`` at ``position`` (0: first; past the end: last); the others
        keep their order. Returns the route names in their new order."""
        if not 0 <= position <= 10_000:
            raise Invalid("position: 0 to 10000")
        with self.engine.begin() as conn:
            self._serialise(conn)
            names = rows.route_names(conn)
            if name not in names:
                raise NotFound(f"no route named {name!r}")
            before = names.index(name)
            names.remove(name)
            names.insert(min(position, len(names)), name)
            rows.set_route_positions(conn, names)
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
        self._remove(actor, "route", name)
