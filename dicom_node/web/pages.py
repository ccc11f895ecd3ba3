"""The console's pages: server-rendered (Jinja), plain forms with CSRF tokens, no scripts.

Every form goes through the same :mod:`dicom_node.admin` functions as the API; a refused
change re-renders the form with what was typed and the reason."""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from dicom_node.admin import audit as audit_log
from dicom_node.admin import jobs as admin_jobs
from dicom_node.admin.dry_run import dry_run
from dicom_node.admin.errors import Actor, AdminError
from dicom_node.admin.probe import test_destination
from dicom_node.derive import preview
from dicom_node.jobs.states import JOB_STATES
from dicom_node.web.auth import CSRF_COOKIE, SESSION_COOKIE
from dicom_node.web.console import address, dashboard_data
from dicom_node.web.context import Console, actor, console

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
REFRESH_SECONDS = 15
MAX_FORM_BYTES = 64 * 1024


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _ago(t: float | None) -> str:
    if not t:
        return "-"
    dt = time.time() - float(t)
    if dt < 0:
        return f"in {-dt:.0f} s"
    if dt < 120:
        return f"{dt:.0f} s ago"
    if dt < 7200:
        return f"{dt / 60:.0f} min ago"
    return f"{dt / 3600:.1f} h ago"


def _dicom_date(v: str | None) -> str:
    return f"{v[:4]}-{v[4:6]}-{v[6:8]}" if v and len(v) == 8 else "-"


def _conditions(r: dict[str, Any]) -> str:
    parts = []
    for key in ("modality", "body_part", "calling_ae"):
        if r.get(key):
            parts.append(f"{key}={'|'.join(r[key])}")
    for key in ("series_description", "study_description"):
        if r.get(key):
            parts.append(f"{key}~/{r[key]}/")
    return ", ".join(parts) or "any series"


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


def _compact(v: Any) -> str:
    if v is None:
        return ""
    return json.dumps(v, separators=(", ", ": "), default=str)[:400]


templates.env.filters.update(
    when=_when,
    ago=_ago,
    dicom_date=_dicom_date,
    address=address,
    conditions=_conditions,
    compact=_compact,
    basename=lambda p: Path(str(p)).stem if p else "-",
)


def render(request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    c: Console = request.app.state.console
    who = actor(request)
    cookie = request.cookies.get(CSRF_COOKIE) or request.state.csrf_cookie
    base = {
        "ae_title": c.settings.node.ae_title,
        "who": who,
        "logged_in": SESSION_COOKIE in request.cookies,
        "csrf": c.auth.csrf_token(cookie),
        "msg": request.query_params.get("msg", "")[:200],
        "error": "",
        "refresh": 0,
        "form": {},
    }
    base.update(ctx)
    return templates.TemplateResponse(request, template, base, status_code=status)


def _back(path: str, msg: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?{urllib.parse.urlencode({'msg': msg})}", status_code=303)


async def form_of(request: Request) -> dict[str, Any]:
    """The posted form (bounded), after its CSRF token was checked."""
    c: Console = request.app.state.console
    form = await request.form(max_files=0, max_fields=200, max_part_size=MAX_FORM_BYTES)
    data: dict[str, Any] = {}
    for k, v in form.multi_items():
        if not isinstance(v, str):
            continue
        if k in data:
            data[k] = [*data[k], v] if isinstance(data[k], list) else [data[k], v]
        else:
            data[k] = v
    if not c.auth.csrf_ok(request.cookies.get(CSRF_COOKIE), str(data.get("csrf", ""))):
        raise HTTPException(403, "the form has expired or did not come from this console: reload")
    return data


def _admin_actor(request: Request) -> Actor:
    who = actor(request)
    if not who.is_admin:
        raise HTTPException(403, "read-only users cannot change anything")
    return who


# ------------------------------------------------------------------ login
@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: Annotated[str, Query(max_length=512)] = "/") -> Response:
    return render(request, "login.html", title="Log in", next=_safe_next(next))


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    c: Console = request.app.state.console
    data = await form_of(request)
    address = request.client.host if request.client else None
    who = c.auth.login(str(data.get("user", ""))[:64], str(data.get("password", ""))[:256], address)
    if who is None:
        return render(
            request,
            "login.html",
            401,
            title="Log in",
            error="wrong user or password",
            next=_safe_next(str(data.get("next", "/"))),
        )
    resp = RedirectResponse(_safe_next(str(data.get("next", "/"))), status_code=303)
    resp.set_cookie(
        SESSION_COOKIE,
        c.auth.session_cookie(who),
        httponly=True,
        samesite="strict",
        max_age=12 * 3600,
    )
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    await form_of(request)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE)
    return resp


