"""The console's read queries: jobs searched by state, study, series, modality, accession,
description and study date (with the series catalog), one job with its exports, the work of
the last hours, and the series the catalog has still to read."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, or_, select

from dicom_node.store.schema import Export, Instance, Job, Series, SeriesCatalog, Study
from dicom_node.store.series import HEADER_COLUMNS


@dataclass(frozen=True)
class JobFilter:
    state: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    modality: str | None = None
    accession: str | None = None
    description: str | None = None  # in the series or the study description
    study_date_from: str | None = None  # YYYYMMDD
    study_date_to: str | None = None
    limit: int = 50
    offset: int = 0


_COLUMNS = (
    Job.id,
    Job.state,
    Job.attempts,
    Job.reason,
    Job.last_error,
    Job.route,
    Job.model,
    Job.destinations,
    Job.instance_count,
    Job.derived_count,
    Job.derived_series_uid,
    Job.created_at,
    Job.updated_at,
    Job.started_at,
    Job.finished_at,
    Job.next_attempt_at,
    Series.id.label("series_id"),
    Series.series_uid,
    Series.modality,
    Series.body_part,
    Series.series_description,
    Series.calling_ae,
    Series.via,
    Study.study_uid,
    Study.study_description,
    SeriesCatalog.study_date,
    SeriesCatalog.accession_number,
)


def _like(value: str) -> str:
    return "%" + value.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"


def _query(f: JobFilter):
    q = (
        select(*_COLUMNS)
        .join(Series, Series.id == Job.series_id)
        .join(Study, Study.id == Series.study_id)
        .outerjoin(SeriesCatalog, SeriesCatalog.series_id == Series.id)
    )
    if f.state:
        q = q.where(Job.state == f.state)
    if f.study_uid:
        q = q.where(Study.study_uid == f.study_uid)
    if f.series_uid:
        q = q.where(Series.series_uid == f.series_uid)
    if f.modality:
        q = q.where(func.upper(Series.modality) == f.modality.upper())
    if f.accession:
        q = q.where(SeriesCatalog.accession_number == f.accession)
    if f.description:
        pat = _like(f.description.lower())
        q = q.where(
            or_(
                func.lower(Series.series_description).like(pat, escape="\\"),
                func.lower(Study.study_description).like(pat, escape="\\"),
            )
        )
    if f.study_date_from:
        q = q.where(SeriesCatalog.study_date >= f.study_date_from)
    if f.study_date_to:
        q = q.where(SeriesCatalog.study_date <= f.study_date_to)
    return q


def _row(r: Any) -> dict[str, Any]:
    d = dict(r._mapping)
    d["destinations"] = json.loads(d.get("destinations") or "[]")
    return d


def search(engine: Any, f: JobFilter) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, the page asked for), newest first."""
    q = _query(f)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(q.subquery())).scalar_one()
        rows = conn.execute(q.order_by(Job.id.desc()).limit(f.limit).offset(f.offset))
        return total, [_row(r) for r in rows]


def get(engine: Any, job_id: int) -> dict[str, Any] | None:
    """One job with its series facts and its exports; None when there is none."""
    with engine.connect() as conn:
        r = conn.execute(_query(JobFilter()).where(Job.id == job_id)).first()
        if r is None:
            return None
        job = _row(r)
        exports = conn.execute(
            select(
                Export.destination,
                Export.state,
                Export.attempts,
                Export.sent_count,
                Export.last_error,
                Export.next_attempt_at,
                Export.updated_at,
            )
            .where(Export.job_id == job_id)
            .order_by(Export.id)
        )
        job["exports"] = [dict(e._mapping) for e in exports]
    return job


def per_hour(engine: Any, hours: int = 24, now: float | None = None) -> list[dict[str, Any]]:
    """Instances received and slices derived in each of the last ``hours`` hours."""
    now = time.time() if now is None else now
    start = (int(now) // 3600 - hours + 1) * 3600
    buckets = {start + i * 3600: {"received": 0, "processed": 0} for i in range(hours)}
    with engine.connect() as conn:
        for (t,) in conn.execute(select(Instance.received_at).where(Instance.received_at >= start)):
            key = int(t) // 3600 * 3600
            if key in buckets:
                buckets[key]["received"] += 1
        for t, n in conn.execute(
            select(Job.finished_at, Job.derived_count).where(
                Job.finished_at >= start, Job.derived_count > 0
            )
        ):
            key = int(t) // 3600 * 3600
            if key in buckets:
                buckets[key]["processed"] += n or 0
    return [{"hour": k, **v} for k, v in sorted(buckets.items())]


def series_to_catalog(engine: Any, limit: int = 200) -> dict[int, tuple[str | None, str | None]]:
    """Up to ``limit`` series not yet in the catalog: series id -> (its stored header JSON,
    its first instance's path: None when none is left in the spool)."""
    with engine.connect() as conn:
        todo = conn.execute(
            select(Series.id, Series.routing)
            .outerjoin(SeriesCatalog, SeriesCatalog.series_id == Series.id)
            .where(SeriesCatalog.series_id.is_(None))
            .order_by(Series.id)
            .limit(limit)
        ).all()
        return {
            sid: (
                stored,
                conn.execute(
                    select(Instance.path)
                    .where(Instance.series_id == sid, Instance.removed.is_(False))
                    .order_by(Instance.id)
                    .limit(1)
                ).scalar(),
            )
            for sid, stored in todo
        }


def add_to_catalog(engine: Any, rows: list[dict[str, Any]]) -> None:
    """Catalog rows (``series_id`` and the facts read); a series already there is kept."""
    if not rows:
        return
    with engine.begin() as conn:
        for values in rows:
            exists = conn.execute(
                select(SeriesCatalog.series_id).where(
                    SeriesCatalog.series_id == values["series_id"]
                )
            ).first()
            if exists is None:
                conn.execute(insert(SeriesCatalog).values(**values))


def series_header(engine: Any, series_uid: str) -> Any:
    """The stored header of a received series (a row of
    :data:`~dicom_node.store.series.HEADER_COLUMNS`, what routing reads); None when the node
    has no such series."""
    with engine.connect() as conn:
        return conn.execute(
            select(*HEADER_COLUMNS)
            .join(Study, Study.id == Series.study_id)
            .where(Series.series_uid == series_uid)
        ).first()
