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
import html
import io
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydicom
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_node import __version__
from dicom_node.config import Settings

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
StoreFn = Callable[..., int]

#: PS3.18 Store Instances failure reasons used here (PS3.4 C-STORE status values).
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
NOT_IN_STUDY = 0xA900  # the instance is not of the study named in the request URL
CANNOT_UNDERSTAND = 0xC000


# --- multipart/related ----------------------------------------------------------------------


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _params(content_type: str) -> tuple[str, dict[str, str]]:
    """``multipart/related; type="application/dicom"; boundary=x`` -> (media, params)."""
    media, _, rest = content_type.partition(";")
    params: dict[str, str] = {}
    for m in re.finditer(
        r';?\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', rest
    ):
        value = m.group(2).strip()
        if value.startswith('"') and value.endswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[m.group(1).lower()] = value
    return media.strip().lower(), params


@dataclass
class Part:
    headers: dict[str, str]
    body: bytes


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


def split_multipart(body: bytes, boundary: str) -> list[Part]:
    """The body parts of a multipart message (RFC 2046 5.1): the CRLF before each delimiter
    belongs to the delimiter, so part bodies come back byte for byte."""
    delimiter = b"--" + boundary.encode("latin-1")
    data = b"\r\n" + body
    chunks = data.split(b"\r\n" + delimiter)
    if len(chunks) < 2:
        raise BadRequest(400, "multipart body has no boundary delimiter")
    parts: list[Part] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):  # close delimiter: the epilogue follows
            break
        line_end = chunk.find(b"\r\n")
        if line_end < 0 or chunk[:line_end].strip(b" \t"):
            raise BadRequest(400, "malformed multipart boundary line")
        chunk = chunk[line_end + 2 :]
        head_end = chunk.find(b"\r\n\r\n")
        if chunk.startswith(b"\r\n"):  # no headers at all
            head, content = b"", chunk[2:]
        elif head_end < 0:
            raise BadRequest(400, "multipart part without a blank line after its headers")
        else:
            head, content = chunk[:head_end], chunk[head_end + 4 :]
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        parts.append(Part(headers, content))
    else:
        raise BadRequest(400, "multipart body has no close delimiter")
    return parts


# --- STOW-RS response -----------------------------------------------------------------------


def _header(data: bytes) -> Dataset | None:
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    except Exception:
        return None


def _uids(ds: Dataset | None) -> tuple[str, str, str]:
    if ds is None:
        return "", "", ""
    sop_class = ds.get("SOPClassUID", None) or getattr(
        ds.get("file_meta", Dataset()), "MediaStorageSOPClassUID", ""
    )
    return (
        str(sop_class or ""),
        str(ds.get("SOPInstanceUID", "") or ""),
        str(ds.get("StudyInstanceUID", "") or ""),
    )


