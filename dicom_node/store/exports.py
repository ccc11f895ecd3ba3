"""The export rows of a job (one per destination): what is still to send, each attempt's
outcome, and the destinations whose exports wait for a later attempt."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, select, update

from dicom_node.store import audit
from dicom_node.store.schema import Export, Job
from dicom_node.store.states import ExportState, J, _recordable, check_export

if TYPE_CHECKING:
    from sqlalchemy import Engine


class ExportRows:
    """The export side of :class:`~dicom_node.store.jobs.Jobs` (mixed into it)."""

    engine: Engine

    def pending_exports(self, job_id: int) -> list[Any]:
        with self.engine.connect() as conn:
            return conn.execute(
                select(
                    Export.id,
                    Export.destination,
                    Export.attempts,
                    Export.pending,
                    Export.next_attempt_at,
                    Export.sent_count,
                    Export.first_failed_at,
                ).where(Export.job_id == job_id, Export.state == ExportState.PENDING)
            ).all()

    def record_export(self, export_id: int, **values: Any) -> None:
        """One export attempt's outcome (a pending row; ``state`` when it ends)."""
        to = ExportState(values.pop("state", ExportState.PENDING))
        check_export(ExportState.PENDING, to)
        with self.engine.begin() as conn:
            conn.execute(
                update(Export)
                .where(Export.id == export_id, Export.state == ExportState.PENDING)
                .values(state=str(to), **_recordable(values))
            )

    def waiting_destinations(self, now: float | None = None) -> list[str]:
        """Destinations with exports waiting for a later attempt (after a failure)."""
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Export.destination)
                .where(Export.state == ExportState.PENDING, Export.next_attempt_at > now)
                .distinct()
            )
            return [d for (d,) in rows]

    def retry_destination_now(self, destination: str, now: float | None = None) -> int:
        """The destination answers again: its waiting exports (and their jobs) are due now.
        Returns how many exports were brought forward."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            waiting = select(Export.job_id).where(
                Export.destination == destination,
                Export.state == ExportState.PENDING,
                Export.next_attempt_at > now,
            )
            job_ids = [j for (j,) in conn.execute(waiting)]
            if not job_ids:
                return 0
            n = conn.execute(
                update(Export)
                .where(
                    Export.destination == destination,
                    Export.state == ExportState.PENDING,
                    Export.next_attempt_at > now,
                )
                .values(next_attempt_at=now)
            ).rowcount
            conn.execute(
                update(Job)
                .where(Job.id.in_(job_ids), Job.state == str(J.EXPORTING))
                .values(next_attempt_at=now)
            )
            return n

    def retry_export(self, job_id: int, destination: str, actor: Any = None) -> bool:
        """The admin's move for one destination of a failed job: its failed export row is
        pending again (fresh attempts, what it did not get) and the job ``exporting``, due
        now; the other destinations' rows stay as they are. Outside the path of a job, like
        :meth:`Jobs.retry`, and written here. False when the job is not failed or that
        destination's export did not fail."""
        now = time.time()
        with self.engine.begin() as conn:
            row = conn.execute(
                select(Export.id, Export.state).where(
                    Export.job_id == job_id, Export.destination == destination
                )
            ).first()
            if row is None or row.state != ExportState.FAILED:
                return False
            values = dict(
                claimed_by=None,
                lease_until=None,
                next_attempt_at=now,
                finished_at=None,
                updated_at=now,
            )
            was = self._admin_move(conn, job_id, (J.FAILED,), J.FAILED, J.EXPORTING, values)
            if was is None:
                return False
            conn.execute(
                update(Export)
                .where(Export.id == row.id, Export.state == str(ExportState.FAILED))
                .values(
                    state=str(ExportState.PENDING),
                    attempts=0,
                    next_attempt_at=None,
                    first_failed_at=None,
                    last_error=None,
                    updated_at=now,
                )
            )
            if actor is not None:
                audit.record(
                    conn,
                    actor,
                    "job.retried",
                    str(job_id),
                    {"state": was, "destination": destination, "export": ExportState.FAILED},
                    {"state": J.EXPORTING, "destination": destination},
                )
            return True

    def export_tally(self, job_ids: list[int]) -> dict[int, tuple[int, int]]:
        """job id -> (destinations that have every instance, destinations)."""
        if not job_ids:
            return {}
        done = func.sum(case((Export.state == str(ExportState.DONE), 1), else_=0))
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Export.job_id, done, func.count())
                .where(Export.job_id.in_(job_ids))
                .group_by(Export.job_id)
            )
            return {j: (int(d or 0), int(n)) for j, d, n in rows}

    def exports(self, job_id: int) -> list[Any]:
        with self.engine.connect() as conn:
            return conn.execute(
                select(
                    Export.destination, Export.state, Export.next_attempt_at, Export.last_error
                ).where(Export.job_id == job_id)
            ).all()
