"""The live configuration: allowed calling AEs, destinations, routes, console users and the
audit trail of their changes; the service functions the REST API and the CLI share."""
