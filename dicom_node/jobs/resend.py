"""Series sent again after they were done: said in the log and the audit trail (kind
``series.resent``), then, as ``scheduler.resent_series`` says, processed and exported again
(``process``, the default: a new job, with the same derived UIDs, so the PACS gets no
duplicates) or left as they are (``ignore``)."""

from __future__ import annotations

import logging
import time
from typing import Any

from dicom_node.store import audit
from dicom_node.store.resends import find_resent, mark_seen

log = logging.getLogger(__name__)


#: seconds between checks of a running node
INTERVAL = 10.0


def check(db: Any, settings: Any, now: float | None = None, since: float = 0.0) -> int:
    """Notice the series re-sent (with an instance received after ``since``); how many."""
    now = time.time() if now is None else now
    mode = settings.scheduler.resent_series
    seen = 0
    for r in find_resent(db.engine, settings.scheduler.stable_age, now, since):
        if not mark_seen(db.engine, r, now, reopen=mode == "process"):
            continue
        seen += 1
        what = "processed and exported again" if mode == "process" else "ignored"
        log.info(
            "series re-sent after its job ended study=%s series=%s instances=%d: %s "
            "(scheduler.resent_series = %s)",
            r.study_uid,
            r.series_uid,
            r.instances,
            what,
            mode,
        )
        with db.engine.begin() as conn:
            audit.record(
                conn,
                None,
                "series.resent",
                r.series_uid,
                detail=f"{r.instances} instances received again: {what}",
            )
    return seen
