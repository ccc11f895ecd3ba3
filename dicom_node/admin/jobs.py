"""Jobs for the console and the API: search (state, study, dates, modality, accession,
description), one job with its exports, retry and cancel (audited)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select

from dicom_node.admin import audit
from dicom_node.admin.errors import Actor, Conflict, NotFound
from dicom_node.admin.tables import SeriesCatalog, ensure_tables
from dicom_node.jobs.schema import Export, Job, Series, Study
from dicom_node.jobs.states import ACTIVE, JobState
from dicom_node.jobs.transitions import Jobs

RETRYABLE = (JobState.FAILED, JobState.SKIPPED, JobState.DONE)
CANCELLABLE = (JobState.RECEIVED, *ACTIVE)


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
    ensure_tables(engine)
    q = _query(f)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(q.subquery())).scalar_one()
        rows = conn.execute(q.order_by(Job.id.desc()).limit(f.limit).offset(f.offset))
        return total, [_row(r) for r in rows]


def get(engine: Any, job_id: int) -> dict[str, Any]:
    """One job with its series facts and its exports."""
    ensure_tables(engine)
    with engine.connect() as conn:
        r = conn.execute(_query(JobFilter()).where(Job.id == job_id)).first()
        if r is None:
            raise NotFound(f"no job {job_id}")
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


def retry(engine: Any, db: Any, actor: Actor, job_id: int) -> dict[str, Any]:
    """Queue a failed, skipped or done job again (fresh attempts, every destination)."""
    before = get(engine, job_id)
    if before["state"] not in RETRYABLE:
        raise Conflict(f"job {job_id} is {before['state']}: only failed, skipped or done jobs")
    if not Jobs(db).retry(job_id):
        raise NotFound(f"no job {job_id}")
    with engine.begin() as conn:
        audit.record(
            conn, actor, "job.retried", str(job_id), {"state": before["state"]}, {"state": "queued"}
        )
    return get(engine, job_id)


def retry_failed(db: Any, actor: Actor) -> list[int]:
    """Every failed job queued again, each audited; their ids."""
    ids = []
    for job_id in Jobs(db).failed_ids():
        try:
            retry(db.engine, db, actor, job_id)
        except (Conflict, NotFound):  # changed meanwhile
            continue
        ids.append(job_id)
    return ids


def cancel(db: Any, actor: Actor, job_id: int) -> dict[str, Any]:
    """Stop a job that is waiting or running: it becomes ``skipped`` (reason: cancelled)
    and its open exports ``failed``; a worker holding it loses its claim."""
    before = get(db.engine, job_id)
    if before["state"] not in CANCELLABLE:
        raise Conflict(f"job {job_id} is {before['state']}: nothing to cancel")
    if not Jobs(db).cancel(job_id, f"cancelled by {actor.user}"):
        raise Conflict(f"job {job_id} changed meanwhile; look again")
    with db.engine.begin() as conn:
        audit.record(
            conn,
            actor,
            "job.cancelled",
            str(job_id),
            {"state": before["state"]},
            {"state": str(JobState.SKIPPED)},
        )
    return get(db.engine, job_id)


def per_hour(engine: Any, hours: int = 24, now: float | None = None) -> list[dict[str, Any]]:
    """Instances received and slices derived in each of the last ``hours`` hours."""
    from dicom_node.jobs.schema import Instance

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


def failures(engine: Any, limit: int = 10) -> tuple[int, list[dict[str, Any]]]:
    total, rows = search(engine, JobFilter(state=str(JobState.FAILED), limit=limit))
    return total, rows
