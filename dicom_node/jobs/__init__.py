"""The life of a job: database schema and sessions (db), series stability and routing,
the scheduler tick and the worker that claims, enhances and hands over to export."""
