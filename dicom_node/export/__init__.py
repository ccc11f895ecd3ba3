"""Sending derived series to their destinations: one exporter per kind (DIMSE C-STORE,
DICOMweb STOW-RS), retries with backoff."""
