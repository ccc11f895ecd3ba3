"""The node's database, its one owner: schema and Alembic migrations, the Database, every
state change of a series, job and export row (with its table of allowed moves), the audit
writer and the console's read queries."""
