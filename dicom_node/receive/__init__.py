"""Intake: associations and the calling-AE allowlist (scp, access, fastpath), STOW-RS and
pull intake (stow, pull), ingest into spool and database (ingest, with instance_input,
instance_checks and store_status), the DICOM wire rules (wire)."""
