"""The periodic side of the node, on APScheduler: stability ticks and spool retention.

Nothing lives only in the scheduler: every decision is read from and written to the
database, so a restart loses nothing (the first tick after it catches up).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from dicom_node.jobs import stability
from dicom_node.jobs.db import Database
from dicom_node.spool import Spool

log = logging.getLogger(__name__)

RETENTION_INTERVAL = 600.0


class NodeScheduler:
    def __init__(
        self,
        db: Database,
        settings: Any,
        spool: Spool | None = None,
        on_queued: Callable[[list[int]], None] | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.spool = spool
        self.on_queued = on_queued
        self._sched = BackgroundScheduler(daemon=True, timezone="UTC")
        self._lock = threading.Lock()

    def tick(self) -> list[int]:
        """Complete stable series and route their jobs (also callable directly)."""
        with self._lock:
            try:
                queued = stability.tick(self.db, self.settings)
            except Exception:
                log.exception("stability tick failed")
                return []
        if queued and self.on_queued is not None:
            self.on_queued(queued)
        return queued

    def retention(self) -> None:
        """Delete what the retention settings allow (dicom_node.jobs.retention)."""
        from dicom_node.jobs import retention

        try:
            n, freed = retention.collect(self.db, self.settings)
            if n:
                log.info("retention: removed %d files, %.1f MB freed", n, freed / 1e6)
        except Exception:
            log.exception("retention failed")

    def start(self) -> None:
        s = self.settings.scheduler
        self._sched.add_job(
            self.tick,
            "interval",
            seconds=s.tick,
            id="stability",
            max_instances=1,
            coalesce=True,
            next_run_time=_now_dt(),
        )
        self._sched.add_job(
            self.retention,
            "interval",
            seconds=RETENTION_INTERVAL,
            id="retention",
            max_instances=1,
            coalesce=True,
        )
        self._sched.start()
        log.info("scheduler started: stable_age %.1f s, tick %.1f s", s.stable_age, s.tick)

    def stop(self) -> None:
        if self._sched.running:
            self._sched.shutdown(wait=True)


def _now_dt():
    from datetime import UTC, datetime

    return datetime.fromtimestamp(time.time(), UTC)
