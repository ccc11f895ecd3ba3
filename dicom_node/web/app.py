"""srnode's HTTP side: DICOMweb STOW-RS receive and a small admin console.

- ``POST /dicom-web/studies`` and ``POST /dicom-web/studies/{study}`` (PS3.18 10.5):
  ``multipart/related; type="application/dicom"``, each part one Part-10 instance. Each
  goes through the same ingest as a C-STORE (spool, fsync, database, job flow). The
  response is a Store Instances Response dataset (application/dicom+json) with
  ReferencedSOPSequence / FailedSOPSequence: 200 all stored, 202 some failed, 409 none
  stored; 415 for another media type, 400 for a body that is not multipart/related,
  413 for a request over ``web.max_request_mb`` (the body is held in memory).
  STOW-RS has no calling AE title; a client may name itself with an ``X-Calling-AE``
  header so that routes matching ``calling_ae`` apply (otherwise the calling AE is empty).
- ``GET /`` the console (queue, recent jobs, destinations), ``GET /api/status`` the same
  as JSON, ``GET /healthz``, ``GET /metrics`` (Prometheus).

The console is server-rendered HTML with inline CSS, no scripts, so it renders the same in
any browser, headless ones included. It binds to ``web.host`` (loopback by default). With
``web.token`` set, every route but ``/healthz`` needs ``Authorization: Bearer <token>`` or
HTTP Basic with the token as password (browsers prompt; Orthanc's DICOMweb client sends
it from the server entry's user name and password); without it there is no
authentication, so keep it on loopback or behind a reverse proxy. Use TLS (a proxy) for
anything beyond loopback: Basic and Bearer are plain text on the wire.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydicom.dataset import Dataset

from dicom_node import __version__
from dicom_node.config import Settings
from dicom_node.receive.stow import (
    DICOM_JSON,
    BadRequest,
    StoreFn,
    _params,
    split_multipart,
    store_parts,
)
from dicom_node.web.console import _status_data, render_console

log = logging.getLogger(__name__)


def authorized(header: str, token: str) -> bool:
    """``Bearer <token>``, or ``Basic`` with any user name and the token as password."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            value = base64.b64decode(value, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.encode(), token.encode())


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes
    (by Content-Length before reading, or while a chunked body streams in)."""
    declared = request.headers.get("content-length")
    too_big = BadRequest(413, f"request body over web.max_request_mb ({limit} bytes)")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)  # one copy, as Starlette's request.body()


def _dicom_json(code: int, ds: Dataset) -> Response:
    return Response(ds.to_json(), status_code=code, media_type=DICOM_JSON)


def _problem(code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=code)


def create_app(settings: Settings, store: StoreFn | None = None, db: Any = None) -> FastAPI:
    """The FastAPI app. ``store(data, calling_ae, via="stow") -> status`` defaults to
    :func:`dicom_node.receive.ingest.store`; ``db`` (a
    :class:`dicom_node.jobs.db.Database`) feeds the console and may be None."""
    if store is None:
        from dicom_node.receive import ingest

        store = ingest.store
    app = FastAPI(title="srnode", version=__version__, docs_url=None, redoc_url=None)
    store_fn: StoreFn = store
    limit = int(settings.web.max_request_mb * 1024 * 1024)
    token = settings.web.token

    if token:

        @app.middleware("http")
        async def require_token(request: Request, call_next: Any) -> Response:
            if request.url.path == "/healthz" or authorized(
                request.headers.get("authorization", ""), token
            ):
                return await call_next(request)
            log.warning(
                "web: unauthorised %s %s from %s",
                request.method,
                request.url.path,
                request.client.host if request.client else "?",
            )
            return PlainTextResponse(
                "authentication required\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="srnode", charset="UTF-8"'},
            )

    async def stow(request: Request, study_uid: str | None) -> Response:
        media, params = _params(request.headers.get("content-type", ""))
        if media != "multipart/related":
            return _problem(415, 'expected multipart/related; type="application/dicom"')
        part_type = params.get("type", "application/dicom").lower()
        if part_type != "application/dicom":
            return _problem(415, f"type={part_type} is not supported, only application/dicom")
        boundary = params.get("boundary")
        if not boundary:
            return _problem(400, "multipart/related without a boundary parameter")
        try:
            body = await read_body(request, limit)
            parts = split_multipart(body, boundary)
        except BadRequest as e:
            return _problem(e.status, e.message)
        if not parts:
            return _problem(400, "multipart body has no parts")
        calling = request.headers.get("x-calling-ae") or None
        code, response = await run_in_threadpool(store_parts, parts, store_fn, study_uid, calling)
        log.info(
            "stow: %d instance(s) from %s: %d stored, %d failed (HTTP %d)",
            len(parts),
            request.client.host if request.client else "?",
            len(response.ReferencedSOPSequence),
            len(response.FailedSOPSequence),
            code,
        )
        return _dicom_json(code, response)

    @app.post("/dicom-web/studies")
    async def stow_studies(request: Request) -> Response:
        """STOW-RS: store instances of any study."""
        return await stow(request, None)

    @app.post("/dicom-web/studies/{study_uid}")
    async def stow_study(study_uid: str, request: Request) -> Response:
        """STOW-RS: store instances of one study; others fail with 0xA900."""
        return await stow(request, study_uid)

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok\n"

    @app.get("/api/status")
    def api_status(limit: int = 20) -> JSONResponse:
        return JSONResponse(_jsonable(_status_data(settings, db, limit)))

    @app.get("/", response_class=HTMLResponse)
    def console(limit: int = 20) -> str:
        return render_console(_status_data(settings, db, limit))

    @app.get("/metrics")
    def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)
