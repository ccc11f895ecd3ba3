"""What every console page uses: the Jinja templates and their filters, :func:`render`,
the posted form (bounded, CSRF-checked), the admin check and the redirect with a message."""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from dicom_node.admin.errors import Actor
from dicom_node.store.states import ExportState, JobState
from dicom_node.web.auth import CSRF_COOKIE, SESSION_COOKIE
from dicom_node.web.console import address
from dicom_node.web.context import Console, actor
from dicom_node.web.destination_form import form_fields, syntax_choices

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
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
# the states' names come from their Enums (dicom_node.store.states), in pages too
templates.env.globals.update(ExportState=ExportState, JobState=JobState)
# the destination form: every field of [[destinations]], with the config's defaults
templates.env.globals.update(destination_fields=form_fields(), transfer_syntaxes=syntax_choices())


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
