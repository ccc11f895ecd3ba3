"""The STOW-RS endpoints (PS3.18 10.5): ``POST /dicom-web/studies[/{study}]``, each part
stored through the ingest the app was made with (``app.state.store``), the body bounded by
``web.max_request_mb``."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydicom.dataset import Dataset

from dicom_node.config import Settings
from dicom_node.receive.stow import DICOM_JSON, BadRequest, _params, split_multipart, store_parts
from dicom_node.web.context import Console
from dicom_node.web.errors import problem

log = logging.getLogger(__name__)

router = APIRouter(tags=["DICOMweb"])


def stow_limit(settings: Settings) -> int:
    """The largest STOW-RS request body in bytes (``web.max_request_mb``)."""
    return int(settings.web.max_request_mb * 1024 * 1024)


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


async def stow(request: Request, study_uid: str | None) -> Response:
    media, params = _params(request.headers.get("content-type", ""))
    if media != "multipart/related":
        return problem(415, 'expected multipart/related; type="application/dicom"')
    part_type = params.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        return problem(415, f"type={part_type[:64]} is not supported, only application/dicom")
    boundary = params.get("boundary")
    if not boundary or len(boundary) > 200:
        return problem(400, "multipart/related without a boundary parameter (1-200 chars)")
    c: Console = request.app.state.console
    try:
        body = await read_body(request, stow_limit(c.settings))
        parts = split_multipart(body, boundary)
    except BadRequest as e:
        return problem(e.status, e.message)
    if not parts:
        return problem(400, "multipart body has no parts")
    calling = (request.headers.get("x-calling-ae") or "").strip()[:16] or None
    code, response = await run_in_threadpool(
        store_parts, parts, request.app.state.store, study_uid, calling
    )
    log.info(
        "stow: %d instance(s) from %s: %d stored, %d failed (HTTP %d)",
        len(parts),
        request.client.host if request.client else "?",
        len(response.ReferencedSOPSequence),
        len(response.FailedSOPSequence),
        code,
    )
    return _dicom_json(code, response)


@router.post("/dicom-web/studies")
async def stow_studies(request: Request) -> Response:
    """STOW-RS: store instances of any study (multipart/related, application/dicom)."""
    return await stow(request, None)


@router.post("/dicom-web/studies/{study_uid}")
async def stow_study(study_uid: str, request: Request) -> Response:
    """STOW-RS: store instances of one study; others fail with 0xA900."""
    if len(study_uid) > 64:
        return problem(400, "study UID longer than 64 characters")
    return await stow(request, study_uid)
