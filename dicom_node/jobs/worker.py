"""Workers: take a job from the database, enhance its series, export the result.

A job goes ``queued -> processing -> exporting -> done``; ``failed`` keeps the attempts and
the last error; ``skipped`` says why routing did not enhance it. Claims are atomic
(:meth:`dicom_node.jobs.db.Database.claim_job`) and carry a lease the worker renews, so a job
of a dead worker becomes claimable again, and a restarted node releases its own claims at
once. Derived UIDs are deterministic, so a re-run writes and sends the same instances.

Export is per destination (``exports`` rows): what is still to send, attempts, last error
and the time of the next attempt (exponential backoff with jitter,
:func:`dicom_node.export.send.next_retry_delay`), up to the destination's ``max_attempts``.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy import select, update

from dicom_node.derive import preview
from dicom_node.jobs import db as dbm
from dicom_node.jobs.db import Claimed, Database, Export, Instance, Job, Series, Study
from dicom_node.metrics import ENGINE_SECONDS, count_export
from dicom_node.receive.spool import Spool, atomic_write

log = logging.getLogger(__name__)


class EngineCache:
    """Loaded engines per model, shared by a process's workers."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._engines: dict[str, Any] = {}
        self._lock = threading.Lock()

    def model_for(self, model: str | None, modality: str | None) -> str:
        if model:
            return model
        from sr_engine.registry import model_for_modality

        return str(model_for_modality(modality or "", self.settings.engine.model_dirs))

    def get(self, model: str) -> Any:
        with self._lock:
            eng = self._engines.get(model)
            if eng is None:
                from sr_engine.engine import Engine

                e = self.settings.engine
                eng = Engine.load(
                    model, backend=e.backend, threads=e.threads, model_dirs=tuple(e.model_dirs)
                )
                self._engines[model] = eng
            return eng


