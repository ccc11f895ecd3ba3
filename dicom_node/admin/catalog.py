"""The series catalog: StudyDate, AccessionNumber and SeriesNumber of each received series,
so that jobs can be searched by them. They are the series' stored
:class:`~dicom_node.receive.series_header.SeriesHeader` (taken at ingest); only a series
stored by an srnode that did not keep them in its header has its first instance read
again. It holds no patient name or ID."""

from __future__ import annotations

import logging
from typing import Any

import pydicom

from dicom_node.receive.series_header import SeriesHeader
from dicom_node.store import console

log = logging.getLogger(__name__)

#: what :meth:`SeriesHeader.from_dataset` needs of an old series' first file
_TAGS = ["StudyDate", "AccessionNumber", "SeriesNumber"]


def index_new_series(engine: Any, limit: int = 200) -> int:
    """Catalogue up to ``limit`` series that are not yet; returns how many were.

    Old series' headers are read with no database transaction open (on SQLite every
    transaction holds the write lock, and the receive path must not wait for file reads)."""
    todo = console.series_to_catalog(engine, limit)
    rows = [{"series_id": sid, **_facts(sid, *found)} for sid, found in todo.items()]
    console.add_to_catalog(engine, rows)
    return len(rows)


def _facts(sid: int, stored: str | None, path: str | None) -> dict[str, Any]:
    if SeriesHeader.has_catalog_facts(stored):
        return SeriesHeader.from_json(stored or "").catalog_row()
    if path is None:
        return {}
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
        return SeriesHeader.from_dataset(ds).catalog_row()
    except Exception as e:
        log.warning("catalog: series id %d: header not readable (%s)", sid, type(e).__name__)
        return {}
