"""Intake: associations and the calling-AE allowlist (scp, access, fastpath), STOW-RS and
pull intake (stow, pull), ingest into spool and database, the DICOM wire rules (wire)."""
