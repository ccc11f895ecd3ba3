"""Series sent again after their job ended: every instance of a complete series arrived
once more (the SOP Instance UIDs were known, so nothing was counted) after its last job
finished. Found here, acted on by :mod:`dicom_node.jobs.resend`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update

from dicom_node.store.schema import Instance, Job, Series, Study
from dicom_node.store.states import SeriesState, check_series

_COMPLETE = str(SeriesState.COMPLETE)


@dataclass(frozen=True)
class Resent:
    series_id: int
    study_uid: str
    series_uid: str
    instances: int
    first: float
    last: float


def find_resent(engine: Any, stable_age: float, now: float, since: float = 0.0) -> list[Resent]:
    """Complete series whose instances all arrived again after the series was completed
    and its last job finished, the last of them at least ``stable_age`` s ago; only series
    with an instance received after ``since`` are looked at."""
    last_job = (
        select(Job.series_id, func.max(Job.finished_at).label("finished"), func.count().label("n"))
        .group_by(Job.series_id)
        .subquery()
    )
    open_jobs = select(Job.series_id).where(Job.finished_at.is_(None))
    first, last = func.min(Instance.received_at), func.max(Instance.received_at)
    q = (
        select(Series.id, Study.study_uid, Series.series_uid, func.count(), first, last)
        .join(Study, Study.id == Series.study_id)
        .join(Instance, Instance.series_id == Series.id)
        .join(last_job, last_job.c.series_id == Series.id)
        .where(
            Series.state == _COMPLETE,
            Series.id.not_in(open_jobs),
            Series.id.in_(select(Instance.series_id).where(Instance.received_at > since)),
        )
        .group_by(Series.id, Study.study_uid, Series.series_uid, Series.completed_at)
        .having(
            first > func.coalesce(Series.completed_at, 0.0),
            first > func.max(last_job.c.finished),
            last <= now - stable_age,
        )
    )
    with engine.connect() as conn:
        return [Resent(*r) for r in conn.execute(q)]


def mark_seen(engine: Any, r: Resent, now: float, reopen: bool) -> bool:
    """Note a re-sent series once: ``reopen`` makes it ``receiving`` again (the next tick
    completes it and makes a new job, as for a late instance); otherwise only its
    completion time moves past the re-send. False when another process took it."""
    values: dict[str, Any] = {"completed_at": now}
    if reopen:
        check_series(SeriesState.COMPLETE, SeriesState.RECEIVING)
        values = {"state": str(SeriesState.RECEIVING), "last_received": r.last}
    with engine.begin() as conn:
        res = conn.execute(
            update(Series)
            .where(
                Series.id == r.series_id,
                Series.state == _COMPLETE,
                func.coalesce(Series.completed_at, 0.0) < r.first,
            )
            .values(**values)
        )
        return res.rowcount == 1
