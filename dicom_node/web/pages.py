"""The console's pages: server-rendered (Jinja), plain forms with CSRF tokens, no scripts.

Every form goes through the same :mod:`dicom_node.admin` functions as the API; a refused
change re-renders the form with what was typed and the reason.

This module: log in, log out and the dashboard. The configuration pages (AE titles,
destinations, routes) are in :mod:`dicom_node.web.config_pages`, jobs and the audit log in
:mod:`dicom_node.web.job_pages`; what they share in :mod:`dicom_node.web.render`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from dicom_node.web.auth import SESSION_COOKIE
from dicom_node.web.console import dashboard_data
from dicom_node.web.context import Console, console
from dicom_node.web.render import form_of, render

router = APIRouter(include_in_schema=False)
REFRESH_SECONDS = 15


# ------------------------------------------------------------------ login
@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: Annotated[str, Query(max_length=512)] = "/") -> Response:
    return render(request, "login.html", title="Log in", next=_safe_next(next), login_page=True)


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
            login_page=True,
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
