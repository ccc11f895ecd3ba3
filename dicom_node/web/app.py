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

The STOW-RS endpoints are in :mod:`dicom_node.web.stow_routes`, the probes and metrics in
:mod:`dicom_node.web.status`, the error answers in :mod:`dicom_node.web.errors`. Who may
do what is in :mod:`dicom_node.web.auth`; bad input and broken clients are kept from
turning into 500s by :mod:`dicom_node.web.guard`. Use TLS (a reverse proxy) for
anything beyond loopback: passwords, tokens and cookies are plain text on the wire.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import (
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from starlette.middleware.base import BaseHTTPMiddleware

from dicom_node import __version__
from dicom_node.admin.errors import Actor
from dicom_node.config import Settings
from dicom_node.receive.stow import (
    StoreFn,
)
from dicom_node.web import api, config_pages, job_pages, pages, status, stow_routes
from dicom_node.web.api_docs import mount_api_docs
from dicom_node.web.auth import (
    CSRF_COOKIE,
    PUBLIC_PATHS,
    SESSION_COOKIE,
    Auth,
    is_loopback,
)
from dicom_node.web.context import Console
from dicom_node.web.errors import install_error_handlers, problem, wants_html
from dicom_node.web.guard import RequestGuard
from dicom_node.web.stow_routes import stow_limit

log = logging.getLogger(__name__)

API_BODY_LIMIT = 1024 * 1024
BODY_READ_TIMEOUT = 30.0  # seconds a request body may stall before 408


def create_app(
    settings: Settings, store: StoreFn | None = None, db: Any = None, live: Any = None
) -> FastAPI:
    """The FastAPI app. ``store(data, calling_ae, via="stow") -> status`` defaults to
    :func:`dicom_node.receive.ingest.store`; ``db`` (a :class:`dicom_node.store.database.Database`)
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
    app.state.store = store

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
            if wants_html(request) and request.method in ("GET", "HEAD"):
                return RedirectResponse(f"/login?next={path}", status_code=303)
            return PlainTextResponse(
                "authentication required\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="srnode", charset="UTF-8"'},
            )
        unsafe = request.method not in ("GET", "HEAD", "OPTIONS")
        if unsafe and not path.startswith(PUBLIC_PATHS) and path != "/logout":
            if not who.is_admin:
                return problem(403, "read-only users cannot change anything")
            if via_cookie and path.startswith("/api/") and not _same_origin(request):
                return problem(
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

    install_error_handlers(app)
    app.include_router(stow_routes.router)
    app.include_router(status.router)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(config_pages.router)
    app.include_router(job_pages.router)
    app.mount(
        "/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static"
    )

    def limit_for(path: str) -> tuple[int, str]:
        if path.startswith("/dicom-web/"):
            return stow_limit(settings), "web.max_request_mb"
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
