"""Workers: take a job from the database, enhance its series, export the result.

A job goes ``queued -> processing -> exporting -> done``; ``failed`` keeps the attempts and
the last error; ``skipped`` says why routing did not enhance it. Claims are atomic
(:meth:`dicom_node.store.claims.ClaimRows.claim`) and carry a lease the worker renews, so a job
of a dead worker becomes claimable again, and a restarted node releases its own claims at
once. Derived UIDs are deterministic, so a re-run writes and sends the same instances.

Export is per destination (``exports`` rows): what is still to send, attempts, last error,
the time of the first failure and of the next attempt (capped exponential backoff with
jitter, :func:`dicom_node.export.send.next_retry_delay`). Retries go on for the
destination's ``retry_for_hours`` after the first failure (and, if set, up to its
``max_attempts``); all of it is in the rows, so a restart keeps the schedule. Errors are
recorded through :mod:`dicom_node.error_text` (no element values).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from dicom_node.derive import preview
from dicom_node.error_text import describe, register_safe
from dicom_node.jobs import export_outcome, retention
from dicom_node.jobs.engines import EngineCache
from dicom_node.metrics import ENGINE_SECONDS, count_export, count_failed
from dicom_node.spool import Spool, atomic_write
from dicom_node.store.database import Database
from dicom_node.store.jobs import Jobs
from dicom_node.store.states import Claimed, ClaimLost, ExportState, JobState
from sr_engine.errors import UnsupportedInput

log = logging.getLogger(__name__)
register_safe(UnsupportedInput)


class InstanceFailed(Exception):
    """Enhancing one instance failed unexpectedly (the cause is ``__cause__``)."""

    def __init__(self, sop_uid: str, cause: BaseException) -> None:
        super().__init__(describe(cause, sop_uid=sop_uid))


@dataclass
class _Run:
    """What enhancing one series produced."""

    written: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    derived_series: str | None = None
    engine_seconds: float = 0.0


class Stopping(Exception):
    """The node is stopping: leave the job resumable."""


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
        self.derived_root = Path(settings.node.data_dir) / "derived"
        self._thread: threading.Thread | None = None
        self._last_renew = 0.0

    # ------------------------------------------------------------------ loop
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
            if c.state == JobState.PROCESSING:
                self._process(c)
            else:
                self._export(c.id)
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

    # ------------------------------------------------------------------ processing
    def _process(self, c: Claimed) -> None:
        """Enhance the job's series and hand it over to export (or skip / retry it)."""
        ctx = self.jobs.context(c.id)
        study, series = ctx["study_uid"], ctx["series_uid"]
        if c.attempts > self.settings.scheduler.job_max_attempts + 2:
            # it keeps dying mid-way (a crash in the engine?)
            self.jobs.finish(
                c.id,
                JobState.FAILED,
                self.name,
                last_error=f"interrupted {c.attempts} times; given up",
            )
            log.error("job %d failed: interrupted %d times", c.id, c.attempts)
            return
        t0 = time.monotonic()
        try:
            model = self.engines.model_for(ctx["model"], ctx["modality"])
            run = self._enhance_series(c, ctx, model)
        except Stopping:
            raise
        except InstanceFailed as e:
            self._processing_failed(c, str(e))
            return
        except Exception as e:
            self._processing_failed(c, describe(e))
            return
        if not run.written:
            reason = "no instance could be enhanced" + (
                f" ({run.unsupported[0]})" if run.unsupported else ""
            )
            self.jobs.finish(c.id, JobState.SKIPPED, self.name, reason=reason, model=model)
            log.info("job %d skipped study=%s series=%s: %s", c.id, study, series, reason)
            return
        try:
            self.jobs.to_exporting(
                c.id,
                self.name,
                model=model,
                written=run.written,
                derived_series=run.derived_series,
                notes=run.unsupported,
                destinations=json.loads(ctx["destinations"] or "[]"),
                now=time.time(),
            )
        except ClaimLost:
            log.warning("job %d: claim lost while processing; left to its new holder", c.id)
            return
        log.info(
            "job %d derived study=%s series=%s -> series=%s instances=%d in %.1f s (engine %.1f s)",
            c.id,
            study,
            series,
            run.derived_series,
            len(run.written),
            time.monotonic() - t0,
            run.engine_seconds,
        )
        self._export(c.id)

    def _enhance_series(self, c: Claimed, ctx: dict[str, Any], model: str) -> _Run:
        """Every instance of the series through the engine, each result written (fsynced)
        under the derived folder; images the engine refuses are noted, not fatal.

        Decoding, inference (groups of slices per backend call) and derive/encoding run
        as a pipeline (:mod:`dicom_node.derive.pipeline`); the results are written here,
        in the series' order, and the first unexpected failure stops the series."""
        from dicom_node.derive.pipeline import enhance_stream

        engine = self.engines.get(model)
        instances = self.db.series_instances(c.series_id)
        out_dir = self.derived_root / ctx["series_uid"]
        run = _Run()
        log.info(
            "job %d processing study=%s series=%s instances=%d model=%s attempt=%d",
            c.id,
            ctx["study_uid"],
            ctx["series_uid"],
            len(instances),
            Path(model).stem,
            c.attempts,
        )
        stream = enhance_stream(
            instances,
            lambda row: pydicom.dcmread(row[1]),
            lambda _ds: engine,
            self.settings.derive,
            on_wait=lambda: self._renew(c.id),
        )
        with closing(stream):
            for o in stream:
                self._renew(c.id)
                sop_uid = o.source[0]
                if isinstance(o.error, UnsupportedInput):
                    run.unsupported.append(describe(o.error, sop_uid=sop_uid))
                    continue
                if o.error is not None:  # recorded as type, tag and SOPInstanceUID only
                    raise InstanceFailed(sop_uid, o.error) from o.error
                assert o.out is not None and o.data is not None
                run.engine_seconds += o.result.seconds
                ENGINE_SECONDS.observe(o.result.seconds)
                run.derived_series = str(o.out.SeriesInstanceUID)
                target = out_dir / f"{o.out.SOPInstanceUID}.dcm"
                atomic_write(target, o.data, fsync=self.settings.spool.fsync)
                run.written.append(str(target))
        preview.capture(self.settings.node.data_dir, c.id, instances, run.written)
        return run

    def _processing_failed(self, c: Claimed, error: str) -> None:
        s = self.settings.scheduler
        delay = self.jobs.processing_failed(
            c, self.name, error, s.job_max_attempts, s.job_retry_delay
        )
        if delay is None:
            count_failed("processing")
            log.error("job %d failed after %d attempts: %s", c.id, c.attempts, error)
        else:
            log.warning(
                "job %d attempt %d failed, again in %.0f s: %s", c.id, c.attempts, delay, error
            )

    # ------------------------------------------------------------------ export
    def _export(self, job_id: int) -> None:
        """One attempt for each export of the job that is due; then settle the job."""
        from dicom_node.export.send import send

        dests = {d.name: d for d in self.settings.destinations}
        ctx = self.jobs.context(job_id)
        for r in self.jobs.pending_exports(job_id):
            if r.next_attempt_at is not None and r.next_attempt_at > time.time():
                continue
            self._renew(job_id)
            pending = json.loads(r.pending or "[]")
            dest = dests.get(r.destination)
            if dest is None:
                out = export_outcome.not_configured(r.destination, time.time())
            elif not pending:
                out = export_outcome.nothing_left(time.time())
            else:
                result = send(dest, pending, self.settings.node.ae_title)
                out = export_outcome.after_attempt(r, dest, pending, result, time.time())
            if out.level:
                log.log(out.level, "job %d export to %s: %s", job_id, r.destination, out.message)
            if out.state == ExportState.DONE:
                log.info(
                    "job %d exported study=%s series=%s to %s: %d instances",
                    job_id,
                    ctx["study_uid"],
                    ctx["series_uid"],
                    r.destination,
                    out.values.get("sent_count", r.sent_count),
                )
            count_export(r.destination, out.state)
            self.jobs.record_export(r.id, **out.values)
        self._settle(job_id, ctx)

    def _settle(self, job_id: int, ctx: dict[str, Any]) -> None:
        """After export attempts: done, failed, or back to waiting for the next retry."""
        exps = self.jobs.exports(job_id)
        now = time.time()
        pending = [e for e in exps if e.state == ExportState.PENDING]
        failed = [e for e in exps if e.state == ExportState.FAILED]
        if pending:
            nxt = min((e.next_attempt_at or now) for e in pending)
            self.jobs.release(
                job_id, self.name, next_attempt_at=nxt, last_error=_summary(pending + failed)
            )
            return
        if failed:
            said = export_outcome.summary(exps)  # "exported 1/2; pacs2: ..."
            self.jobs.finish(job_id, JobState.FAILED, self.name, last_error=said)
            count_failed("export")
            log.error("job %d failed: %s", job_id, said)
            return
        self.jobs.finish(job_id, JobState.DONE, self.name, next_attempt_at=None, last_error=None)
        log.info("job %d done study=%s series=%s", job_id, ctx["study_uid"], ctx["series_uid"])
        if not self.settings.spool.keep_after_export:
            self._drop_files(job_id, ctx)
        retention.drop_derived(self.settings, ctx["series_uid"])  # unless derived.keep

    def _drop_files(self, job_id: int, ctx: dict[str, Any]) -> None:
        """Spool retention after a successful export: the job's source files go."""
        rows = self.jobs.source_files(job_id)
        for r in rows:
            try:
                Path(r.path).unlink(missing_ok=True)
            except OSError:
                continue
        if rows:
            self.jobs.mark_removed([r.id for r in rows])
            spool_root = Path(self.settings.node.data_dir) / "spool"
            for folder in {Path(r.path).parent for r in rows}:  # empty series/study folders
                retention.remove_empty_parents(folder, spool_root)


def _summary(exps: list[Any]) -> str:
    return "; ".join(f"{e.destination}: {e.last_error or e.state}" for e in exps)[:4000]
