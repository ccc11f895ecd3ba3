"""The Alembic migrations of the node's schema (``env.py``, ``versions/``), run at start by
:func:`dicom_node.store.migrate.upgrade`; never imported as code."""
