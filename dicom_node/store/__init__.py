"""The node's database, its one owner: schema and Alembic migrations, the Database, every
state change of a series, job and export row (with its table of allowed moves), the audit
writer, the console's read queries, and the rows of the live configuration and of the
console users. No module outside this package imports SQLAlchemy or its tables
(tests/test_store_owner.py)."""
