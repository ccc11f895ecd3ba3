"""The live configuration's rows: the allowed calling AEs, the destinations and routes (their
JSON bodies in list order), the seed digests of the config file and the revision number.

Every function works in the caller's connection (``engine.connect()`` to read,
``engine.begin()`` to change), so that :mod:`dicom_node.admin.live_config` decides, writes
and audits (:func:`dicom_node.store.audit.record`) one change in one transaction. A list is
named by its kind, ``"destination"`` or ``"route"``; bodies come back decoded.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from dicom_node.store.schema import AETitle, ConfigSeed, LiveDestination, LiveRoute, Meta

REVISION_KEY = "live_config_revision"
_TABLES = {"destination": LiveDestination, "route": LiveRoute}


# ---------------------------------------------------------------------- revision
def read_revision(conn: Connection) -> int:
    v = conn.execute(select(Meta.value).where(Meta.key == REVISION_KEY)).scalar()
    return int(v) if v is not None else 0


def bump_revision(conn: Connection) -> None:
    rev = read_revision(conn)
    if rev == 0 and conn.execute(select(Meta.key).where(Meta.key == REVISION_KEY)).first() is None:
        conn.execute(insert(Meta).values(key=REVISION_KEY, value="1"))
    else:
        conn.execute(update(Meta).where(Meta.key == REVISION_KEY).values(value=str(rev + 1)))


def read_state(
    conn: Connection,
) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]], list[tuple[str, str]]]:
    """The whole live state: (revision, destinations, routes, (AE title, host) pairs)."""
    rev = read_revision(conn)
    aes = [
        (a, h)
        for a, h in conn.execute(select(AETitle.ae_title, AETitle.host).order_by(AETitle.ae_title))
    ]
    return rev, list_bodies(conn, "destination"), list_bodies(conn, "route"), aes


# ---------------------------------------------------------------------- allowed AEs
def list_aes(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(AETitle.ae_title, AETitle.host, AETitle.created_at).order_by(
            AETitle.ae_title, AETitle.host
        )
    )
    return [{"ae_title": a, "host": h or None, "created_at": t} for a, h, t in rows]


def ae_exists(conn: Connection, ae_title: str, host: str) -> bool:
    """Whether ``ae_title`` from ``host`` ("" for any host) is allowed."""
    row = conn.execute(
        select(AETitle.id).where(AETitle.ae_title == ae_title, AETitle.host == host)
    ).first()
    return row is not None


def add_ae(conn: Connection, ae_title: str, host: str) -> None:
    conn.execute(insert(AETitle).values(ae_title=ae_title, host=host, created_at=time.time()))


def find_aes(conn: Connection, ae_title: str, host: str | None) -> list[Any]:
    """The rows (``id``, ``ae_title``, ``host``) of ``ae_title``: from every host when
    ``host`` is None, else from ``host`` ("*" or "" for any host)."""
    q = select(AETitle.id, AETitle.ae_title, AETitle.host).where(
        AETitle.ae_title == ae_title.strip()
    )
    if host is not None:
        q = q.where(AETitle.host == ("" if host in ("*", "") else host))
    return list(conn.execute(q).all())


def update_ae(conn: Connection, ae_id: int, ae_title: str, host: str) -> None:
    conn.execute(update(AETitle).where(AETitle.id == ae_id).values(ae_title=ae_title, host=host))


def delete_aes(conn: Connection, ids: list[int]) -> None:
    conn.execute(delete(AETitle).where(AETitle.id.in_(ids)))


# ---------------------------------------------------------------------- destinations, routes
def list_bodies(conn: Connection, kind: str) -> list[dict[str, Any]]:
    t = _TABLES[kind]
    return [
        json.loads(b) for b in conn.execute(select(t.body).order_by(t.position, t.name)).scalars()
    ]


def get_body(conn: Connection, kind: str, name: str) -> dict[str, Any] | None:
    t = _TABLES[kind]
    body = conn.execute(select(t.body).where(t.name == name)).scalar()
    return None if body is None else json.loads(body)


def get_entry(conn: Connection, kind: str, name: str) -> tuple[dict[str, Any], int] | None:
    """(body, position) of the entry, None when there is none."""
    t = _TABLES[kind]
    row = conn.execute(select(t.body, t.position).where(t.name == name)).first()
    return None if row is None else (json.loads(row.body), row.position)


def exists(conn: Connection, kind: str, name: str) -> bool:
    t = _TABLES[kind]
    return conn.execute(select(t.name).where(t.name == name)).first() is not None


def next_position(conn: Connection, kind: str) -> int:
    t = _TABLES[kind]
    return (conn.execute(select(func.max(t.position))).scalar() or 0) + 1


def make_room(conn: Connection, kind: str, position: int) -> None:
    """Move the entries at ``position`` and after one place down."""
    t = _TABLES[kind]
    conn.execute(update(t).where(t.position >= position).values(position=t.position + 1))


def insert_entry(
    conn: Connection, kind: str, name: str, position: int, body: dict[str, Any]
) -> None:
    t = _TABLES[kind]
    conn.execute(
        insert(t).values(
            name=name, position=position, body=json.dumps(body), updated_at=time.time()
        )
    )


def update_entry(
    conn: Connection,
    kind: str,
    name: str,
    body: dict[str, Any],
    *,
    new_name: str | None = None,
    position: int | None = None,
) -> None:
    """Write the entry's body (and its new name, its position when given)."""
    t = _TABLES[kind]
    values: dict[str, Any] = {"body": json.dumps(body), "updated_at": time.time()}
    if new_name is not None:
        values["name"] = new_name
    if position is not None:
        values["position"] = position
    conn.execute(update(t).where(t.name == name).values(**values))


def delete_entry(conn: Connection, kind: str, name: str) -> None:
    t = _TABLES[kind]
    conn.execute(delete(t).where(t.name == name))


def route_names(conn: Connection) -> list[str]:
    """The route names in list order."""
    return list(
        conn.execute(select(LiveRoute.name).order_by(LiveRoute.position, LiveRoute.name)).scalars()
    )


def set_route_positions(conn: Connection, names: list[str]) -> None:
    """Number the routes 0, 1, … in the order of ``names``."""
    for i, n in enumerate(names):
        conn.execute(update(LiveRoute).where(LiveRoute.name == n).values(position=i))


def routes_naming(conn: Connection, destination: str) -> list[str]:
    """The routes that send to ``destination``."""
    bodies = (json.loads(b) for b in conn.execute(select(LiveRoute.body)).scalars())
    return [r["name"] for r in bodies if destination in (r.get("destinations") or [])]


# ---------------------------------------------------------------------- seeding
def seed_digests(conn: Connection) -> dict[tuple[str, str], str]:
    """The digest of each entry as the config file last seeded it, by (kind, key)."""
    rows = conn.execute(select(ConfigSeed.kind, ConfigSeed.key, ConfigSeed.digest))
    return {(k, key): dg for k, key, dg in rows}


def set_seed_digest(conn: Connection, kind: str, key: str, digest: str, known: bool) -> None:
    """Record the digest seeded (``known``: the entry has a digest already)."""
    if known:
        conn.execute(
            update(ConfigSeed)
            .where(ConfigSeed.kind == kind, ConfigSeed.key == key)
            .values(digest=digest)
        )
    else:
        conn.execute(insert(ConfigSeed).values(kind=kind, key=key, digest=digest))
