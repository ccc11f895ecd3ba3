"""Alembic's environment: runs on the connection (and in the transaction) that
:func:`dicom_node.store.migrate.upgrade` opened and holds its lock on."""

from alembic import context

from dicom_node.store.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("srnode's migrations run through dicom_node.store.migrate")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