# ------------------------------------------------------------------ dashboard
@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, c: Console = Depends(console)) -> Response:
    return render(
        request,
        "dashboard.html",
        title="Dashboard",
        section="/",
        refresh=REFRESH_SECONDS,
        **dashboard_data(c),
    )


# ------------------------------------------------------------------ AE titles
def _aets_page(request: Request, c: Console, status: int = 200, **ctx: Any) -> Response:
    aets = c.live.list_aes() if c.live else []
    return render(
        request, "aets.html", status, title="AE titles", section="/aets", aets=aets, **ctx
    )


@router.get("/aets", response_class=HTMLResponse)
def aets_page(request: Request, c: Console = Depends(console)) -> Response:
    return _aets_page(request, c)


def _live(c: Console) -> Any:
    if c.live is None:
        raise HTTPException(503, "no database: the live configuration is not available")
    return c.live


@router.post("/aets", response_class=HTMLResponse)
async def aets_add(request: Request, c: Console = Depends(console)) -> Response:
    data = await form_of(request)
    who = _admin_actor(request)
    try:
        e = _live(c).add_ae(who, str(data.get("ae_title", "")), str(data.get("host", "")) or None)
    except AdminError as err:
        return _aets_page(request, c, 422, error=err.message, form=data)
    return _back("/aets", f"{e['ae_title']} is allowed from {e['host'] or 'any host'}")


@router.post("/aets/edit", response_class=HTMLResponse)
async def aets_edit(request: Request, c: Console = Depends(console)) -> Response:
    data = await form_of(request)
    who = _admin_actor(request)
    try:
        _live(c).update_ae(
            who,
            str(data.get("old_ae_title", "")),
            str(data.get("old_host", "")),
            str(data.get("ae_title", "")),
            str(data.get("host", "")) or None,
        )
    except AdminError as err:
        return _aets_page(request, c, 422, error=err.message)
    return _back("/aets", "saved")


@router.post("/aets/delete", response_class=HTMLResponse)
async def aets_delete(request: Request, c: Console = Depends(console)) -> Response:
    data = await form_of(request)
    who = _admin_actor(request)
    try:
        _live(c).delete_ae(who, str(data.get("ae_title", "")), str(data.get("host", "")))
    except AdminError as err:
        return _aets_page(request, c, 422, error=err.message)
    return _back("/aets", f"{data.get('ae_title')} removed")


# ------------------------------------------------------------------ destinations
def _destination_form(data: dict[str, Any]) -> dict[str, Any]:
    """Form fields -> a destination entry (empty fields left out; numbers converted)."""
    out: dict[str, Any] = {
        "name": str(data.get("name", "")).strip(),
        "kind": str(data.get("kind", "dimse")),
    }
    if out["kind"] == "dimse":
        for key in ("ae_title", "host"):
            if str(data.get(key, "")).strip():
                out[key] = str(data[key]).strip()
    elif str(data.get("url", "")).strip():
        out["url"] = str(data["url"]).strip()
    out["tls"] = bool(data.get("tls"))
    for key, cast in (
        ("port", int),
        ("max_attempts", int),
        ("backoff_initial", float),
        ("backoff_max", float),
    ):
        v = str(data.get(key, "")).strip()
        if not v or (key == "port" and out["kind"] != "dimse"):
            continue
        try:
            out[key] = cast(v)
        except ValueError:
            raise AdminError(f"{key}: {v[:20]!r} is not a number") from None
    return out


