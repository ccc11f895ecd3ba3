"""The processing step of a job (``processing -> exporting``, or ``skipped`` / a retry /
``failed``): every instance of the series through the engine, each derived instance
written (fsynced) under ``derived/<source series>/`` of the data directory, the previews
captured, then the job handed over to export with the files to send.

Derived UIDs are deterministic, so a re-run writes the same files again. Errors are
recorded through :mod:`dicom_node.error_text` (type, tag and SOPInstanceUID, no element
values)."""

from __future__ import annotations

import json
import logging
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from dicom_node.derive import preview
from dicom_node.error_text import describe, register_safe
from dicom_node.jobs.step_context import StepContext, Stopping
from dicom_node.metrics import ENGINE_SECONDS, count_failed
from dicom_node.spool import atomic_write
from dicom_node.store.states import Claimed, ClaimLost, JobState
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


def process(w: StepContext, c: Claimed) -> bool:
    """Enhance the job's series and hand it over to export (True), or skip / retry / fail
    it (False)."""
    ctx = w.jobs.context(c.id)
    study, series = ctx["study_uid"], ctx["series_uid"]
    if c.attempts > w.settings.scheduler.job_max_attempts + 2:
        # it keeps dying mid-way (a crash in the engine?)
        w.jobs.finish(
            c.id, JobState.FAILED, w.name, last_error=f"interrupted {c.attempts} times; given up"
        )
        log.error("job %d failed: interrupted %d times", c.id, c.attempts)
        return False
    t0 = time.monotonic()
    try:
        model = w.engines.model_for(ctx["model"], ctx["modality"])
        run = _enhance_series(w, c, ctx, model)
    except Stopping:
        raise
    except InstanceFailed as e:
        _failed(w, c, str(e))
        return False
    except Exception as e:
        _failed(w, c, describe(e))
        return False
    if not run.written:
        reason = "no instance could be enhanced" + (
            f" ({run.unsupported[0]})" if run.unsupported else ""
        )
        w.jobs.finish(c.id, JobState.SKIPPED, w.name, reason=reason, model=model)
        log.info("job %d skipped study=%s series=%s: %s", c.id, study, series, reason)
        return False
    try:
        w.jobs.to_exporting(
            c.id,
            w.name,
            model=model,
            written=run.written,
            derived_series=run.derived_series,
            notes=run.unsupported,
            destinations=json.loads(ctx["destinations"] or "[]"),
            now=time.time(),
        )
    except ClaimLost:
        log.warning("job %d: claim lost while processing; left to its new holder", c.id)
        return False
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
    return True


def _enhance_series(w: StepContext, c: Claimed, ctx: dict[str, Any], model: str) -> _Run:
    """Every instance of the series through the engine, each result written (fsynced)
    under the derived folder; images the engine refuses are noted, not fatal.

    Decoding, inference (groups of slices per backend call) and derive/encoding run as a
    pipeline (:mod:`dicom_node.derive.pipeline`); the results are written here, in the
    series' order, and the first unexpected failure stops the series."""
    from dicom_node.derive.pipeline import enhance_stream

    engine = w.engines.get(model)
    instances = w.jobs.db.series_instances(c.series_id)
    out_dir = w.data_dir.derived_series(ctx["series_uid"])
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
        w.settings.derive,
        on_wait=lambda: w.renew(c.id),
    )
    with closing(stream):
        for o in stream:
            w.renew(c.id)
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
            atomic_write(target, o.data, fsync=w.settings.spool.fsync)
            run.written.append(str(target))
    preview.capture(w.data_dir.root, c.id, instances, run.written)
    return run


def _failed(w: StepContext, c: Claimed, error: str) -> None:
    s = w.settings.scheduler
    delay = w.jobs.processing_failed(c, w.name, error, s.job_max_attempts, s.job_retry_delay)
    if delay is None:
        count_failed("processing")
        log.error("job %d failed after %d attempts: %s", c.id, c.attempts, error)
    else:
        log.warning("job %d attempt %d failed, again in %.0f s: %s", c.id, c.attempts, delay, error)
