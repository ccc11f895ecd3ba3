"""When is a series complete, and what is done with it.

A series is complete when no instance of it arrived for ``stable_age`` seconds, or as soon
as its expected instance count (ImagesInAcquisition, where the sender gives it) is reached.
Completion is decided from the database (``series.last_received``), so it survives a
restart: after one, the first tick completes whatever went quiet meanwhile.

Completing a series makes a job in state ``received``; routing then moves it to
``queued`` (enhance) or ``skipped`` (ignored / no route / derived by srnode, with the
reason). Both steps are conditional updates, so several processes on one database never
make two jobs for one completion.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from sqlalchemy import and_, or_, select, update

from dicom_node.jobs.db import QUEUED, RECEIVED, SKIPPED, Database, Job, Series, Study
from dicom_node.metrics import count_routed

log = logging.getLogger(__name__)


def complete_stable_series(db: Database, stable_age: float, now: float | None = None) -> list[int]:
    """Mark quiet (or full) receiving series complete and make a job for each; job ids."""
    now = time.time() if now is None else now
    made: list[int] = []
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(Series.id, Series.last_received, Series.instance_count).where(
                Series.state == "receiving",
                or_(
                    Series.last_received <= now - stable_age,
                    and_(
                        Series.expected_count.is_not(None),
                        Series.expected_count > 0,
                        Series.instance_count >= Series.expected_count,
                    ),
                ),
            )
        ).all()
    for series_id, last_received, count in rows:
        with db.engine.begin() as conn:
            res = conn.execute(
                update(Series)
                .where(
                    Series.id == series_id,
                    Series.state == "receiving",
                    Series.last_received == last_received,
                )
                .values(state="complete", completed_at=now)
            )
            if res.rowcount != 1:
                continue  # an instance arrived meanwhile, or another process did it
            job_id = conn.execute(
                Job.__table__.insert()
                .values(
                    series_id=series_id,
                    state=RECEIVED,
                    destinations="[]",
                    attempts=0,
                    instance_count=count,
                    derived_count=0,
                    created_at=now,
                    updated_at=now,
                )
                .returning(Job.id)
            ).scalar_one()
            made.append(job_id)
    return made


def route_received_jobs(db: Database, settings: Any) -> list[int]:
    """Decide every ``received`` job: ``queued`` or ``skipped``. Returns the queued ids."""
    from dicom_node.jobs.routing import SeriesFacts, decide

    queued: list[int] = []
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(
                Job.id,
                Series.series_uid,
                Series.modality,
                Series.body_part,
                Series.series_description,
                Series.calling_ae,
                Series.derived_by_srnode,
                Series.instance_count,
                Study.study_uid,
                Study.study_description,
            )
            .join(Series, Series.id == Job.series_id)
            .join(Study, Study.id == Series.study_id)
            .where(Job.state == RECEIVED)
            .order_by(Job.id)
        ).all()
    names = [d.name for d in settings.destinations]
    for r in rows:
        facts = SeriesFacts(
            modality=r.modality or "",
            body_part=r.body_part or "",
            series_description=r.series_description or "",
            study_description=r.study_description or "",
            calling_ae=r.calling_ae or "",
            derived_by_srnode=bool(r.derived_by_srnode),
        )
        try:
            d = decide(settings.routes, facts, names)
        except Exception as e:  # a bad rule must not stop the node
            log.exception("routing failed for series=%s", r.series_uid)
            d = None
            state, reason, route, model, dests = SKIPPED, f"routing error: {e}", None, None, []
        if d is not None:
            state = QUEUED if d.action == "enhance" else SKIPPED
            count_routed(d.action, d.route)
            reason, route, model, dests = d.reason, d.route, d.model, list(d.destinations)
        with db.engine.begin() as conn:
            res = conn.execute(
                update(Job)
                .where(Job.id == r.id, Job.state == RECEIVED)
                .values(
                    state=state,
                    reason=reason,
                    route=route,
                    model=model,
                    destinations=json.dumps(dests),
                    updated_at=time.time(),
                    finished_at=None if state == QUEUED else time.time(),
                )
            )
        if res.rowcount != 1:
            continue
        log.info(
            "series complete study=%s series=%s modality=%s instances=%d -> job %d %s (%s)",
            r.study_uid,
            r.series_uid,
            r.modality,
            r.instance_count,
            r.id,
            state,
            reason,
        )
        if state == QUEUED:
            queued.append(r.id)
    return queued


def tick(db: Database, settings: Any, now: float | None = None) -> list[int]:
    """One scheduler tick: complete stable series, route their jobs; queued job ids."""
    complete_stable_series(db, settings.scheduler.stable_age, now)
    return route_received_jobs(db, settings)
