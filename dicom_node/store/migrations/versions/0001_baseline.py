"""The schema of srnode 0.1.0 (``srnode_meta.schema_version`` 3), the last release before
the migrations.

On an empty database it creates every table. A database made by srnode 0.1.0 (or an earlier
schema_version) already holds most of them: tables it lacks are created (0.1.0 made the live
configuration's "on first use") and the columns of schema versions 2 and 3 added where
missing, so the rows stay where they are.

Revision ID: 0001
Revises:
"""

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _pk() -> sa.Column:
    return sa.Column("id", sa.Integer(), primary_key=True)


TABLES: dict[str, Callable[[], tuple]] = {
    "srnode_meta": lambda: (
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    ),
    "studies": lambda: (
        _pk(),
        sa.Column("study_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("study_description", sa.String(256)),
        sa.Column("created_at", sa.Float(), nullable=False),
    ),
    "series": lambda: (
        _pk(),
        sa.Column("series_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id"), nullable=False),
        sa.Column("modality", sa.String(16)),
        sa.Column("body_part", sa.String(64)),
        sa.Column("series_description", sa.String(256)),
        sa.Column("calling_ae", sa.String(16)),
        sa.Column("via", sa.String(8)),
        sa.Column("derived_by_srnode", sa.Boolean(), nullable=False),
        sa.Column("expected_count", sa.Integer()),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        sa.Column("first_received", sa.Float(), nullable=False),
        sa.Column("last_received", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("completed_at", sa.Float()),
        sa.Column("routing", sa.Text()),
    ),
    "instances": lambda: (
        _pk(),
        sa.Column("sop_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("series_id", sa.Integer(), sa.ForeignKey("series.id"), nullable=False),
        sa.Column("sop_class_uid", sa.String(64)),
        sa.Column("transfer_syntax", sa.String(64)),
        sa.Column("instance_number", sa.Integer()),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("calling_ae", sa.String(16)),
        sa.Column("via", sa.String(8)),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("removed", sa.Boolean(), nullable=False),
    ),
    "jobs": lambda: (
        _pk(),
        sa.Column("series_id", sa.Integer(), sa.ForeignKey("series.id"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("route", sa.String(128)),
        sa.Column("model", sa.Text()),
        sa.Column("destinations", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        sa.Column("derived_count", sa.Integer(), nullable=False),
        sa.Column("derived_series_uid", sa.String(64)),
        sa.Column("claimed_by", sa.String(128)),
        sa.Column("lease_until", sa.Float()),
        sa.Column("next_attempt_at", sa.Float()),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float()),
        sa.Column("finished_at", sa.Float()),
    ),
    "exports": lambda: (
        _pk(),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("destination", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("next_attempt_at", sa.Float()),
        sa.Column("sent_count", sa.Integer(), nullable=False),
        sa.Column("pending", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("first_failed_at", sa.Float()),
        sa.UniqueConstraint("job_id", "destination"),
    ),
    "ae_titles": lambda: (
        _pk(),
        sa.Column("ae_title", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.UniqueConstraint("ae_title", "host"),
    ),
    "audit_events": lambda: (
        _pk(),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("ae_title", sa.String(16)),
        sa.Column("host", sa.String(255)),
        sa.Column("detail", sa.Text()),
    ),
    "live_destinations": lambda: (
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    ),
    "live_routes": lambda: (
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    ),
    "config_seeds": lambda: (
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
    ),
    "console_users": lambda: (
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    ),
    "series_catalog": lambda: (
        sa.Column("series_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("study_date", sa.String(8)),
        sa.Column("accession_number", sa.String(16)),
        sa.Column("series_number", sa.Integer()),
    ),
}

#: (index name, table, columns)
INDEXES = [
    ("ix_series_study_id", "series", ["study_id"]),
    ("ix_series_state", "series", ["state"]),
    ("ix_instances_series_id", "instances", ["series_id"]),
    ("ix_jobs_series_id", "jobs", ["series_id"]),
    ("ix_jobs_state", "jobs", ["state"]),
    ("ix_jobs_claim", "jobs", ["state", "claimed_by", "next_attempt_at"]),
    ("ix_exports_job_id", "exports", ["job_id"]),
    ("ix_audit_events_at", "audit_events", ["at"]),
    ("ix_series_catalog_study_date", "series_catalog", ["study_date"]),
    ("ix_series_catalog_accession_number", "series_catalog", ["accession_number"]),
]

#: columns that srnode's schema versions 2 and 3 added to tables of version 1
LATER_COLUMNS = [("series", "routing", sa.Text()), ("exports", "first_failed_at", sa.Float())]


def upgrade() -> None:
    bind = op.get_bind()
    have = set(sa.inspect(bind).get_table_names())
    for name, columns in TABLES.items():
        if name not in have:
            op.create_table(name, *columns())
    inspector = sa.inspect(bind)
    for table, column, type_ in LATER_COLUMNS:
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, sa.Column(column, type_))
    for index, table, columns in INDEXES:
        if index not in {i["name"] for i in inspector.get_indexes(table)}:
            op.create_index(index, table, columns)
    meta = sa.table("srnode_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    version = bind.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version"))
    if version.first() is None:
        op.bulk_insert(meta, [{"key": "schema_version", "value": "3"}])
    else:
        op.execute(meta.update().where(meta.c.key == "schema_version").values(value="3"))


def downgrade() -> None:
    raise NotImplementedError("the baseline is not undone: restore a backup of the database")
