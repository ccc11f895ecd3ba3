"""The series catalog: StudyDate, AccessionNumber and SeriesNumber of each received series,
read once from the header of its first instance so that jobs can be searched by them. It
holds no patient name or ID."""

from __future__ import annotations

import logging
from typing import Any

import pydicom

from dicom_node.store import console

log = logging.getLogger(__name__)

_TAGS = ["StudyDate", "AccessionNumber", "SeriesNumber"]


def _text(ds: Any, key: str, limit: int) -> str | None:
    try:
        v = str(ds.get(key, "") or "").strip()
    except Exception:  # a malformed value: leave it out
        return None
    return v[:limit] or None


def index_new_series(engine: Any, limit: int = 200) -> int:
    """Catalogue up to ``limit`` series that are not yet; returns how many were.

    The headers are read with no database transaction open (on SQLite every transaction
    holds the write lock, and the receive path must not wait for file reads)."""
    first = console.series_to_catalog(engine, limit)
    rows = [_facts(sid, path) for sid, path in first.items()]
    console.add_to_catalog(engine, rows)
    return len(rows)


def _facts(sid: int, path: str | None) -> dict[str, Any]:
    values: dict[str, Any] = {"series_id": sid}
    if path is None:
        return values
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
    except Exception as e:
        log.warning("catalog: series id %d: header not readable (%s)", sid, type(e).__name__)
        return values
    date = _text(ds, "StudyDate", 8)
    values.update(
        study_date=date if date and date.isdigit() else None,
        accession_number=_text(ds, "AccessionNumber", 16),
    )
    number = _text(ds, "SeriesNumber", 12)
    if number and number.lstrip("-").isdigit() and abs(int(number)) < 2**31:
        values["series_number"] = int(number)
    return values
