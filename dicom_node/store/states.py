"""The states of a series, job and export row, and the moves allowed between them.

A series is ``receiving`` while instances arrive and ``complete`` once a job was made for
them (a late instance opens it again). A job goes ``received -> queued -> processing ->
exporting -> done``; ``failed`` keeps the attempts and the last error; ``skipped`` says why
routing (or the engine) did not enhance it. Exports (one row per destination) go ``pending ->
done | failed``. The allowed moves are written once (:data:`SERIES_MOVES`, :data:`JOB_MOVES`,
:data:`EXPORT_MOVES`, and the admin's :data:`RETRY_FROM`, :data:`CANCEL_FROM`); every update
in :mod:`dicom_node.store` checks them in Python (a move the table lacks raises
:class:`IllegalMove`) and in its ``WHERE`` clause, so a row never takes a move the table does
not list. These Enums are the one place the states' names are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dicom_node.error_text import scrub


class SeriesState(StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"


class JobState(StrEnum):
    RECEIVED = "received"
    QUEUED = "queued"
    PROCESSING = "processing"
    EXPORTING = "exporting"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class ExportState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


S = SeriesState
#: from -> the states a series may move to: a quiet (or full) series is complete and gets a
#: job; an instance that arrives later makes it receiving again (and a new job follows).
SERIES_MOVES: dict[SeriesState, frozenset[SeriesState]] = {
    S.RECEIVING: frozenset({S.RECEIVING, S.COMPLETE}),
    S.COMPLETE: frozenset({S.RECEIVING}),
}

J = JobState
#: from -> the states a job may move to. ``srnode jobs retry`` (:meth:`Jobs.retry`) may put
#: any job back to ``queued``; that admin move is the one exception and is written there.
JOB_MOVES: dict[JobState, frozenset[JobState]] = {
    J.RECEIVED: frozenset({J.QUEUED, J.SKIPPED}),
    J.QUEUED: frozenset({J.PROCESSING}),
    J.PROCESSING: frozenset({J.PROCESSING, J.QUEUED, J.EXPORTING, J.SKIPPED, J.FAILED}),
    J.EXPORTING: frozenset({J.EXPORTING, J.DONE, J.FAILED}),
    J.DONE: frozenset(),
    J.FAILED: frozenset(),
    J.SKIPPED: frozenset(),
}
EXPORT_MOVES: dict[ExportState, frozenset[ExportState]] = {
    ExportState.PENDING: frozenset({ExportState.PENDING, ExportState.DONE, ExportState.FAILED}),
    ExportState.DONE: frozenset(),
    ExportState.FAILED: frozenset(),
}
#: states a worker may claim a job in
ACTIVE: tuple[JobState, ...] = (J.QUEUED, J.PROCESSING, J.EXPORTING)
#: the admin's moves (console, API, ``srnode jobs retry``), outside the path of a job:
#: a finished job may be queued again; one that waits or runs may be cancelled (skipped)
RETRY_FROM: tuple[JobState, ...] = (J.FAILED, J.SKIPPED, J.DONE)
CANCEL_FROM: tuple[JobState, ...] = (J.RECEIVED, *ACTIVE)
#: every job state's name, in the order of the path
JOB_STATES: tuple[str, ...] = tuple(s.value for s in JobState)


def _recordable(values: dict[str, Any]) -> dict[str, Any]:
    """Error text as it may be stored and shown: no element values (scrubbed). Reasons
    are srnode's own words (routing), or made with :func:`describe` where they quote an
    exception."""
    if values.get("last_error") is not None:
        values["last_error"] = scrub(values["last_error"])
    return values


class IllegalMove(RuntimeError):
    """A state change the transition table does not allow (a bug, never user input)."""


def sources(to: JobState) -> list[str]:
    """The states a job may come from to reach ``to``."""
    return [str(a) for a, bs in JOB_MOVES.items() if to in bs]


def series_sources(to: SeriesState) -> list[str]:
    """The states a series may come from to reach ``to``."""
    return [str(a) for a, bs in SERIES_MOVES.items() if to in bs]


def _check(kind: str, moves: dict[Any, frozenset[Any]], enum: Any, a: Any, b: Any) -> None:
    if enum(b) not in moves[enum(a)]:
        raise IllegalMove(f"{kind} {a} -> {b}")


def check_series(a: SeriesState | str, b: SeriesState | str) -> None:
    _check("series", SERIES_MOVES, SeriesState, a, b)


def check_job(a: JobState | str, b: JobState | str) -> None:
    _check("job", JOB_MOVES, JobState, a, b)


def check_export(a: ExportState | str, b: ExportState | str) -> None:
    _check("export", EXPORT_MOVES, ExportState, a, b)


def check_admin(frm: JobState | str, allowed: tuple[JobState, ...], what: str) -> None:
    if JobState(frm) not in allowed:
        raise IllegalMove(f"job {frm}: {what} only from {', '.join(map(str, allowed))}")


@dataclass(frozen=True)
class Claimed:
    id: int
    state: str
    series_id: int
    attempts: int


class ClaimLost(Exception):
    """The worker's lease ran out and another worker holds the job now."""
