"""The console's configuration pages: AE titles, destinations (with a connection test)
and routes (with a dry run). Each change goes through the live configuration, as the API's."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from dicom_node.admin.dry_run import dry_run
from dicom_node.admin.errors import AdminError, Invalid
from dicom_node.admin.probe import test_destination
from dicom_node.web.context import Console, console
from dicom_node.web.destination_form import destination_entry
from dicom_node.web.render import _admin_actor, _back, form_of, render

router = APIRouter(include_in_schema=False)


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
        d = _live(c).add_destination(who, destination_entry(data))
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
        d = _live(c).update_destination(who, name[:128], destination_entry(data))
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
    raw_position = str(data.get("position", "")).strip()
    try:
        position = _position(raw_position)
        r = _live(c).add_route(who, form, position)
    except AdminError as err:
        return _routes_page(
            request, c, err.status, error=err.message, form={**form, "position": raw_position}
        )
    return _back("/routes", f"route {r['name']} added")


def _position(value: str) -> int | None:
    """The form's 1-based position (empty: last) as the 0-based one of the live routes."""
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        raise Invalid(f"position: {value[:20]!r} is not a number") from None
    if not 1 <= n <= 10_001:
        raise Invalid("position: 1 to 10001")
    return n - 1


@router.post("/routes/{name}/move", response_class=HTMLResponse)
async def route_move(request: Request, name: str, c: Console = Depends(console)) -> Response:
    data = await form_of(request)
    who = _admin_actor(request)
    try:
        position = int(str(data.get("position", "")))
    except ValueError:
        return _routes_page(request, c, 422, error="position: not a number")
    try:
        order = _live(c).move_route(who, name[:128], position)
    except AdminError as err:
        return _routes_page(request, c, err.status, error=err.message)
    return _back("/routes", f"route {name} is now number {order.index(name[:128]) + 1}")


@router.post("/routes/dry-run", response_class=HTMLResponse)
async def routes_dry_run(request: Request, c: Console = Depends(console)) -> Response:
    data = await form_of(request)
    keys = ("modality", "body_part", "series_description", "study_description", "calling_ae")
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
