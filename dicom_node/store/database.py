"""The node's database: one engine and session factory on SQLite or PostgreSQL, its schema
brought to the newest revision at start, and the node's own reads and writes.

SQLite (WAL, ``synchronous=FULL``) under the data dir by default, PostgreSQL by URL
(``postgresql+psycopg://…``). Every job state change is a row update, so a killed process
resumes where it stopped. Times are UNIX epoch seconds (float) so both dialects compare them
the same way.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.data_dir import DataDir
from dicom_node.store import audit, migrate
from dicom_node.store.intake import IntakeRows
from dicom_node.store.schema import AETitle, Export, Instance, Job, Meta, Series, Study
from dicom_node.store.states import ExportState, JobState

#: PostgreSQL advisory locks (transaction scope) that serialise writers of one kind
LOCK_LIVE_CONFIG = 461717


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{DataDir.at(data_dir).database.resolve()}"


class Database(IntakeRows):
    """One engine and session factory; the queries the node needs on both dialects."""

    def __init__(self, url: str, *, echo: bool = False, sqlite_synchronous: str = "FULL") -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url,
                echo=echo,
                connect_args={"check_same_thread": False, "timeout": 60},
                pool_size=8,
                max_overflow=32,
            )
            _sqlite_setup(self.engine, sqlite_synchronous)
        else:
            self.engine = create_engine(
                url, echo=echo, pool_pre_ping=True, pool_size=8, max_overflow=32
            )
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Any) -> Database:
        url = settings.database.url or default_url(settings.node.data_dir)
        sync = getattr(settings.database, "sqlite_synchronous", "full")
        return cls(url, sqlite_synchronous=sync)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ schema
    def create_or_migrate(self) -> str:
        """Create the schema, or upgrade it (also one from srnode 0.1.0, made before the
        migrations) to the newest revision; returns it. :class:`migrate.SchemaError` (one
        line) when the database is newer than this srnode or cannot be read."""
        return migrate.upgrade(self.engine)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as s, s.begin():
            yield s

    def serialise(self, conn: Connection, lock: int) -> None:
        """Serialise the writers that take ``lock`` (SQLite's BEGIN IMMEDIATE already does;
        on PostgreSQL a transaction-scoped advisory lock)."""
        if not self.is_sqlite:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock})

    # ------------------------------------------------------------------ audit / AEs / meta
    def audit(
        self,
        kind: str,
        *,
        ae_title: str | None = None,
        host: str | None = None,
        detail: str | None = None,
    ) -> None:
        """One of the node's own events (no user), e.g. an association refused."""
        with self.engine.begin() as conn:
            audit.record(conn, None, kind, ae_title, ae_title=ae_title, host=host, detail=detail)

    def list_ae_titles(self) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(AETitle.ae_title, AETitle.host).order_by(AETitle.ae_title))
            return [(a, h) for a, h in rows]

    def add_ae_title(self, ae_title: str, host: str | None = None) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(
                self.insert_ignore(AETitle)
                .values(ae_title=ae_title, host=host or "", created_at=time.time())
                .returning(AETitle.id)
            )
            return res.first() is not None

    def remove_ae_title(self, ae_title: str, host: str | None = None) -> int:
        with self.engine.begin() as conn:
            q = delete(AETitle).where(AETitle.ae_title == ae_title)
            if host is not None:
                q = q.where(AETitle.host == host)
            return conn.execute(q).rowcount

    def meta_value(self, key: str, make: Any) -> str:
        """The value stored under ``key`` in ``srnode_meta``; made with ``make()`` and stored
        the first time (the first process to commit it wins)."""
        with self.engine.begin() as conn:
            v = conn.execute(select(Meta.value).where(Meta.key == key)).scalar()
            if v is None:
                conn.execute(self.insert_ignore(Meta).values(key=key, value=make()))
                v = conn.execute(select(Meta.value).where(Meta.key == key)).scalar_one()
        return v

    # ------------------------------------------------------------------ status
    def queue_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(Job.state, func.count()).group_by(Job.state))
            out = {str(s): 0 for s in JobState}
            out.update({s: n for s, n in rows})
            return out

    def spool_bytes(self) -> int:
        """Bytes of the received instances still kept in the spool."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.coalesce(func.sum(Instance.size), 0)).where(Instance.removed.is_(False))
            ).scalar_one()

    def recent_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        cols = [
            Job.id,
            Job.state,
            Job.attempts,
            Job.last_error,
            Job.reason,
            Job.route,
            Job.model,
            Job.instance_count,
            Job.derived_count,
            Job.derived_series_uid,
            Job.created_at,
            Job.updated_at,
            Job.claimed_by,
            Job.next_attempt_at,
            Series.series_uid,
            Series.modality,
            Study.study_uid,
        ]
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(*cols)
                .join(Series, Series.id == Job.series_id)
                .join(Study, Study.id == Series.study_id)
                .order_by(Job.id.desc())
                .limit(limit)
            )
            return [dict(r._mapping) for r in rows]

    def export_rows(self, only_open: bool = False) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            q = select(*Export.__table__.columns).order_by(Export.id.desc())
            if only_open:
                q = q.where(Export.state != ExportState.DONE)
            return [dict(r._mapping) for r in conn.execute(q)]

    def instance_paths(self) -> set[str]:
        """The spool path of every recorded instance."""
        with self.engine.connect() as conn:
            return {p for (p,) in conn.execute(select(Instance.path))}

    def series_instances(self, series_id: int) -> list[tuple[str, str]]:
        """(SOPInstanceUID, path) of a series, in InstanceNumber order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Instance.sop_uid, Instance.path)
                .where(Instance.series_id == series_id, Instance.removed.is_(False))
                .order_by(Instance.instance_number, Instance.id)
            )
            return [(u, p) for u, p in rows]


def _sqlite_setup(engine: Engine, synchronous: str = "FULL") -> None:
    if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"sqlite synchronous {synchronous!r}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # pragma: no cover - trivial
        # take the write lock up front: no deferred-transaction upgrade deadlocks
        conn.exec_driver_sql("BEGIN IMMEDIATE")
