"""The node's tables: studies, series, instances, jobs, exports, AE titles, audit events and
the live configuration's (destinations, routes, seeds, console users, series catalog).

Alembic (:mod:`dicom_node.store.migrations`) creates and changes them; a change here comes with
a new revision there (``tests/test_migrations.py`` compares the two). Times are UNIX epoch
seconds (float) on both dialects."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dicom_node.store.states import ExportState, SeriesState


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "srnode_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_description: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[float] = mapped_column(Float)


class Series(Base):
    __tablename__ = "series"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))
    series_description: Mapped[str | None] = mapped_column(String(256))
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    via: Mapped[str | None] = mapped_column(String(8))
    derived_by_srnode: Mapped[bool] = mapped_column(Boolean, default=False)
    expected_count: Mapped[int | None] = mapped_column(Integer)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received: Mapped[float] = mapped_column(Float)
    last_received: Mapped[float] = mapped_column(Float)
    # receiving: instances arriving; complete: a job was made for what had arrived
    state: Mapped[str] = mapped_column(String(16), default=str(SeriesState.RECEIVING), index=True)
    completed_at: Mapped[float | None] = mapped_column(Float)
    # receive.series_header.SeriesHeader as JSON, from the first instance's header: what
    # routing, its dry run and the catalog read (schema 2)
    routing: Mapped[str | None] = mapped_column(Text)


class Instance(Base):
    __tablename__ = "instances"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_class_uid: Mapped[str | None] = mapped_column(String(64))
    transfer_syntax: Mapped[str | None] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    via: Mapped[str | None] = mapped_column(String(8))
    received_at: Mapped[float] = mapped_column(Float)
    removed: Mapped[bool] = mapped_column(Boolean, default=False)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    route: Mapped[str | None] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(Text)
    destinations: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of names
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    derived_count: Mapped[int] = mapped_column(Integer, default=0)
    derived_series_uid: Mapped[str | None] = mapped_column(String(64))
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[float | None] = mapped_column(Float)
    next_attempt_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_jobs_claim", "state", "claimed_by", "next_attempt_at"),)


class Export(Base):
    """One job's export to one destination: attempts, backoff and what is still to send."""

    __tablename__ = "exports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    destination: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default=str(ExportState.PENDING))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[float | None] = mapped_column(Float)
    sent_count: Mapped[int] = mapped_column(Integer, default=0)
    pending: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of file paths
    updated_at: Mapped[float] = mapped_column(Float)
    # when the first attempt of the current run of failures failed: retries go on until
    # the destination's retry_for_hours have passed since (schema 3)
    first_failed_at: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (UniqueConstraint("job_id", "destination"),)


class AETitle(Base):
    """Calling AE titles added at run time (``srnode aet add``), on top of the config's."""

    __tablename__ = "ae_titles"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(255), default="")  # "" = any host
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (UniqueConstraint("ae_title", "host"),)


class AuditEvent(Base):
    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    kind: Mapped[str] = mapped_column(String(64))
    ae_title: Mapped[str | None] = mapped_column(String(16))
    host: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[str | None] = mapped_column(Text)


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
