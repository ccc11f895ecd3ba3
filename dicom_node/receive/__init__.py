"""Intake: associations and the calling-AE allowlist (scp, access), STOW-RS and C-GET/C-MOVE
intake (stow, pull), ingest into the spool and the database, and the DICOM wire rules (wire)."""
