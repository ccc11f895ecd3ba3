"""The export step of a job (``exporting -> done``, ``failed``, or back to waiting): one
attempt for each of its exports that is due, then the job settled from its export rows.

Export is per destination (``exports`` rows): what is still to send, attempts, last error,
the time of the first failure and of the next attempt (capped exponential backoff with
jitter, :func:`dicom_node.export.send.next_retry_delay`). Retries go on for the
destination's ``retry_for_hours`` after the first failure (and, if set, up to its
``max_attempts``); all of it is in the rows, so a restart keeps the schedule. What an
attempt makes of its row is :mod:`dicom_node.jobs.export_outcome`; what a done job's files
become is :func:`dicom_node.jobs.retention.after_export`."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from dicom_node.jobs import export_outcome, retention
from dicom_node.jobs.step_context import StepContext
from dicom_node.metrics import count_export, count_failed
from dicom_node.store.states import ExportState, JobState

log = logging.getLogger(__name__)


def export(w: StepContext, job_id: int) -> None:
    """One attempt for each export of the job that is due; then settle the job."""
    from dicom_node.export.send import send

    dests = {d.name: d for d in w.settings.destinations}
    ctx = w.jobs.context(job_id)
    for r in w.jobs.pending_exports(job_id):
        if r.next_attempt_at is not None and r.next_attempt_at > time.time():
            continue
        w.renew(job_id)
        pending = json.loads(r.pending or "[]")
        dest = dests.get(r.destination)
        if dest is None:
            out = export_outcome.not_configured(r.destination, time.time())
        elif not pending:
            out = export_outcome.nothing_left(time.time())
        else:
            result = send(dest, pending, w.settings.node.ae_title)
            out = export_outcome.after_attempt(r, dest, pending, result, time.time())
        if out.level:
            log.log(out.level, "job %d export to %s: %s", job_id, r.destination, out.message)
        if out.state == ExportState.DONE:
            log.info(
                "job %d exported study=%s series=%s to %s: %d instances",
                job_id,
                ctx["study_uid"],
                ctx["series_uid"],
                r.destination,
                out.values.get("sent_count", r.sent_count),
            )
        count_export(r.destination, out.state)
        w.jobs.record_export(r.id, **out.values)
    _settle(w, job_id, ctx)


def _settle(w: StepContext, job_id: int, ctx: dict[str, Any]) -> None:
    """After export attempts: done, failed, or back to waiting for the next retry."""
    exps = w.jobs.exports(job_id)
    now = time.time()
    pending = [e for e in exps if e.state == ExportState.PENDING]
    failed = [e for e in exps if e.state == ExportState.FAILED]
    if pending:
        nxt = min((e.next_attempt_at or now) for e in pending)
        w.jobs.release(job_id, w.name, next_attempt_at=nxt, last_error=_summary(pending + failed))
        return
    if failed:
        said = export_outcome.summary(exps)  # "exported 1/2; pacs2: ..."
        w.jobs.finish(job_id, JobState.FAILED, w.name, last_error=said)
        count_failed("export")
        log.error("job %d failed: %s", job_id, said)
        return
    w.jobs.finish(job_id, JobState.DONE, w.name, next_attempt_at=None, last_error=None)
    log.info("job %d done study=%s series=%s", job_id, ctx["study_uid"], ctx["series_uid"])
    retention.after_export(w.jobs, w.settings, job_id, ctx["series_uid"])


def _summary(exps: list[Any]) -> str:
    return "; ".join(f"{e.destination}: {e.last_error or e.state}" for e in exps)[:4000]
