"""Every state change of a series, job and export row, in one place: :class:`Jobs`.

Each update takes only the moves :mod:`dicom_node.jobs.states` lists. Claims are atomic and
carry a lease: PostgreSQL uses ``FOR UPDATE SKIP LOCKED``; SQLite an ``UPDATE … WHERE`` that
only succeeds while the row is still claimable. The export rows' updates are in
:mod:`dicom_node.jobs.export_rows`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, or_, select, update

from dicom_node.jobs.export_rows import ExportRows
from dicom_node.jobs.schema import Export, Instance, Job, Series, Study
from dicom_node.jobs.states import (
    ACTIVE,
    Claimed,
    ClaimLost,
    ExportState,
    J,
    JobState,
    SeriesState,
    _recordable,
    sources,
)

if TYPE_CHECKING:
    from dicom_node.jobs.db import Database


class Jobs(ExportRows):
    """The job and export rows of one database: every transition, as one conditional
    update (so several processes on one database never take the same step twice)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.engine = db.engine

    # ---------------------------------------------------------------- one job row
    def _move(
        self, conn: Any, job_id: int, to: JobState, worker: str | None, **values: Any
    ) -> bool:
        q = update(Job).where(Job.id == job_id, Job.state.in_(sources(to)))
        if worker is not None:
            q = q.where(Job.claimed_by == worker)
        values.setdefault("updated_at", time.time())
        return conn.execute(q.values(state=str(to), **_recordable(values))).rowcount == 1

    def move(self, job_id: int, to: JobState, worker: str | None = None, **values: Any) -> bool:
        """Move a job to ``to`` (only from a state that may go there; with ``worker``, only
        while that worker holds it). False when the row was not in such a state."""
        with self.engine.begin() as conn:
            return self._move(conn, job_id, to, worker, **values)

    def finish(self, job_id: int, to: JobState, worker: str, **values: Any) -> bool:
        """Move to a final state and release the claim."""
        return self.move(
            job_id, to, worker, claimed_by=None, lease_until=None, finished_at=time.time(), **values
        )

    def release(self, job_id: int, worker: str, **values: Any) -> bool:
        """Give the claim back, state unchanged (node stopping, or waiting for a retry)."""
        values.setdefault("updated_at", time.time())
        with self.engine.begin() as conn:
            q = update(Job).where(Job.id == job_id, Job.claimed_by == worker)
            values = _recordable(values)
            return conn.execute(q.values(claimed_by=None, lease_until=None, **values)).rowcount == 1

    # ---------------------------------------------------------------- received
    def complete_stable_series(self, stable_age: float, now: float | None = None) -> list[int]:
        """Mark quiet (or full) receiving series complete and make a job for each; job ids."""
        now = time.time() if now is None else now
        made: list[int] = []
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Series.id, Series.last_received, Series.instance_count).where(
                    Series.state == SeriesState.RECEIVING,
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
            with self.engine.begin() as conn:
                res = conn.execute(
                    update(Series)
                    .where(
                        Series.id == series_id,
                        Series.state == SeriesState.RECEIVING,
                        Series.last_received == last_received,
                    )
                    .values(state=str(SeriesState.COMPLETE), completed_at=now)
                )
                if res.rowcount != 1:
                    continue  # an instance arrived meanwhile, or another process did it
                job_id = conn.execute(
                    Job.__table__.insert()
                    .values(
                        series_id=series_id,
                        state=str(J.RECEIVED),
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

    def received(self) -> list[Any]:
        """The jobs waiting for a routing decision, with their series' facts."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(
                    Job.id,
                    Series.series_uid,
                    Series.modality,
                    Series.body_part,
                    Series.series_description,
                    Series.calling_ae,
                    Series.derived_by_srnode,
                    Series.instance_count,
                    Series.routing,
                    Study.study_uid,
                    Study.study_description,
                )
                .join(Series, Series.id == Job.series_id)
                .join(Study, Study.id == Series.study_id)
                .where(Job.state == J.RECEIVED)
                .order_by(Job.id)
            ).all()

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
            reason=reason,
            route=route,
            model=model,
            destinations=json.dumps(list(destinations)),
            updated_at=now,
            finished_at=None if to == J.QUEUED else now,
        )

    # ---------------------------------------------------------------- claims
    def claim(self, worker: str, lease: float, now: float | None = None) -> Claimed | None:
        """Take one job that is ready for work, atomically; None when there is none.

        Ready: unclaimed (or with an expired lease), in an active state, and due
        (``next_attempt_at`` passed). Claiming a queued job starts an attempt; claiming a
        job left in processing (a crash, a stop) starts another one."""
        now = time.time() if now is None else now
        claimable = (
            Job.state.in_([str(s) for s in ACTIVE]),
            or_(Job.claimed_by.is_(None), Job.lease_until < now),
            or_(Job.next_attempt_at.is_(None), Job.next_attempt_at <= now),
        )
        columns = select(Job.id, Job.state, Job.series_id, Job.attempts).where(*claimable)
        if self.db.is_sqlite:
            for _ in range(20):
                with self.engine.begin() as conn:
                    row = conn.execute(
                        columns.order_by(Job.next_attempt_at.is_not(None), Job.id).limit(1)
                    ).first()
                    if row is None:
                        return None
                    claimed = self._take(conn, row, worker, lease, now, claimable)
                    if claimed:
                        return claimed
            return None
        with self.engine.begin() as conn:
            row = conn.execute(
                columns.order_by(Job.id).limit(1).with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            return self._take(conn, row, worker, lease, now, claimable)

    @staticmethod
    def _take(
        conn: Any, row: Any, worker: str, lease: float, now: float, claimable: Any
    ) -> Claimed | None:
        job_id, state, series_id, attempts = row
        values: dict[str, Any] = {"claimed_by": worker, "lease_until": now + lease}
        values["updated_at"] = now
        if state == J.QUEUED:
            state = J.PROCESSING
            attempts += 1
            values.update(state=str(J.PROCESSING), attempts=attempts, started_at=now)
        elif state == J.PROCESSING:  # resumed after a crash or a stop: another attempt
            attempts += 1
            values.update(attempts=attempts)
        res = conn.execute(update(Job).where(Job.id == job_id, *claimable).values(**values))
        if res.rowcount != 1:
            return None
        return Claimed(job_id, str(state), series_id, attempts)

    def renew_lease(self, job_id: int, worker: str, lease: float) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(
                update(Job)
                .where(Job.id == job_id, Job.claimed_by == worker)
                .values(lease_until=time.time() + lease)
            )
            return res.rowcount == 1

    def release_claims(self, worker_prefix: str) -> int:
        """Release the jobs claimed by earlier processes of this node (after a crash)."""
        with self.engine.begin() as conn:
            res = conn.execute(
                update(Job)
                .where(
                    Job.claimed_by.like(worker_prefix + "%"),
                    Job.state.in_([str(s) for s in ACTIVE]),
                )
                .values(claimed_by=None, lease_until=None, updated_at=time.time())
            )
            return res.rowcount

    def retry(self, job_id: int) -> bool:
        """Put a job back in the queue (``srnode jobs retry``): fresh attempts, all exports.
        The admin move: allowed from every state."""
        with self.engine.begin() as conn:
            res = conn.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    state=str(J.QUEUED),
                    attempts=0,
                    last_error=None,
                    claimed_by=None,
                    lease_until=None,
                    next_attempt_at=None,
                    finished_at=None,
                    updated_at=time.time(),
                )
            )
            if res.rowcount:
                conn.execute(delete(Export).where(Export.job_id == job_id))
            return bool(res.rowcount)

    def cancel(self, job_id: int, reason: str) -> bool:
        """Stop a job that waits or runs (an admin move, like :meth:`retry`): it becomes
        ``skipped`` with ``reason`` and its open exports ``failed``; a worker holding it
        loses its claim. False when the job was not in such a state."""
        now = time.time()
        with self.engine.begin() as conn:
            res = conn.execute(
                update(Job)
                .where(Job.id == job_id, Job.state.in_([str(J.RECEIVED), *map(str, ACTIVE)]))
                .values(
                    state=str(J.SKIPPED),
                    reason=reason,
                    claimed_by=None,
                    lease_until=None,
                    next_attempt_at=None,
                    finished_at=now,
                    updated_at=now,
                )
            )
            if res.rowcount != 1:
                return False
            conn.execute(
                update(Export)
                .where(Export.job_id == job_id, Export.state == str(ExportState.PENDING))
                .values(state=str(ExportState.FAILED), last_error=reason, updated_at=now)
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
                model=model,
                derived_count=len(written),
                derived_series_uid=derived_series,
                next_attempt_at=None,
                last_error=("; ".join(notes)[:2000] or None),
                updated_at=now,
            )
            if not held:  # our lease ran out and another worker has the job now
                raise ClaimLost  # rolls the transaction back
            conn.execute(delete(Export).where(Export.job_id == job_id))
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
            self.finish(c.id, J.FAILED, worker, last_error=error[:4000])
            return None
        delay = retry_delay * 2 ** (c.attempts - 1)
        self.move(
            c.id,
            J.QUEUED,
            worker,
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

    def retry_failed(self) -> list[int]:
        """Every failed job queued again; their ids."""
        return [i for i in self.failed_ids() if self.retry(i)]

    # ---------------------------------------------------------------- retention
    def source_files(self, job_id: int) -> list[Any]:
        """The job's source instances received before it started (id, path)."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(Instance.id, Instance.path)
                .join(Job, Job.series_id == Instance.series_id)
                .where(
                    Job.id == job_id,
                    Instance.removed.is_(False),
                    Instance.received_at <= Job.started_at,
                )
            ).all()

    def mark_removed(self, instance_ids: Sequence[int]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(Instance).where(Instance.id.in_(list(instance_ids))).values(removed=True)
            )