def _destinations_page(request: Request, c: Console, status: int = 200, **ctx: Any) -> Response:
    dests = c.live.list_destinations() if c.live else []
    return render(
        request,
        "destinations.html",
        status,
        title="Destinations",
        section="/destinations",
        destinations=dests,
        **ctx,
    )


@router.get("/destinations", response_class=HTMLResponse)
def destinations_page(request: Request, c: Console = Depends(console)) -> Response:
    return _destinations_page(request, c)


@router.post("/destinations", response_class=HTMLResponse)
async def destinations_add(request: Request, c: Console = Depends(console)) -> Response:
    data = await form_of(request)
    who = _admin_actor(request)
    try:
        d = _live(c).add_destination(who, _destination_form(data))
    except AdminError as err:
        return _destinations_page(request, c, 422, error=err.message, form=data)
    return _back("/destinations", f"destination {d['name']} added")


@router.get("/destinations/{name}", response_class=HTMLResponse)
def destination_page(request: Request, name: str, c: Console = Depends(console)) -> Response:
    if len(name) > 128:
        raise HTTPException(404, "no such destination")
    try:
        form = _live(c).get_destination(name)
    except AdminError as err:
        raise HTTPException(err.status, err.message) from None
    return render(
        request, "destination.html", title=name, section="/destinations", name=name, form=form
    )


@router.post("/destinations/{name}", response_class=HTMLResponse)
async def destination_save(request: Request, name: str, c: Console = Depends(console)) -> Response:
    data = await form_of(request)
    who = _admin_actor(request)
    try:
        d = _live(c).update_destination(who, name[:128], _destination_form(data))
    except AdminError as err:
        return render(
            request,
            "destination.html",
            422,
            title=name,
            section="/destinations",
            name=name,
            form=data,
            error=err.message,
        )
    return _back("/destinations", f"destination {d['name']} saved")


@router.post("/destinations/{name}/delete", response_class=HTMLResponse)
async def destination_delete(
    request: Request, name: str, c: Console = Depends(console)
) -> Response:
    await form_of(request)
    who = _admin_actor(request)
    try:
        _live(c).delete_destination(who, name[:128])
    except AdminError as err:
        return _destinations_page(request, c, err.status, error=err.message)
    return _back("/destinations", f"destination {name} deleted")


@router.post("/destinations/{name}/test", response_class=HTMLResponse)
async def destination_test(request: Request, name: str, c: Console = Depends(console)) -> Response:
    await form_of(request)
    _admin_actor(request)
    try:
        dest = _live(c).destination(name[:128])
    except AdminError as err:
        return _destinations_page(request, c, err.status, error=err.message)
    from fastapi.concurrency import run_in_threadpool

    r = await run_in_threadpool(test_destination, dest, c.settings.node.ae_title)
    if r["ok"]:
        return _destinations_page(request, c, msg=f"{name}: {r['detail']} in {r['ms']:.0f} ms")
    return _destinations_page(request, c, error=f"{name}: {r['detail']}")


# ------------------------------------------------------------------ routes
def _split(v: Any) -> list[str]:
    return [p.strip() for p in str(v or "").replace(";", ",").split(",") if p.strip()]