def _item(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class or None
    item.ReferencedSOPInstanceUID = sop_instance or None
    return item


def store_parts(
    parts: list[Part], store: StoreFn, study_uid: str | None, calling_ae: str | None
) -> tuple[int, Dataset]:
    """Store each part; the HTTP status and the Store Instances Response dataset."""
    response = Dataset()
    referenced, failed = Sequence(), Sequence()
    for part in parts:
        ctype = _params(part.headers.get("content-type", "application/dicom"))[0]
        ds = _header(part.body)
        sop_class, sop_instance, part_study = _uids(ds)
        if ctype != "application/dicom":
            reason, why = CANNOT_UNDERSTAND, f"part media type {ctype} is not application/dicom"
        elif study_uid and part_study and part_study != study_uid:
            reason, why = NOT_IN_STUDY, "instance is not of the study in the request URL"
        else:
            try:
                status = store(part.body, calling_ae, via="stow")
            except Exception as e:  # the ingest must answer with a status, but never 500
                log.exception("stow: store failed for sop=%s", sop_instance or "?")
                status, why = OUT_OF_RESOURCES, f"{type(e).__name__}: {e}"
            else:
                why = getattr(status, "reason", "")
            reason = int(status)
            if reason == 0:
                referenced.append(_item(sop_class, sop_instance))
                continue
        item = _item(sop_class, sop_instance)
        item.FailureReason = reason
        failed.append(item)
        log.warning("stow: instance sop=%s refused: 0x%04X %s", sop_instance or "?", reason, why)
    response.ReferencedSOPSequence = referenced
    response.FailedSOPSequence = failed
    if not failed:
        code = 200
    elif referenced:
        code = 202
    else:
        code = 409
    return code, response


def _dicom_json(code: int, ds: Dataset) -> Response:
    return Response(ds.to_json(), status_code=code, media_type=DICOM_JSON)


def _problem(code: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=code)


# --- admin console ---------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2433;background:#f6f7f9}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:22px 0 8px}
.sub{color:#5b6477}table{border-collapse:collapse;background:#fff;width:100%}
th,td{border:1px solid #d9dde5;padding:4px 8px;text-align:left;vertical-align:top;
max-width:34em;overflow-wrap:anywhere}
th{background:#eceff4}.tiles{display:flex;gap:8px;flex-wrap:wrap}
.tile{background:#fff;border:1px solid #d9dde5;padding:8px 14px;min-width:80px}
.tile b{display:block;font-size:20px}.failed{color:#b3261e}.done{color:#1e7b34}
code{font-size:12px}
"""


def _fmt_time(t: float | None) -> str:
    if not t:
        return "-"
    dt = time.time() - float(t)
    return f"{dt:.0f} s ago" if dt >= 0 else f"in {-dt:.0f} s"


def _status_data(settings: Settings, db: Any, limit: int = 20) -> dict[str, Any]:
    out: dict[str, Any] = {"version": __version__, "ae_title": settings.node.ae_title}
    out["destinations"] = [
        {
            "name": d.name,
            "kind": d.kind,
            "address": d.url if d.kind == "stow" else f"{d.ae_title}@{d.host}:{d.port}",
            "tls": d.tls,
        }
        for d in settings.destinations
    ]
    if db is None:
        out.update(queue={}, jobs=[], exports=[])
        return out
    out["queue"] = db.queue_counts()
    out["jobs"] = db.recent_jobs(limit)
    exports = db.export_rows(only_open=False)[:limit]
    for e in exports:
        e.pop("pending", None)
    out["exports"] = exports
    return out


def render_console(data: dict[str, Any]) -> str:
    e = html.escape
    tiles = (
        "".join(
            f'<div class="tile"><b>{n}</b>{e(state)}</div>' for state, n in data["queue"].items()
        )
        or '<div class="tile">no database</div>'
    )
    dest_rows = (
        "".join(
            f"<tr><td>{e(d['name'])}</td><td>{e(d['kind'])}</td><td><code>{e(str(d['address']))}"
            f"</code></td><td>{'yes' if d['tls'] else 'no'}</td></tr>"
            for d in data["destinations"]
        )
        or '<tr><td colspan="4">none configured</td></tr>'
    )
    job_rows = (
        "".join(
            f'<tr><td>{j["id"]}</td><td class="{e(str(j["state"]))}">{e(str(j["state"]))}</td>'
            f"<td>{e(str(j.get('modality') or '-'))}</td><td><code>{e(str(j['series_uid']))}</code>"
            f"</td><td>{e(str(j.get('route') or '-'))}</td><td>{j.get('attempts', 0)}</td>"
            f"<td>{j.get('derived_count') or 0}</td><td>{_fmt_time(j.get('updated_at'))}</td>"
            f"<td>{e(str(j.get('last_error') or j.get('reason') or ''))[:200]}</td></tr>"
            for j in data["jobs"]
        )
        or '<tr><td colspan="9">no jobs yet</td></tr>'
    )
    export_rows = (
        "".join(
            f"<tr><td>{x['job_id']}</td><td>{e(str(x['destination']))}</td>"
            f'<td class="{e(str(x["state"]))}">{e(str(x["state"]))}</td><td>{x["attempts"]}</td>'
            f"<td>{x.get('sent_count') or 0}</td><td>{_fmt_time(x.get('next_attempt_at'))}</td>"
            f"<td>{e(str(x.get('last_error') or ''))[:200]}</td></tr>"
            for x in data["exports"]
        )
        or '<tr><td colspan="7">no exports yet</td></tr>'
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>srnode {e(data["ae_title"])}</title>
<style>{_CSS}</style></head><body>
<h1>srnode {e(data["ae_title"])}</h1>
<div class="sub">version {e(data["version"])} &middot; <a href="/api/status">JSON</a>
&middot; <a href="/metrics">metrics</a></div>
<h2>Queue</h2><div class="tiles">{tiles}</div>
<h2>Destinations</h2><table><tr><th>name</th><th>kind</th><th>address</th><th>TLS</th></tr>
{dest_rows}</table>
<h2>Recent jobs</h2><table><tr><th>id</th><th>state</th><th>modality</th><th>series</th>
<th>route</th><th>attempts</th><th>derived</th><th>updated</th><th>reason / last error</th></tr>
{job_rows}</table>
<h2>Exports</h2><table><tr><th>job</th><th>destination</th><th>state</th><th>attempts</th>
<th>sent</th><th>next attempt</th><th>last error</th></tr>{export_rows}</table>
</body></html>"""


# --- the app ----------------------------------------------------------------------------------


def create_app(settings: Settings, store: StoreFn | None = None, db: Any = None) -> FastAPI:
    """The FastAPI app. ``store(data, calling_ae, via="stow") -> status`` defaults to
    :func:`dicom_node.ingest.store`; ``db`` (a :class:`dicom_node.db.Database`) feeds the
    console and may be None."""
    if store is None:
        from dicom_node import ingest

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
