"""Tables of the live configuration, on the node's SQLAlchemy metadata (created on first use,
like every other table: additive, no migration needed).

Allowed calling AEs stay in ``ae_titles`` (:class:`dicom_node.jobs.schema.AETitle`), which the
SCP's allowlist already reads; changes are audited in ``audit_events``.
"""

from __future__ import annotations

from sqlalchemy import Engine, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dicom_node.jobs.schema import Base


class LiveDestination(Base):
    """One ``[[destinations]]`` entry; ``body`` is its JSON (the config model's fields)."""

    __tablename__ = "live_destinations"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[float] = mapped_column(Float)


class LiveRoute(Base):
    """One ``[[routes]]`` rule; the first that matches (lowest ``position``) wins."""

    __tablename__ = "live_routes"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[float] = mapped_column(Float)


class ConfigSeed(Base):
    """What the config file last seeded for one entry (a digest of its definition): an entry
    is written from the file again only when its definition there changes."""

    __tablename__ = "config_seeds"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))


class ConsoleUser(Base):
    """A console user: ``role`` is ``admin`` or ``read-only``; the password as a scrypt hash."""

    __tablename__ = "console_users"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class SeriesCatalog(Base):
    """Searchable facts of a received series that the node's own tables do not hold
    (StudyDate, AccessionNumber), read once from its first instance. No patient data."""

    __tablename__ = "series_catalog"
    series_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_date: Mapped[str | None] = mapped_column(String(8), index=True)
    accession_number: Mapped[str | None] = mapped_column(String(16), index=True)
    series_number: Mapped[int | None] = mapped_column(Integer)


TABLES = [
    LiveDestination.__table__,
    LiveRoute.__table__,
    ConfigSeed.__table__,
    ConsoleUser.__table__,
    SeriesCatalog.__table__,
]


def ensure_tables(engine: Engine) -> None:
    """Create the tables above where missing (the node's own start does it too)."""
    Base.metadata.create_all(engine, tables=TABLES, checkfirst=True)
