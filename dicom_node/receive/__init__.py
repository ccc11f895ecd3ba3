"""Intake: associations and the calling-AE allowlist (scp, access, fastpath with store_path),
STOW-RS and pull intake (stow, pull), ingest into spool and database (ingest, with
instance_input, instance_checks, series_header and store_status), and the DICOM wire
(wire: SOP classes, transfer syntaxes, file meta; header_scan; dimse_codec)."""
