"""Every state change of a job and its export rows, in one place: :class:`Jobs`.

Each update takes only the moves :mod:`dicom_node.store.states` lists: a caller that names a
move the table lacks gets :class:`~dicom_node.store.states.IllegalMove`; a row that is no
longer in a state the move may start from is left alone (False: another process, or the
admin, moved it meanwhile). Claims are atomic and carry a lease: PostgreSQL uses ``FOR UPDATE
SKIP LOCKED``; SQLite an ``UPDATE … WHERE`` that only succeeds while the row is still
claimable. Series moves are in :mod:`dicom_node.store.series`, the export rows' updates in
:mod:`dicom_node.store.exports`; the admin's moves write their audit row in their transaction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update

from dicom_node.store import audit
from dicom_node.store.claims import ClaimRows
from dicom_node.store.exports import ExportRows
from dicom_node.store.schema import Export, Job, Series, Study
from dicom_node.store.series import SeriesRows
from dicom_node.store.spool_rows import SpoolRows
from dicom_node.store.states import (
    CANCEL_FROM,
    RETRY_FROM,
    Claimed,
    ClaimLost,
    ExportState,
    IllegalMove,
    J,
    JobState,
    _recordable,
    check_export,
    check_job,
    sources,
)

if TYPE_CHECKING:
    from dicom_node.store.audit import Who
    from dicom_node.store.database import Database


class Jobs(ClaimRows, SeriesRows, ExportRows, SpoolRows):
    """The job and export rows of one database: every transition, as one conditional
    update (so several processes on one database never take the same step twice)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.engine = db.engine

    # ---------------------------------------------------------------- one job row
    def _move(
        self,
        conn: Any,
        job_id: int,
        to: JobState,
        worker: str | None,
        frm: Iterable[JobState] | None = None,
        **values: Any,
    ) -> bool:
        if frm is None:
            frm = sources(to)
        else:
            frm = [str(f) for f in frm]
            for f in frm:
                check_job(f, to)
        q = update(Job).where(Job.id == job_id, Job.state.in_(frm))
        if worker is not None:
            q = q.where(Job.claimed_by == worker)
        values.setdefault("updated_at", time.time())
        return conn.execute(q.values(state=str(to), **_recordable(values))).rowcount == 1

    def move(
        self,
        job_id: int,
        to: JobState,
        worker: str | None = None,
        *,
        frm: Iterable[JobState] | None = None,
        **values: Any,
    ) -> bool:
        """Move a job to ``to`` from ``frm`` (default: every state that may go there; a
        state in ``frm`` that may not raises IllegalMove); with ``worker``, only while that
        worker holds it. False when the row was not in such a state."""
        with self.engine.begin() as conn:
            return self._move(conn, job_id, to, worker, frm, **values)

    def finish(
        self,
        job_id: int,
        to: JobState,
        worker: str,
        *,
        frm: Iterable[JobState] | None = None,
        **values: Any,
    ) -> bool:
        """Move to a final state and release the claim."""
        values.update(claimed_by=None, lease_until=None, finished_at=time.time())
        return self.move(job_id, to, worker, frm=frm, **values)

    # ---------------------------------------------------------------- routed
    def route(
        self,
        job_id: int,
        to: JobState,
        reason: str,
        route: str | None,
        model: str | None,
        destinations: Sequence[str],
    ) -> bool:
        now = time.time()
        return self.move(
            job_id,
            to,
            frm=(J.RECEIVED,),
            reason=reason,
            route=route,
            model=model,
            destinations=json.dumps(list(destinations)),
            updated_at=now,
            finished_at=None if to == J.QUEUED else now,
        )

    # ---------------------------------------------------------------- admin
    def _admin_move(
        self,
        conn: Any,
        job_id: int,
        allowed: Sequence[JobState],
        expect: JobState | None,
        to: JobState,
        values: dict[str, Any],
    ) -> JobState | None:
        """The admin's move of one job from one of ``allowed`` (``expect``: only from that
        state, which must be allowed); the state it left, None when the row was elsewhere."""
        q = select(Job.state).where(Job.id == job_id)
        if expect is not None:
            if JobState(expect) not in allowed:
                raise IllegalMove(f"job {expect} -> {to}")
            q = q.where(Job.state == str(expect))
        if not self.db.is_sqlite:  # SQLite's BEGIN IMMEDIATE already holds the write lock
            q = q.with_for_update()
        was = conn.execute(q).scalar()
        if was is None or JobState(was) not in allowed:
            return None
        res = conn.execute(
            update(Job).where(Job.id == job_id, Job.state == was).values(state=str(to), **values)
        )
        return JobState(was) if res.rowcount == 1 else None

    def retry(
        self, job_id: int, *, expect: JobState | None = None, actor: Who | None = None
    ) -> bool:
        """Put a finished job (failed, skipped or done) back in the queue: fresh attempts,
        every export again. With ``actor``, audited in the same transaction. False when the
        job is not (or, with ``expect``, no longer) in such a state."""
        with self.engine.begin() as conn:
            values = dict(
                attempts=0,
                last_error=None,
                claimed_by=None,
                lease_until=None,
                next_attempt_at=None,
                finished_at=None,
                updated_at=time.time(),
            )
            was = self._admin_move(conn, job_id, RETRY_FROM, expect, J.QUEUED, values)
            if was is None:
                return False
            conn.execute(delete(Export).where(Export.job_id == job_id))
            if actor is not None:
                audit.record(
                    conn, actor, "job.retried", str(job_id), {"state": was}, {"state": J.QUEUED}
                )
            return True

    def cancel(
        self,
        job_id: int,
        reason: str,
        *,
        expect: JobState | None = None,
        actor: Who | None = None,
    ) -> bool:
        """Stop a job that waits or runs: it becomes ``skipped`` with ``reason`` and its open
        exports ``failed``; a worker holding it loses its claim. With ``actor``, audited in
        the same transaction. False when the job was not in such a state."""
        now = time.time()
        with self.engine.begin() as conn:
            values = dict(
                reason=reason,
                claimed_by=None,
                lease_until=None,
                next_attempt_at=None,
                finished_at=now,
                updated_at=now,
            )
            was = self._admin_move(conn, job_id, CANCEL_FROM, expect, J.SKIPPED, values)
            if was is None:
                return False
            check_export(ExportState.PENDING, ExportState.FAILED)
            conn.execute(
                update(Export)
                .where(Export.job_id == job_id, Export.state == str(ExportState.PENDING))
                .values(state=str(ExportState.FAILED), last_error=reason, updated_at=now)
            )
            if actor is not None:
                audit.record(
                    conn, actor, "job.cancelled", str(job_id), {"state": was}, {"state": J.SKIPPED}
                )
            return True

    # ---------------------------------------------------------------- processing
    def context(self, job_id: int) -> dict[str, Any]:
        """What a worker needs to know about a job: model, destinations, series, study."""
        with self.engine.connect() as conn:
            r = conn.execute(
                select(
                    Job.model,
                    Job.destinations,
                    Job.series_id,
                    Job.attempts,
                    Series.series_uid,
                    Series.modality,
                    Study.study_uid,
                )
                .join(Series, Series.id == Job.series_id)
                .join(Study, Study.id == Series.study_id)
                .where(Job.id == job_id)
            ).one()
        return dict(r._mapping)

    def to_exporting(
        self,
        job_id: int,
        worker: str,
        *,
        model: str,
        written: Sequence[str],
        derived_series: str | None,
        notes: Sequence[str],
        destinations: Iterable[str],
        now: float,
    ) -> None:
        """processing -> exporting, with one pending export per destination, in one
        transaction; :class:`ClaimLost` (and nothing written) if the worker lost its claim."""
        with self.engine.begin() as conn:
            held = self._move(
                conn,
                job_id,
                J.EXPORTING,
                worker,
                (J.PROCESSING,),
                model=model,
                derived_count=len(written),
                derived_series_uid=derived_series,
                next_attempt_at=None,
                last_error=("; ".join(notes)[:2000] or None),
                updated_at=now,
            )
            if not held:  # our lease ran out and another worker has the job now
                raise ClaimLost  # rolls the transaction back
            conn.execute(delete(Export).where(Export.job_id == job_id))  # a rerun: anew
            for d in destinations:
                conn.execute(
                    Export.__table__.insert().values(
                        job_id=job_id,
                        destination=d,
                        state=str(ExportState.PENDING),
                        attempts=0,
                        sent_count=0,
                        pending=json.dumps(list(written)),
                        updated_at=now,
                    )
                )

    def processing_failed(
        self, c: Claimed, worker: str, error: str, max_attempts: int, retry_delay: float
    ) -> float | None:
        """processing -> failed after the last attempt, else back to queued with a backoff;
        the delay, or None when it failed for good."""
        now = time.time()
        if c.attempts >= max_attempts:
            self.finish(c.id, J.FAILED, worker, frm=(J.PROCESSING,), last_error=error[:4000])
            return None
        delay = retry_delay * 2 ** (c.attempts - 1)
        self.move(
            c.id,
            J.QUEUED,
            worker,
            frm=(J.PROCESSING,),
            last_error=error[:4000],
            claimed_by=None,
            lease_until=None,
            next_attempt_at=now + delay,
        )
        return delay

    def failed_ids(self) -> list[int]:
        """The ids of the failed jobs."""
        with self.engine.connect() as conn:
            return [i for (i,) in conn.execute(select(Job.id).where(Job.state == str(J.FAILED)))]

    def retry_failed(self, actor: Who | None = None) -> list[int]:
        """Every failed job queued again (each audited, with ``actor``); their ids."""
        return [i for i in self.failed_ids() if self.retry(i, expect=J.FAILED, actor=actor)]
