"""Audit rows in one format; srnode 0.1.0 no longer opens the database.

srnode 0.1.0 wrote its audit rows in two formats: the console's changes as a JSON object
(user, target, before, after), the node's own events (an association refused) as plain text.
Every row becomes the JSON object ``{"user", "target", "before", "after", "detail"}`` that
:mod:`dicom_node.store.audit` writes and reads. ``srnode_meta.schema_version`` goes to 4, so
that srnode 0.1.0 refuses to start on an upgraded database instead of writing into it.

Revision ID: 0002
Revises: 0001
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

audit = sa.table(
    "audit_events",
    sa.column("id", sa.Integer),
    sa.column("ae_title", sa.String),
    sa.column("detail", sa.Text),
)
meta = sa.table("srnode_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
KEYS = ("user", "target", "before", "after", "detail")


def _one_format(ae_title: str | None, detail: str | None) -> str:
    try:
        body = json.loads(detail or "")
    except ValueError:
        body = None
    if not (isinstance(body, dict) and "user" in body):  # a node event: plain text
        body = {"user": None, "target": ae_title, "detail": detail}
    return json.dumps({k: body.get(k) for k in KEYS}, default=str)


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(audit.c.id, audit.c.ae_title, audit.c.detail)).all()
    changed = [
        {"row_id": i, "new": new}
        for i, ae, detail in rows
        if (new := _one_format(ae, detail)) != detail
    ]
    if changed:
        bind.execute(
            audit.update()
            .where(audit.c.id == sa.bindparam("row_id"))
            .values(detail=sa.bindparam("new")),
            changed,
        )
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="4"))


def downgrade() -> None:
    # srnode 0.1.0 reads the JSON rows as they are; only its version check must pass again
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="3"))
