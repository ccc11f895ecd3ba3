"""The periodic side of the node, on APScheduler: stability ticks, spool retention, and
probes of destinations whose exports wait for a retry (due at once when they answer).

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

from dicom_node.jobs import resend, stability
from dicom_node.spool import Spool
from dicom_node.store.database import Database

log = logging.getLogger(__name__)

RETENTION_INTERVAL = 600.0
PROBE_TICK = 1.0  # how often to look for destinations due for a probe


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
        self._probed: dict[str, float] = {}
        self._probe_thread: threading.Thread | None = None
        self._resends_since = 0.0  # the first check after a start looks at every series

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

    def resends(self) -> None:
        """Series sent again after they were done (dicom_node.jobs.resend)."""
        now = time.time()
        try:
            resend.check(self.db, self.settings, now, since=self._resends_since)
        except Exception:
            log.exception("re-sent series check failed")
            return
        # the next check looks at series touched since a little before this one
        self._resends_since = now - self.settings.scheduler.stable_age - 2 * resend.INTERVAL

    def retention(self) -> None:
        """Delete what the retention settings allow (dicom_node.jobs.retention)."""
        from dicom_node.jobs import retention

        try:
            n, freed = retention.collect(self.db, self.settings)
            if n:
                log.info("retention: removed %d files, %.1f MB freed", n, freed / 1e6)
        except Exception:
            log.exception("retention failed")

    def probe_destinations(self, now: float | None = None) -> int:
        """C-ECHO (or HTTP) each destination whose exports wait for a retry, every
        ``probe_every`` s; one that answers gets its exports retried now. Returns how many
        exports were brought forward."""
        from dicom_node.export.probe import answers
        from dicom_node.store.jobs import Jobs

        now = time.time() if now is None else now
        dests = {d.name: d for d in self.settings.destinations}
        jobs = Jobs(self.db)
        brought = 0
        try:
            waiting = jobs.waiting_destinations(now)
        except Exception as e:
            log.warning("destination probe: cannot read exports (%s)", type(e).__name__)
            return 0
        for name in waiting:
            dest = dests.get(name)
            if dest is None or now - self._probed.get(name, 0.0) < dest.probe_every:
                continue
            self._probed[name] = now
            if not answers(dest, self.settings.node.ae_title):
                continue
            try:
                n = jobs.retry_destination_now(name)
            except Exception as e:
                log.warning("destination probe: cannot update exports (%s)", type(e).__name__)
                continue
            if n:
                brought += n
                log.info("destination %s answers again: %d export(s) retried now", name, n)
        if brought and self.on_queued is not None:
            self.on_queued([])
        return brought

    def _probe_in_background(self) -> None:
        """Probes wait on the network (up to seconds per destination): they run in their
        own thread, one round at a time, so the scheduler's tick never waits for them."""
        if self._probe_thread is not None and self._probe_thread.is_alive():
            return
        self._probe_thread = threading.Thread(
            target=self.probe_destinations, name="srnode-probe", daemon=True
        )
        self._probe_thread.start()

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
            self.resends,
            "interval",
            seconds=resend.INTERVAL,
            id="resends",
            max_instances=1,
            coalesce=True,
        )
        self._sched.add_job(
            self.retention,
            "interval",
            seconds=RETENTION_INTERVAL,
            id="retention",
            max_instances=1,
            coalesce=True,
        )
        if self.settings.destinations:
            self._sched.add_job(
                self._probe_in_background,
                "interval",
                seconds=PROBE_TICK,
                id="probe",
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
