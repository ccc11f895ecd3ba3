"""Status endpoints for probes and monitoring: ``/healthz`` (the process answers),
``/readyz`` (the database answers and the data folder has room above the disk reserve)
and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from dicom_node.receive.reserve import GB, free_bytes
from dicom_node.web.context import Console, console

MIN_FREE_BYTES = 256 * 1024 * 1024  # /readyz says "low" below this, or below storage.min_free_gb

router = APIRouter(tags=["status"])


@router.get("/healthz", response_class=PlainTextResponse)
def healthz() -> str:
    """The process answers."""
    return "ok\n"


@router.get("/readyz")
def readyz(c: Console = Depends(console)) -> JSONResponse:
    """Ready to receive: the database answers and the data folder has room."""
    db, settings = c.db, c.settings
    checks: dict[str, str] = {}
    ok = True
    if db is not None:
        try:
            t0 = time.monotonic()
            db.queue_counts()
            checks["database"] = f"ok ({(time.monotonic() - t0) * 1000:.0f} ms)"
        except Exception as e:
            ok = False
            checks["database"] = f"failing: {type(e).__name__}"
    else:
        checks["database"] = "none"
    reserve = max(MIN_FREE_BYTES, int(settings.storage.min_free_gb * GB))
    try:
        free = free_bytes(settings.node.data_dir)
        enough = free >= reserve
        ok = ok and enough
        checks["disk"] = (
            f"{'ok' if enough else 'low'}: {free / GB:.1f} GiB free"
            f" (storage.min_free_gb {settings.storage.min_free_gb:g})"
        )
    except OSError as e:
        ok = False
        checks["disk"] = f"failing: {type(e).__name__}"
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics")
def metrics(c: Console = Depends(console)) -> Response:
    """Prometheus text format: srnode_* families."""
    from prometheus_client import CONTENT_TYPE_LATEST

    from dicom_node.web.metrics import exposition

    return Response(exposition(c.db), media_type=CONTENT_TYPE_LATEST)
