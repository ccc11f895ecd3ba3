"""The live configuration: allowed calling AEs, destinations, routes, console users, job retry
and cancel; the service functions the REST API and the CLI share (rows and audit: store)."""
