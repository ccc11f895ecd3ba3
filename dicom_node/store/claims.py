"""A worker's hold on a job: the atomic claim with its lease, its renewal and its release.

PostgreSQL claims with ``FOR UPDATE SKIP LOCKED``; SQLite with an ``UPDATE … WHERE`` that only
succeeds while the row is still claimable, so two processes never take the same job."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select, update

from dicom_node.store.schema import Job
from dicom_node.store.states import ACTIVE, Claimed, J, _recordable, check_job

if TYPE_CHECKING:
    from sqlalchemy import Engine


class ClaimRows:
    """The claims side of :class:`~dicom_node.store.jobs.Jobs` (mixed into it)."""

    engine: Engine
    db: Any

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
            check_job(J.QUEUED, J.PROCESSING)
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

    def release(self, job_id: int, worker: str, **values: Any) -> bool:
        """Give the claim back, state unchanged (node stopping, or waiting for a retry)."""
        values.setdefault("updated_at", time.time())
        with self.engine.begin() as conn:
            q = update(Job).where(Job.id == job_id, Job.claimed_by == worker)
            values = _recordable(values)
            return conn.execute(q.values(claimed_by=None, lease_until=None, **values)).rowcount == 1
