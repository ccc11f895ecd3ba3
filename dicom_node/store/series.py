"""The series' move from ``receiving`` to ``complete``, which makes its job (``received``),
and the jobs waiting there for a routing decision. (An instance that arrives makes a series
``receiving`` again: :mod:`dicom_node.store.intake`.)"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select, update

from dicom_node.store.schema import Job, Series, Study
from dicom_node.store.states import J, SeriesState, check_series

if TYPE_CHECKING:
    from sqlalchemy import Engine

#: what a reader of a series' header selects (joined with its study): the stored header
#: and, for series received before there was one, the columns it is read from
#: (:meth:`dicom_node.receive.series_header.SeriesHeader.from_stored`)
HEADER_COLUMNS = (
    Series.routing,
    Series.modality,
    Series.body_part,
    Series.series_description,
    Series.calling_ae,
    Series.derived_by_srnode,
    Series.expected_count,
    Study.study_description,
)

_RECEIVING = str(SeriesState.RECEIVING)


class SeriesRows:
    """The series side of :class:`~dicom_node.store.jobs.Jobs` (mixed into it)."""

    engine: Engine

    def complete_stable_series(self, stable_age: float, now: float | None = None) -> list[int]:
        """Mark quiet (or full) receiving series complete and make a job for each; job ids."""
        check_series(SeriesState.RECEIVING, SeriesState.COMPLETE)
        now = time.time() if now is None else now
        made: list[int] = []
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Series.id, Series.last_received, Series.instance_count).where(
                    Series.state == _RECEIVING,
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
                        Series.state == _RECEIVING,
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
        """The jobs waiting for a routing decision, with their series' header."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(
                    Job.id,
                    Series.series_uid,
                    Series.instance_count,
                    Study.study_uid,
                    *HEADER_COLUMNS,
                )
                .join(Series, Series.id == Job.series_id)
                .join(Study, Study.id == Series.study_id)
                .where(Job.state == J.RECEIVED)
                .order_by(Job.id)
            ).all()
