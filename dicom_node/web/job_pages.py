"""The console's job pages (search, one job with its before/after previews, retry and
cancel) and the audit log."""

from __future__ import annotations

import urllib.parse
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from dicom_node.admin import jobs as admin_jobs
from dicom_node.admin.errors import AdminError
from dicom_node.derive import preview
from dicom_node.store import audit as audit_log
from dicom_node.store.states import JOB_STATES
from dicom_node.web.context import Console, console
from dicom_node.web.render import _admin_actor, _back, form_of, render

router = APIRouter(include_in_schema=False)


# ------------------------------------------------------------------ jobs
def _job_filter(request: Request) -> tuple[admin_jobs.JobFilter, str]:
    """The search form's fields; a value that cannot be searched for gives a message."""
    q = request.query_params
    error = ""
    values: dict[str, Any] = {}
    for key, limit in (("modality", 16), ("accession", 16), ("description", 64)):
        v = q.get(key, "").strip()
        if len(v) > limit:
            error = f"{key}: at most {limit} characters"
        elif v:
            values[key] = v
    for key in ("study_date_from", "study_date_to"):
        v = q.get(key, "").strip().replace("-", "")
        if v and not (len(v) == 8 and v.isdigit()):
            error = f"{key.replace('_', ' ')}: a date as YYYYMMDD"
        elif v:
            values[key] = v
    state = q.get("state", "")
    if state in JOB_STATES:
        values["state"] = state
    elif state:
        error = f"state: one of {', '.join(JOB_STATES)}"
    offset = q.get("offset", "0")
    values["offset"] = int(offset) if offset.isdigit() and len(offset) < 8 else 0
    return admin_jobs.JobFilter(limit=50, **values), error


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, c: Console = Depends(console)) -> Response:
    f, error = _job_filter(request)
    total, jobs = admin_jobs.search(c.db.engine, f) if c.db is not None else (0, [])

    def page(offset: int) -> str:
        params = {k: v for k, v in request.query_params.items() if k not in ("offset", "msg")}
        return "/jobs?" + urllib.parse.urlencode({**params, "offset": offset})

    return render(
        request,
        "jobs.html",
        422 if error else 200,
        title="Jobs",
        section="/jobs",
        f=f,
        total=total,
        jobs=jobs,
        states=JOB_STATES,
        error=error,
        prev_url=page(max(0, f.offset - f.limit)) if f.offset else "",
        next_url=page(f.offset + f.limit) if f.offset + f.limit < total else "",
    )


def _job_id(job_id: str) -> int:
    if not job_id.isdigit() or len(job_id) > 15:
        raise HTTPException(404, "no such job")
    return int(job_id)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, c: Console = Depends(console)) -> Response:
    if c.db is None:
        raise HTTPException(503, "no database")
    jid = _job_id(job_id)
    try:
        job = admin_jobs.get(c.db.engine, jid)
    except AdminError as err:
        raise HTTPException(err.status, err.message) from None
    prov = preview.load(c.settings.node.data_dir, jid)
    return render(
        request,
        "job.html",
        title=f"Job {jid}",
        section="/jobs",
        job=job,
        previews=prov is not None,
        provenance=prov or {},
        retryable=admin_jobs.RETRYABLE,
        cancellable=admin_jobs.CANCELLABLE,
    )


@router.get("/jobs/{job_id}/preview/{which}.png")
def job_preview(job_id: str, which: str, c: Console = Depends(console)) -> Response:
    if which not in ("before", "after"):
        raise HTTPException(404, "no such preview")
    path = preview.preview_dir(c.settings.node.data_dir, _job_id(job_id)) / f"{which}.png"
    if not path.is_file():
        raise HTTPException(404, "no preview for this job")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.post("/jobs/{job_id}/{action}", response_class=HTMLResponse)
async def job_action(
    request: Request, job_id: str, action: str, c: Console = Depends(console)
) -> Response:
    if action not in ("retry", "cancel") or c.db is None:
        raise HTTPException(404, "no such action")
    data = await form_of(request)
    who = _admin_actor(request)
    jid = _job_id(job_id)
    destination = str(data.get("destination", "")).strip()[:128] or None
    try:
        if action == "retry":
            admin_jobs.retry(c.db.engine, c.db, who, jid, destination)
        else:
            admin_jobs.cancel(c.db, who, jid)
    except AdminError as err:
        return _back(f"/jobs/{jid}", err.message)
    if action == "cancel":
        return _back(f"/jobs/{jid}", "cancelled")
    return _back(
        f"/jobs/{jid}", f"sending to {destination} again" if destination else "queued again"
    )


def _changed(before: Any, after: Any) -> tuple[Any, Any]:
    """For an update, only the keys that changed (the API keeps both entries whole)."""
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return before, after
    keys = [k for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k)]
    keep = {"name", "ae_title"} & set(after)
    return (
        {k: before.get(k) for k in [*keep, *keys] if k in before},
        {k: after.get(k) for k in [*keep, *keys] if k in after},
    )


# ------------------------------------------------------------------ audit
AUDIT_KINDS = ("ae", "destination", "route", "job", "user", "association_rejected")


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, c: Console = Depends(console)) -> Response:
    q = request.query_params
    kind = q.get("kind", "") if q.get("kind", "") in AUDIT_KINDS else ""
    user = q.get("user", "")[:64] or None
    offset = int(q["offset"]) if q.get("offset", "").isdigit() and len(q["offset"]) < 8 else 0
    total, items = (
        audit_log.query(c.db.engine, kind=kind or None, user=user, limit=100, offset=offset)
        if c.db is not None
        else (0, [])
    )

    for e in items:
        e["before"], e["after"] = _changed(e["before"], e["after"])

    def page(o: int) -> str:
        return "/audit?" + urllib.parse.urlencode({"kind": kind, "user": user or "", "offset": o})

    return render(
        request,
        "audit.html",
        title="Audit",
        section="/audit",
        items=items,
        total=total,
        kinds=AUDIT_KINDS,
        kind=kind,
        user=user,
        prev_url=page(max(0, offset - 100)) if offset else "",
        next_url=page(offset + 100) if offset + 100 < total else "",
    )