def _route_form(data: dict[str, Any]) -> dict[str, Any]:
    dests = data.get("destinations", [])
    out: dict[str, Any] = {
        "name": str(data.get("name", "")).strip(),
        "action": str(data.get("action", "enhance")),
        "modality": [m.upper() for m in _split(data.get("modality"))],
        "body_part": [b.upper() for b in _split(data.get("body_part"))],
        "calling_ae": _split(data.get("calling_ae")),
        "destinations": dests if isinstance(dests, list) else [dests],
    }
    for key in ("series_description", "study_description", "model"):
        if str(data.get(key, "")).strip():
            out[key] = str(data[key]).strip()
    return out


def _routes_page(request: Request, c: Console, status: int = 200, **ctx: Any) -> Response:
    routes = c.live.list_routes() if c.live else []
    names = [d["name"] for d in c.live.list_destinations()] if c.live else []
    ctx.setdefault("dry", {})
    return render(
        request,
        "routes.html",
        status,
        title="Routes",
        section="/routes",
        routes=routes,
        destination_names=names,
        **ctx,
    )


@router.get("/routes", response_class=HTMLResponse)
def routes_page(request: Request, c: Console = Depends(console)) -> Response:
    return _routes_page(request, c)


@router.post("/routes", response_class=HTMLResponse)
async def routes_add(request: Request, c: Console = Depends(console)) -> Response:
    data = await form_of(request)
    who = _admin_actor(request)
    form = _route_form(data)
    try:
        r = _live(c).add_route(who, form)
    except AdminError as err:
        return _routes_page(request, c, 422, error=err.message, form=form)
    return _back("/routes", f"route {r['name']} added")


@router.post("/routes/dry-run", response_class=HTMLResponse)
async def routes_dry_run(request: Request, c: Console = Depends(console)) -> Response:
    data = await form_of(request)
    keys = ("modality", "body_part", "series_description", "calling_ae")
    facts = {k: str(data.get(k, ""))[:256] for k in keys}
    uid = str(data.get("series_uid", "")).strip()[:64] or None
    try:
        decision = dry_run(_live(c), facts, uid)
    except AdminError as err:
        return _routes_page(request, c, err.status, error=err.message, dry=data)
    return _routes_page(request, c, decision=decision, dry=data)


@router.get("/routes/{name}", response_class=HTMLResponse)
def route_page(request: Request, name: str, c: Console = Depends(console)) -> Response:
    try:
        form = _live(c).get_route(name[:128])
    except AdminError as err:
        raise HTTPException(err.status, err.message) from None
    names = [d["name"] for d in _live(c).list_destinations()]
    return render(
        request,
        "route.html",
        title=name,
        section="/routes",
        name=name,
        form=form,
        destination_names=names,
    )


@router.post("/routes/{name}", response_class=HTMLResponse)
async def route_save(request: Request, name: str, c: Console = Depends(console)) -> Response:
    data = await form_of(request)
    who = _admin_actor(request)
    form = _route_form(data)
    try:
        r = _live(c).update_route(who, name[:128], form)
    except AdminError as err:
        names = [d["name"] for d in _live(c).list_destinations()]
        return render(
            request,
            "route.html",
            422,
            title=name,
            section="/routes",
            name=name,
            form=form,
            destination_names=names,
            error=err.message,
        )
    return _back("/routes", f"route {r['name']} saved")


@router.post("/routes/{name}/delete", response_class=HTMLResponse)
async def route_delete(request: Request, name: str, c: Console = Depends(console)) -> Response:
    await form_of(request)
    who = _admin_actor(request)
    try:
        _live(c).delete_route(who, name[:128])
    except AdminError as err:
        return _routes_page(request, c, err.status, error=err.message)
    return _back("/routes", f"route {name} deleted")


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
    await form_of(request)
    who = _admin_actor(request)
    jid = _job_id(job_id)
    try:
        if action == "retry":
            admin_jobs.retry(c.db.engine, c.db, who, jid)
        else:
            admin_jobs.cancel(c.db, who, jid)
    except AdminError as err:
        return _back(f"/jobs/{jid}", err.message)
    return _back(f"/jobs/{jid}", "queued again" if action == "retry" else "cancelled")


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
