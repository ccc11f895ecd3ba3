"""What retention and a finished job remove from the spool: the source instances of ended
jobs, and their rows marked removed (the row stays: the instance was received)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from dicom_node.store.schema import Instance, Job, Series
from dicom_node.store.states import JobState

if TYPE_CHECKING:
    from sqlalchemy import Engine


class SpoolRows:
    """The spool side of :class:`~dicom_node.store.jobs.Jobs` (mixed into it)."""

    engine: Engine

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

    def ended_jobs(self, state: JobState, before: float) -> list[tuple[int, str, float]]:
        """(job id, source series UID, time it ended) of ``state`` jobs that ended before."""
        ended = func.coalesce(Job.finished_at, Job.updated_at)
        with self.engine.connect() as conn:
            return [
                (r[0], r[1], r[2])
                for r in conn.execute(
                    select(Job.id, Series.series_uid, ended)
                    .join(Series, Series.id == Job.series_id)
                    .where(Job.state == str(state), ended <= before)
                ).all()
            ]

    def source_rows(self, job_ids: list[int]) -> list[tuple[int, str]]:
        """(instance id, path) of the jobs' source files still on disk."""
        if not job_ids:
            return []
        out: list[tuple[int, str]] = []
        with self.engine.connect() as conn:
            for i in range(0, len(job_ids), 500):
                chunk = job_ids[i : i + 500]
                out += [
                    (r[0], r[1])
                    for r in conn.execute(
                        select(Instance.id, Instance.path)
                        .join(Job, Job.series_id == Instance.series_id)
                        .where(
                            Job.id.in_(chunk),
                            Instance.removed.is_(False),
                            Instance.received_at <= func.coalesce(Job.finished_at, Job.updated_at),
                        )
                    ).all()
                ]
        return out
