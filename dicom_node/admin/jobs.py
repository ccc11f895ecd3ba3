"""Jobs for the console and the API: search (:mod:`dicom_node.store.console`), one job with its
exports, retry and cancel (each audited in the transaction of its change)."""

from __future__ import annotations

from typing import Any

from dicom_node.admin.errors import Actor, Conflict, NotFound
from dicom_node.store import console
from dicom_node.store.console import JobFilter, per_hour, search  # noqa: F401  (the API's)
from dicom_node.store.jobs import Jobs
from dicom_node.store.states import CANCEL_FROM, RETRY_FROM, JobState

RETRYABLE = RETRY_FROM
CANCELLABLE = CANCEL_FROM


def get(engine: Any, job_id: int) -> dict[str, Any]:
    """One job with its series facts and its exports."""
    job = console.get(engine, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def retry(
    engine: Any, db: Any, actor: Actor, job_id: int, destination: str | None = None
) -> dict[str, Any]:
    """Queue a failed, skipped or done job again (fresh attempts, every destination); with
    ``destination``, send a failed job's derived series again to that destination alone."""
    before = get(engine, job_id)
    if destination is not None:
        failed = [e["destination"] for e in before["exports"] if e["state"] == "failed"]
        if before["state"] != JobState.FAILED or destination not in failed:
            raise Conflict(
                f"job {job_id}: no failed export to {destination!r}"
                + (f" (failed: {', '.join(failed)})" if failed else "")
            )
        if not Jobs(db).retry_export(job_id, destination, actor=actor):
            raise Conflict(f"job {job_id} changed meanwhile; look again")
        return get(engine, job_id)
    if before["state"] not in RETRYABLE:
        raise Conflict(f"job {job_id} is {before['state']}: only failed, skipped or done jobs")
    if not Jobs(db).retry(job_id, expect=JobState(before["state"]), actor=actor):
        raise Conflict(f"job {job_id} changed meanwhile; look again")
    return get(engine, job_id)


def retry_failed(db: Any, actor: Actor) -> list[int]:
    """Every failed job queued again, each audited; their ids."""
    return Jobs(db).retry_failed(actor)


def cancel(db: Any, actor: Actor, job_id: int) -> dict[str, Any]:
    """Stop a job that is waiting or running: it becomes ``skipped`` (reason: cancelled)
    and its open exports ``failed``; a worker holding it loses its claim."""
    before = get(db.engine, job_id)
    if before["state"] not in CANCELLABLE:
        raise Conflict(f"job {job_id} is {before['state']}: nothing to cancel")
    reason = f"cancelled by {actor.user}"
    if not Jobs(db).cancel(job_id, reason, expect=JobState(before["state"]), actor=actor):
        raise Conflict(f"job {job_id} changed meanwhile; look again")
    return get(db.engine, job_id)


def failures(engine: Any, limit: int = 10) -> tuple[int, list[dict[str, Any]]]:
    return search(engine, JobFilter(state=str(JobState.FAILED), limit=limit))
