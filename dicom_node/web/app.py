"""srnode's HTTP side: DICOMweb STOW-RS receive, the REST API, the admin console, metrics.

- ``POST /dicom-web/studies`` and ``POST /dicom-web/studies/{study}`` (PS3.18 10.5):
  ``multipart/related; type="application/dicom"``, each part one Part-10 instance. Each
  goes through the same ingest as a C-STORE (spool, fsync, database, job flow). The
  response is a Store Instances Response dataset (application/dicom+json) with
  ReferencedSOPSequence / FailedSOPSequence: 200 all stored, 202 some failed, 409 none
  stored; 415 for another media type, 400 for a body that is not multipart/related,
  413 for a request over ``web.max_request_mb`` (the body is held in memory).
  STOW-RS has no calling AE title; a client may name itself with an ``X-Calling-AE``
  header so that routes matching ``calling_ae`` apply (otherwise the calling AE is empty).
- ``/api/…`` the REST API (:mod:`dicom_node.web.api`; OpenAPI at ``/openapi.json``, Swagger
  UI at ``/docs``), the console pages (:mod:`dicom_node.web.pages`), ``/metrics``
  (Prometheus), ``/healthz`` (the process answers) and ``/readyz`` (database and disk).

Who may do what is in :mod:`dicom_node.web.auth`; bad input and broken clients are kept
from turning into 500s by :mod:`dicom_node.web.guard`. Use TLS (a reverse proxy) for
anything beyond loopback: passwords, tokens and cookies are plain text on the wire.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from pydicom.dataset import Dataset
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import ClientDisconnect

from dicom_node import __version__
from dicom_node.admin.errors import Actor
from dicom_node.config import Settings
from dicom_node.receive.reserve import GB, free_bytes
from dicom_node.receive.stow import (
    DICOM_JSON,
    BadRequest,
    StoreFn,
    _params,
    split_multipart,
    store_parts,
)
from dicom_node.web import api, config_pages, job_pages, pages
from dicom_node.web.api_docs import mount_api_docs
from dicom_node.web.auth import (
    CSRF_COOKIE,
    PUBLIC_PATHS,
    SESSION_COOKIE,
    Auth,
    is_loopback,
)
from dicom_node.web.context import Console
from dicom_node.web.guard import RequestGuard, mark_logged

log = logging.getLogger(__name__)

API_BODY_LIMIT = 1024 * 1024
BODY_READ_TIMEOUT = 30.0  # seconds a request body may stall before 408
MIN_FREE_BYTES = 256 * 1024 * 1024  # /readyz says "low" below this, or below storage.min_free_gb


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


def _wants_html(request: Request) -> bool:
    p = request.url.path
    if p.startswith(("/api/", "/dicom-web/", "/metrics", "/openapi.json")):
        return False
    return "text/html" in request.headers.get("accept", "")


def create_app(
    settings: Settings, store: StoreFn | None = None, db: Any = None, live: Any = None
) -> FastAPI:
    """The FastAPI app. ``store(data, calling_ae, via="stow") -> status`` defaults to
    :func:`dicom_node.receive.ingest.store`; ``db`` (a :class:`dicom_node.jobs.db.Database`)
    feeds the API and the console and may be None; ``live`` is the node's
    :class:`dicom_node.admin.live_config.LiveConfig` (made and seeded from ``settings`` here when
    not given)."""
    if store is None:
        from dicom_node.receive import ingest

        store = ingest.store
    if live is None and db is not None:
        from dicom_node.admin.live_config import LiveConfig

        live = LiveConfig(db, settings)
        live.seed(settings)
    app = FastAPI(
        title="srnode",
        version=__version__,
        description="The REST API of an srnode DICOM node: calling AE titles, destinations, "
        "routes, jobs, models and the audit log. Changes apply at once and are audited.",
        docs_url=None,  # served from this node: mount_api_docs
        redoc_url=None,
    )
    mount_api_docs(app)
    auth = Auth(settings, db)
    app.state.console = Console(settings=settings, db=db, live=live, auth=auth)
    store_fn: StoreFn = store
    stow_limit = int(settings.web.max_request_mb * 1024 * 1024)

    async def who_is_asking(request: Request, call_next: Any) -> Response:
        path = request.url.path
        address = request.client.host if request.client else None
        request.state.csrf_cookie = request.cookies.get(CSRF_COOKIE) or secrets.token_hex(16)
        who: Actor | None = None
        via_cookie = False
        if path.startswith(PUBLIC_PATHS):
            who = Actor("anonymous", "read-only", address)
        else:
            header = request.headers.get("authorization", "")
            if header:
                who = await run_in_threadpool(auth.from_header, header, address)
            if who is None and not header:
                who = auth.from_cookie(request.cookies.get(SESSION_COOKIE), address)
                via_cookie = who is not None
            open_console = who is None and not header and is_loopback(address)
            if open_console and not await run_in_threadpool(auth.configured):
                who = Actor("local", "admin", address)
        if who is None:
            log.warning("web: unauthorised %s %s from %s", request.method, path, address or "?")
            if _wants_html(request) and request.method in ("GET", "HEAD"):
                return RedirectResponse(f"/login?next={path}", status_code=303)
            return PlainTextResponse(
                "authentication required\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="srnode", charset="UTF-8"'},
            )
        unsafe = request.method not in ("GET", "HEAD", "OPTIONS")
        if unsafe and not path.startswith(PUBLIC_PATHS) and path != "/logout":
            if not who.is_admin:
                return _problem(403, "read-only users cannot change anything")
            if via_cookie and path.startswith("/api/") and not _same_origin(request):
                return _problem(
                    403,
                    "a change through the API with a cookie must come from "
                    "this console (or use a token)",
                )
        request.state.actor = who
        response = await call_next(request)
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(
                CSRF_COOKIE, request.state.csrf_cookie, httponly=True, samesite="strict"
            )
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
        return JSONResponse(
            {
                "error": f"{where}: {first.get('msg', 'invalid')}",
                "detail": [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors][
                    :20
                ],
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _wants_html(request) and exc.status_code in (403, 404, 503):
            return HTMLResponse(
                f"<!doctype html><title>{exc.status_code}</title><link rel=stylesheet "
                f'href="/static/console.css"><main><h1>{exc.status_code}</h1>'
                f"<p>{_html(str(exc.detail))}</p><p><a href='/'>back to the dashboard</a></p>"
                "</main>",
                status_code=exc.status_code,
            )
        return JSONResponse(
            {"error": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect) -> Response:
        log.info(
            "web: %s %s: client went away before the request was read",
            request.method,
            request.url.path,
        )
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        error_id = secrets.token_hex(6)
        log.error(
            "web: %s %s failed: %s (error id %s)",
            request.method,
            request.url.path,
            type(exc).__name__,
            error_id,
        )
        log.debug("error id %s", error_id, exc_info=exc)
        mark_logged(exc)
        return JSONResponse({"error": "internal error", "error_id": error_id}, status_code=500)

    async def stow(request: Request, study_uid: str | None) -> Response:
        media, params = _params(request.headers.get("content-type", ""))
        if media != "multipart/related":
            return _problem(415, 'expected multipart/related; type="application/dicom"')
        part_type = params.get("type", "application/dicom").lower()
        if part_type != "application/dicom":
            return _problem(415, f"type={part_type[:64]} is not supported, only application/dicom")
        boundary = params.get("boundary")
        if not boundary or len(boundary) > 200:
            return _problem(400, "multipart/related without a boundary parameter (1-200 chars)")
        try:
            body = await read_body(request, stow_limit)
            parts = split_multipart(body, boundary)
        except BadRequest as e:
            return _problem(e.status, e.message)
        if not parts:
            return _problem(400, "multipart body has no parts")
        calling = (request.headers.get("x-calling-ae") or "").strip()[:16] or None
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

    @app.post("/dicom-web/studies", tags=["DICOMweb"])
    async def stow_studies(request: Request) -> Response:
        """STOW-RS: store instances of any study (multipart/related, application/dicom)."""
        return await stow(request, None)

    @app.post("/dicom-web/studies/{study_uid}", tags=["DICOMweb"])
    async def stow_study(study_uid: str, request: Request) -> Response:
        """STOW-RS: store instances of one study; others fail with 0xA900."""
        if len(study_uid) > 64:
            return _problem(400, "study UID longer than 64 characters")
        return await stow(request, study_uid)

    @app.get("/healthz", response_class=PlainTextResponse, tags=["status"])
    def healthz() -> str:
        """The process answers."""
        return "ok\n"

    @app.get("/readyz", tags=["status"])
    def readyz() -> JSONResponse:
        """Ready to receive: the database answers and the data folder has room."""
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

    @app.get("/metrics", tags=["status"])
    def metrics() -> Response:
        """Prometheus text format: srnode_* families."""
        from prometheus_client import CONTENT_TYPE_LATEST

        from dicom_node.web.metrics import exposition

        return Response(exposition(db), media_type=CONTENT_TYPE_LATEST)

    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(config_pages.router)
    app.include_router(job_pages.router)
    app.mount(
        "/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static"
    )

    def limit_for(path: str) -> tuple[int, str]:
        if path.startswith("/dicom-web/"):
            return stow_limit, "web.max_request_mb"
        return API_BODY_LIMIT, "the limit of the API"

    # outermost first: who is asking, then the guard around everything that reads the body
    app.add_middleware(_Guard, limit_for=limit_for, read_timeout=BODY_READ_TIMEOUT)
    app.add_middleware(BaseHTTPMiddleware, dispatch=who_is_asking)
    return app


class _Guard(RequestGuard):
    """:class:`RequestGuard` as an app middleware, inside the authentication."""


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer") or ""
    host = request.headers.get("host", "")
    return bool(host) and origin.split("://", 1)[-1].split("/", 1)[0] == host


def _html(s: str) -> str:
    import html

    return html.escape(s)
