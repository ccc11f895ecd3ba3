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

import logging
from typing import Any

from dicom_node.error_text import describe
from dicom_node.jobs.routing import decide
from dicom_node.metrics import count_routed
from dicom_node.receive.series_header import SeriesHeader
from dicom_node.store.database import Database
from dicom_node.store.jobs import Jobs
from dicom_node.store.states import JobState

log = logging.getLogger(__name__)


def complete_stable_series(db: Database, stable_age: float, now: float | None = None) -> list[int]:
    """Mark quiet (or full) receiving series complete and make a job for each; job ids."""
    return Jobs(db).complete_stable_series(stable_age, now)


def route_received_jobs(db: Database, settings: Any) -> list[int]:
    """Decide every ``received`` job: ``queued`` or ``skipped``. Returns the queued ids."""
    jobs = Jobs(db)
    queued: list[int] = []
    names = [d.name for d in settings.destinations]
    for r in jobs.received():
        facts = SeriesHeader.from_stored(r)
        try:
            d = decide(settings.routes, facts, names)
        except Exception as e:  # a bad rule must not stop the node
            log.error("routing failed for series=%s: %s", r.series_uid, describe(e))
            d = None
            state, reason, route, model, dests = (
                JobState.SKIPPED,
                f"routing error: {describe(e)}",
                None,
                None,
                [],
            )
        if d is not None:
            state = JobState.QUEUED if d.action == "enhance" else JobState.SKIPPED
            count_routed(d.action, d.route)
            reason, route, model, dests = d.reason, d.route, d.model, list(d.destinations)
        if not jobs.route(r.id, state, reason, route, model, dests):
            continue
        log.info(
            "series complete study=%s series=%s modality=%s instances=%d -> job %d %s (%s)",
            r.study_uid,
            r.series_uid,
            facts.modality,
            r.instance_count,
            r.id,
            state,
            reason,
        )
        if state == JobState.QUEUED:
            queued.append(r.id)
    return queued


def tick(db: Database, settings: Any, now: float | None = None) -> list[int]:
    """One scheduler tick: complete stable series, route their jobs; queued job ids."""
    complete_stable_series(db, settings.scheduler.stable_age, now)
    return route_received_jobs(db, settings)