class _ClaimLost(Exception):
    pass


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
        self.settings = settings
        self.name = name
        self.engines = engines or EngineCache(settings)
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
            except Exception:
                log.exception("worker %s: unexpected error", self.name)
                did = False
            if not did:
                self.wake.wait(poll)
                self.wake.clear()

    def run_once(self) -> bool:
        """Claim and work one job; False when none was ready."""
        lease = self.settings.scheduler.job_lease
        c = self.db.claim_job(self.name, lease)
        if c is None:
            return False
        self._last_renew = time.monotonic()
        try:
            if c.state == dbm.PROCESSING:
                self._process(c)
            else:
                self._export(c.id)
        except Stopping:
            self.db.update_job(c.id, self.name, claimed_by=None, lease_until=None)
            log.info("job %d left resumable (node stopping)", c.id)
        return True

    def _renew(self, job_id: int) -> None:
        if self.stop_event.is_set():
            raise Stopping
        lease = self.settings.scheduler.job_lease
        if time.monotonic() - self._last_renew > lease / 4:
            if not self.db.renew_lease(job_id, self.name, lease):
                raise Stopping  # someone else holds it now (our lease ran out)
            self._last_renew = time.monotonic()

    # ------------------------------------------------------------------ processing
    def _job_context(self, job_id: int) -> dict[str, Any]:
        with self.db.engine.connect() as conn:
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

    def _process(self, c: Claimed) -> None:
        from dicom_node.derive.process import enhance_instance

        ctx = self._job_context(c.id)
        study, series = ctx["study_uid"], ctx["series_uid"]
        limit = self.settings.scheduler.job_max_attempts
        if c.attempts > limit + 2:  # it keeps dying mid-way (a crash in the engine?)
            self.db.update_job(
                c.id,
                self.name,
                state=dbm.FAILED,
                claimed_by=None,
                lease_until=None,
                finished_at=time.time(),
                last_error=f"interrupted {c.attempts} times; given up",
            )
            log.error("job %d failed: interrupted %d times", c.id, c.attempts)
            return
        t0 = time.monotonic()
        try:
            model = self.engines.model_for(ctx["model"], ctx["modality"])
            engine = self.engines.get(model)
            instances = self.db.series_instances(c.series_id)
            out_dir = self.derived_root / series
            written: list[str] = []
            derived_series = None
            unsupported: list[str] = []
            engine_seconds = 0.0
            log.info(
                "job %d processing study=%s series=%s instances=%d model=%s attempt=%d",
                c.id,
                study,
                series,
                len(instances),
                Path(model).stem,
                c.attempts,
            )
            for sop_uid, path in instances:
                self._renew(c.id)
                ds = pydicom.dcmread(path)
                try:
                    out, enhanced = enhance_instance(ds, engine, self.settings.derive)
                except Exception as e:
                    if type(e).__name__ == "UnsupportedInput":
                        unsupported.append(f"{sop_uid}: {e}")
                        continue
                    raise
                engine_seconds += enhanced.seconds
                ENGINE_SECONDS.observe(enhanced.seconds)
                derived_series = str(out.SeriesInstanceUID)
                buf = io.BytesIO()
                out.save_as(buf, enforce_file_format=True)
                target = out_dir / f"{out.SOPInstanceUID}.dcm"
                atomic_write(target, buf.getbuffer(), fsync=self.settings.spool.fsync)
                written.append(str(target))
        except Stopping:
            raise
        except Exception as e:
            self._processing_failed(c, f"{type(e).__name__}: {e}")
            return
        now = time.time()
        dests = json.loads(ctx["destinations"] or "[]")
        if not written:
            reason = "no instance could be enhanced" + (
                f" ({unsupported[0]})" if unsupported else ""
            )
            self.db.update_job(
                c.id,
                self.name,
                state=dbm.SKIPPED,
                reason=reason,
                claimed_by=None,
                lease_until=None,
                finished_at=now,
                model=model,
            )
            log.info("job %d skipped study=%s series=%s: %s", c.id, study, series, reason)
            return
        preview.capture(self.settings.node.data_dir, c.id, instances, written)
        try:
            self._to_exporting(c, model, written, derived_series, unsupported, dests, now)
        except _ClaimLost:
            log.warning("job %d: claim lost while processing; left to its new holder", c.id)
            return
        log.info(
            "job %d derived study=%s series=%s -> series=%s instances=%d in %.1f s (engine %.1f s)",
            c.id,
            study,
            series,
            derived_series,
            len(written),
            time.monotonic() - t0,
            engine_seconds,
        )
        self._export(c.id)

    def _to_exporting(
        self,
        c: Claimed,
        model: str,
        written: list[str],
        derived_series: str | None,
        unsupported: list[str],
        dests: list[str],
        now: float,
    ) -> None:
        from sqlalchemy import delete

        with self.db.engine.begin() as conn:
            held = conn.execute(
                update(Job)
                .where(Job.id == c.id, Job.claimed_by == self.name)
                .values(
                    state=dbm.EXPORTING,
                    model=model,
                    derived_count=len(written),
                    derived_series_uid=derived_series,
                    next_attempt_at=None,
                    last_error=("; ".join(unsupported)[:2000] or None),
                    updated_at=now,
                )
            ).rowcount
            if held != 1:  # our lease ran out and another worker has the job now
                raise _ClaimLost  # rolls the transaction back
            conn.execute(delete(Export).where(Export.job_id == c.id))
            for d in dests:
                conn.execute(
                    Export.__table__.insert().values(
                        job_id=c.id,
                        destination=d,
                        state=dbm.PENDING,
                        attempts=0,
                        sent_count=0,
                        pending=json.dumps(written),
                        updated_at=now,
                    )
                )

    def _processing_failed(self, c: Claimed, error: str) -> None:
        s = self.settings.scheduler
        now = time.time()
        if c.attempts >= s.job_max_attempts:
            self.db.update_job(
                c.id,
                self.name,
                state=dbm.FAILED,
                last_error=error[:4000],
                claimed_by=None,
                lease_until=None,
                finished_at=now,
            )
            log.error("job %d failed after %d attempts: %s", c.id, c.attempts, error)
        else:
            delay = s.job_retry_delay * 2 ** (c.attempts - 1)
            self.db.update_job(
                c.id,
                self.name,
                state=dbm.QUEUED,
                last_error=error[:4000],
                claimed_by=None,
                lease_until=None,
                next_attempt_at=now + delay,
            )
            log.warning(
                "job %d attempt %d failed, again in %.0f s: %s", c.id, c.attempts, delay, error
            )

    # ------------------------------------------------------------------ export
    def _export(self, job_id: int) -> None:
        from dicom_node.export.send import next_retry_delay, send

        dests = {d.name: d for d in self.settings.destinations}
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(
                    Export.id,
                    Export.destination,
                    Export.attempts,
                    Export.pending,
                    Export.next_attempt_at,
                    Export.sent_count,
                ).where(Export.job_id == job_id, Export.state == dbm.PENDING)
            ).all()
        ctx = self._job_context(job_id)
        for r in rows:
            if r.next_attempt_at is not None and r.next_attempt_at > time.time():
                continue
            self._renew(job_id)
            pending = json.loads(r.pending or "[]")
            dest = dests.get(r.destination)
            values: dict[str, Any] = {"updated_at": time.time()}
            if dest is None:
                values.update(
                    state=dbm.FAILED, last_error=f"destination {r.destination!r} not configured"
                )
            elif not pending:
                values.update(state=dbm.DONE)
            else:
                res = send(dest, pending, self.settings.node.ae_title)
                ok = set(res.ok)
                permanent = set(getattr(res, "permanent", []) or [])
                left = [p for p in pending if p not in ok and p not in permanent]
                attempts = r.attempts + 1
                values.update(
                    attempts=attempts,
                    pending=json.dumps(left),
                    sent_count=r.sent_count + len(ok & set(pending)),
                )
                err = res.failed[0][1] if res.failed else None
                if permanent:
                    values.update(
                        state=dbm.FAILED, last_error=f"{len(permanent)} refused: {err}"[:4000]
                    )
                elif not left:
                    values.update(state=dbm.DONE, last_error=None, next_attempt_at=None)
                elif attempts >= dest.max_attempts:
                    values.update(state=dbm.FAILED, last_error=(err or "")[:4000])
                else:
                    delay = next_retry_delay(attempts, dest)
                    values.update(
                        last_error=(err or "")[:4000], next_attempt_at=time.time() + delay
                    )
                    log.warning(
                        "job %d export to %s: %d left, attempt %d/%d, again in %.1f s: %s",
                        job_id,
                        dest.name,
                        len(left),
                        attempts,
                        dest.max_attempts,
                        delay,
                        err,
                    )
                if values.get("state") == dbm.DONE:
                    log.info(
                        "job %d exported study=%s series=%s to %s: %d instances",
                        job_id,
                        ctx["study_uid"],
                        ctx["series_uid"],
                        dest.name,
                        values["sent_count"],
                    )
            count_export(r.destination, values.get("state"))
            with self.db.engine.begin() as conn:
                conn.execute(update(Export).where(Export.id == r.id).values(**values))
        self._settle(job_id, ctx)

    def _settle(self, job_id: int, ctx: dict[str, Any]) -> None:
        """After export attempts: done, failed, or back to waiting for the next retry."""
        with self.db.engine.connect() as conn:
            exps = conn.execute(
                select(
                    Export.destination, Export.state, Export.next_attempt_at, Export.last_error
                ).where(Export.job_id == job_id)
            ).all()
        now = time.time()
        pending = [e for e in exps if e.state == dbm.PENDING]
        failed = [e for e in exps if e.state == dbm.FAILED]
        if pending:
            nxt = min((e.next_attempt_at or now) for e in pending)
            self.db.update_job(
                job_id,
                self.name,
                claimed_by=None,
                lease_until=None,
                next_attempt_at=nxt,
                last_error=_summary(pending + failed),
            )
            return
        if failed:
            self.db.update_job(
                job_id,
                self.name,
                state=dbm.FAILED,
                claimed_by=None,
                lease_until=None,
                finished_at=now,
                last_error=_summary(failed),
            )
            log.error("job %d failed: %s", job_id, _summary(failed))
            return
        self.db.update_job(
            job_id,
            self.name,
            state=dbm.DONE,
            claimed_by=None,
            lease_until=None,
            finished_at=now,
            next_attempt_at=None,
            last_error=None,
        )
        log.info("job %d done study=%s series=%s", job_id, ctx["study_uid"], ctx["series_uid"])
        if not self.settings.spool.keep_after_export:
            self._drop_files(job_id, ctx)

    def _drop_files(self, job_id: int, ctx: dict[str, Any]) -> None:
        """Spool retention after a successful export: the job's source files go."""
        with self.db.engine.connect() as conn:
            rows = conn.execute(
                select(Instance.id, Instance.path, Instance.received_at)
                .join(Job, Job.series_id == Instance.series_id)
                .where(
                    Job.id == job_id,
                    Instance.removed.is_(False),
                    Instance.received_at <= Job.started_at,
                )
            ).all()
        for r in rows:
            try:
                Path(r.path).unlink(missing_ok=True)
            except OSError:
                continue
        if rows:
            with self.db.engine.begin() as conn:
                conn.execute(
                    update(Instance)
                    .where(Instance.id.in_([r.id for r in rows]))
                    .values(removed=True)
                )


def _summary(exps: list[Any]) -> str:
    return "; ".join(f"{e.destination}: {e.last_error or e.state}" for e in exps)[:4000]
