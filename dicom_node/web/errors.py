"""What the web side answers when a request goes wrong: validation errors as one line of
JSON (422), HTTP errors as JSON or, for a browser, a small console page, a client gone
mid-request as 400, and anything unexpected as 500 with an error id (logged once, details
at debug level)."""

from __future__ import annotations

import html
import logging
import secrets

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from dicom_node.web.guard import mark_logged

log = logging.getLogger(__name__)


def wants_html(request: Request) -> bool:
    """A browser asking for a console page (not the API, STOW-RS, metrics or OpenAPI)."""
    p = request.url.path
    if p.startswith(("/api/", "/dicom-web/", "/metrics", "/openapi.json")):
        return False
    return "text/html" in request.headers.get("accept", "")


def problem(code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=code)


def install_error_handlers(app: FastAPI) -> None:
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
        if wants_html(request) and exc.status_code in (403, 404, 503):
            return HTMLResponse(
                f"<!doctype html><title>{exc.status_code}</title><link rel=stylesheet "
                f'href="/static/console.css"><main><h1>{exc.status_code}</h1>'
                f"<p>{html.escape(str(exc.detail))}</p><p><a href='/'>back to the dashboard</a></p>"
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
