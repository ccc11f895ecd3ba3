"""The schema at start: :func:`upgrade` brings a database (empty, made by srnode 0.1.0 before
the migrations, or at an older revision) to the newest Alembic revision, under a lock, in one
transaction; a database this srnode cannot run on is refused with one line
(:class:`SchemaError`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from dicom_node.store.schema import Meta

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)
# Alembic says what it sets up and which context it runs in at INFO, on every start (and
# when imported: it is imported where it runs); our line says what was upgraded
logging.getLogger("alembic").setLevel(logging.WARNING)

MIGRATIONS = Path(__file__).parent / "migrations"
#: the PostgreSQL advisory lock that serialises starters upgrading one database
LOCK_MIGRATE = 461716
#: the last ``srnode_meta.schema_version`` of the releases before the migrations
LEGACY_VERSION = 3


class SchemaError(RuntimeError):
    """The database cannot be used by this srnode (one line, said at start)."""


def config(conn: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    """The newest revision this srnode knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config()).get_current_head()


def current(conn: Connection) -> str | None:
    """The database's revision; None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> str:
    """Bring the database to :func:`head`; returns it. SchemaError when it is newer than this
    srnode, not srnode's, or cannot be reached."""
    from alembic import command

    newest = head()
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # serialise concurrent starters
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_MIGRATE})
            at = current(conn)
            if at == newest:
                return newest
            if at is None:
                _check_unversioned(conn)
            else:
                _check_known(at, newest)
            command.upgrade(config(conn), "head")
    except SQLAlchemyError as e:
        why = str(getattr(e, "orig", None) or e).splitlines()[0]
        raise SchemaError(f"database: {engine.url.render_as_string()}: {why}") from None
    log.info("database schema upgraded from %s to revision %s", at or "none", newest)
    return newest


def _check_known(at: str, newest: str) -> None:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        ScriptDirectory.from_config(config()).get_revision(at)
    except CommandError:
        raise SchemaError(
            f"database: schema revision {at} is newer than this srnode (it knows up to "
            f"{newest}); upgrade srnode"
        ) from None


def _check_unversioned(conn: Connection) -> None:
    """An empty database, or one that srnode 0.1.0 (or earlier) made; nothing else."""
    tables = set(inspect(conn).get_table_names())
    if not tables:
        return
    if Meta.__tablename__ not in tables:
        raise SchemaError(
            f"database: holds {len(tables)} tables that are not srnode's (no srnode_meta); "
            "point database.url at an empty database or at srnode's"
        )
    v = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
    if v is not None and int(v) > LEGACY_VERSION:
        raise SchemaError(
            f"database: schema version {v} without a migration history; "
            "restore it from a backup made by srnode"
        )


def new_revision(message: str) -> str:
    """Write the next revision (``NNNN_<message>.py`` in ``migrations/versions``), its
    operations found by comparing the models with a scratch database at :func:`head`;
    returns its path. Review it (and ruff format it) before committing: Alembic does not
    see every change, nor data to move."""
    import tempfile

    from alembic import command

    from dicom_node.store.database import Database

    with tempfile.TemporaryDirectory() as scratch:
        d = Database(f"sqlite:///{scratch}/scratch.db")
        try:
            upgrade(d.engine)
            with d.engine.begin() as conn:
                script = command.revision(
                    config(conn), message, autogenerate=True, rev_id=f"{int(head()) + 1:04d}"
                )
        finally:
            d.close()
    return script.path


if __name__ == "__main__":  # python -m dicom_node.store.migrate "what the revision does"
    import sys

    print(new_revision(" ".join(sys.argv[1:]) or "change"))
