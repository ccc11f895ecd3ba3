"""The life of a job: database schema and sessions (db), its states and their allowed moves
(states) and the updates that make them (transitions, export_rows), what an export attempt
makes of its row (export_outcome), series stability and routing, the scheduler tick and
the worker that claims, enhances and hands over to export."""
