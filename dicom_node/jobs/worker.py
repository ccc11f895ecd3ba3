"""Workers: claim a job from the database and run its step.

A job goes ``queued -> processing -> exporting -> done``; ``failed`` keeps the attempts and
the last error; ``skipped`` says why routing did not enhance it. A worker claims a job
(atomically, :meth:`dicom_node.store.claims.ClaimRows.claim`) with a lease it renews while
it works, so a job of a dead worker becomes claimable again and a restarted node releases
its own claims at once; it then runs the job's step: :mod:`~dicom_node.jobs.process_step`
(enhance, write the derived series, hand over to export) and
:mod:`~dicom_node.jobs.export_step` (send, settle). Files are deleted only by
:mod:`~dicom_node.jobs.retention`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from dicom_node.data_dir import DataDir
from dicom_node.error_text import describe
from dicom_node.jobs import export_step, process_step
from dicom_node.jobs.engines import EngineCache
from dicom_node.jobs.step_context import StepContext, Stopping
from dicom_node.spool import Spool
from dicom_node.store.database import Database
from dicom_node.store.jobs import Jobs
from dicom_node.store.states import JobState

log = logging.getLogger(__name__)


class Worker:
    def __init__(
        self,
        db: Database,
        settings: Any,
        name: str,
        *,
        engines: EngineCache | None = None,
        spool: Spool | None = None,
        wake: threading.Event | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.db = db
        self.jobs = Jobs(db)
        self.settings = settings
        self.name = name
        self.engines = engines or EngineCache.from_settings(settings)
        self.spool = spool
        self.wake = wake or threading.Event()
        self.stop_event = stop or threading.Event()
        self.steps = StepContext(
            self.jobs, settings, name, self.engines, DataDir.of(settings), self._renew
        )
        self._thread: threading.Thread | None = None
        self._last_renew = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name=self.name, daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run_forever(self) -> None:
        poll = self.settings.scheduler.tick
        while not self.stop_event.is_set():
            try:
                did = self.run_once()
            except Exception as e:
                log.error("worker %s: unexpected error: %s", self.name, describe(e))
                log.debug("worker %s: traceback", self.name, exc_info=True)
                did = False
            if not did:
                self.wake.wait(poll)
                self.wake.clear()

    def run_once(self) -> bool:
        """Claim and work one job; False when none was ready."""
        lease = self.settings.scheduler.job_lease
        c = self.jobs.claim(self.name, lease)
        if c is None:
            return False
        self._last_renew = time.monotonic()
        try:
            if c.state != JobState.PROCESSING or process_step.process(self.steps, c):
                export_step.export(self.steps, c.id)
        except Stopping:
            self.jobs.release(c.id, self.name)
            log.info("job %d left resumable (node stopping)", c.id)
        return True

    def _renew(self, job_id: int) -> None:
        if self.stop_event.is_set():
            raise Stopping
        lease = self.settings.scheduler.job_lease
        if time.monotonic() - self._last_renew > lease / 4:
            if not self.jobs.renew_lease(job_id, self.name, lease):
                raise Stopping  # someone else holds it now (our lease ran out)
            self._last_renew = time.monotonic()
