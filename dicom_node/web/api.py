"""The REST API under ``/api``: allowed AEs, destinations (with a test), routes (with a dry
run), jobs (search, retry, cancel), models and the audit log. Changes go through
:mod:`dicom_node.admin` (the same functions as the CLI) and apply at once."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import BaseModel, Field

from dicom_node.admin import jobs as admin_jobs
from dicom_node.admin.dry_run import dry_run
from dicom_node.admin.errors import Actor, AdminError
from dicom_node.admin.live_config import LiveConfig
from dicom_node.admin.probe import test_destination
from dicom_node.config import Settings
from dicom_node.store import audit as audit_log
from dicom_node.store.states import JOB_STATES
from dicom_node.web.context import Console, actor, console, database, live

router = APIRouter(prefix="/api")

DestinationBody = get_args(Settings.model_fields["destinations"].annotation)[0]
RouteBody = get_args(Settings.model_fields["routes"].annotation)[0]

Name = Annotated[str, Path(min_length=1, max_length=128)]
AEPath = Annotated[str, Path(min_length=1, max_length=16)]
JobId = Annotated[int, Path(ge=1, le=2**53)]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
Date = Annotated[str | None, Query(pattern=r"^\d{8}$", description="YYYYMMDD")]
Short = Annotated[str | None, Query(max_length=64)]
Uid = Annotated[str | None, Query(max_length=64, pattern=r"^[0-9.]+$")]
HostQuery = Annotated[str | None, Query(max_length=255)]


class AEIn(BaseModel):
    ae_title: str = Field(min_length=1, max_length=16)
    host: str | None = Field(None, max_length=255, description="null or '*' = any host")


class AEOut(BaseModel):
    ae_title: str
    host: str | None
    created_at: float | None = None


class DryRunIn(BaseModel):
    series_uid: str | None = Field(None, max_length=64, description="a series the node holds")
    modality: str | None = Field(None, max_length=16)
    body_part: str | None = Field(None, max_length=64)
    series_description: str | None = Field(None, max_length=256)
    study_description: str | None = Field(None, max_length=256)
    calling_ae: str | None = Field(None, max_length=16)


class DryRunOut(BaseModel):
    facts: dict[str, Any]
    action: str
    route: str | None
    model: str | None
    destinations: list[str]
    reason: str


class TestOut(BaseModel):
    ok: bool
    kind: str
    detail: str
    ms: float


class Page(BaseModel):
    total: int
    items: list[dict[str, Any]]


def _admin(who: Actor = Depends(actor)) -> Actor:
    if not who.is_admin:
        raise HTTPException(403, "read-only users cannot change anything")
    return who


def _run(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except AdminError as e:
        raise HTTPException(e.status, e.message) from None


# ---------------------------------------------------------------- allowed AEs
@router.get("/aets", response_model=list[AEOut], tags=["AE titles"])
def list_aets(lc: LiveConfig = Depends(live)) -> Any:
    """Calling AE titles the node accepts (an AE with no host: from any host)."""
    return lc.list_aes()


@router.post("/aets", status_code=201, response_model=AEOut, tags=["AE titles"])
def add_aet(body: AEIn, lc: LiveConfig = Depends(live), who: Actor = Depends(_admin)) -> Any:
    """Allow a calling AE; it is accepted from the next association on."""
    return _run(lc.add_ae, who, body.ae_title, body.host)


@router.put("/aets/{ae_title}", response_model=AEOut, tags=["AE titles"])
def update_aet(
    ae_title: AEPath,
    body: AEIn,
    host: HostQuery = None,
    lc: LiveConfig = Depends(live),
    who: Actor = Depends(_admin),
) -> Any:
    """Change an allowed AE (its title or host); ``host`` names the entry where an AE is
    allowed from several hosts."""
    return _run(lc.update_ae, who, ae_title, host, body.ae_title, body.host)


@router.delete("/aets/{ae_title}", status_code=204, tags=["AE titles"])
def delete_aet(
    ae_title: AEPath,
    host: HostQuery = None,
    lc: LiveConfig = Depends(live),
    who: Actor = Depends(_admin),
) -> Response:
    """Stop accepting a calling AE (from every host, unless ``host`` is given)."""
    _run(lc.delete_ae, who, ae_title, host)
    return Response(status_code=204)


# ---------------------------------------------------------------- destinations
@router.get("/destinations", tags=["destinations"])
def list_destinations(lc: LiveConfig = Depends(live)) -> list[dict[str, Any]]:
    """Where derived series are sent: DIMSE (C-STORE) and DICOMweb (STOW-RS)."""
    return lc.list_destinations()


@router.post("/destinations", status_code=201, tags=["destinations"])
def add_destination(
    body: DestinationBody, lc: LiveConfig = Depends(live), who: Actor = Depends(_admin)
) -> dict[str, Any]:
    return _run(lc.add_destination, who, body.model_dump(mode="json", exclude_none=True))


@router.get("/destinations/{name}", tags=["destinations"])
def get_destination(name: Name, lc: LiveConfig = Depends(live)) -> dict[str, Any]:
    return _run(lc.get_destination, name)


@router.put("/destinations/{name}", tags=["destinations"])
def update_destination(
    name: Name,
    body: DestinationBody,
    lc: LiveConfig = Depends(live),
    who: Actor = Depends(_admin),
) -> dict[str, Any]:
    return _run(lc.update_destination, who, name, body.model_dump(mode="json", exclude_none=True))


@router.delete("/destinations/{name}", status_code=204, tags=["destinations"])
def delete_destination(
    name: Name, lc: LiveConfig = Depends(live), who: Actor = Depends(_admin)
) -> Response:
    _run(lc.delete_destination, who, name)
    return Response(status_code=204)


@router.post("/destinations/{name}/test", response_model=TestOut, tags=["destinations"])
def test_destination_api(
    name: Name,
    lc: LiveConfig = Depends(live),
    c: Console = Depends(console),
    who: Actor = Depends(_admin),
) -> Any:
    """C-ECHO a DIMSE destination, or a QIDO-RS ping (``GET {url}/studies?limit=1``) for a
    STOW-RS one. ``ok`` false with the reason when the peer does not answer."""
    dest = _run(lc.destination, name)
    return test_destination(dest, c.settings.node.ae_title)


# ---------------------------------------------------------------- routes
@router.get("/routes", tags=["routes"])
def list_routes(lc: LiveConfig = Depends(live)) -> list[dict[str, Any]]:
    """The routing rules in order: the first that matches a series decides."""
    return lc.list_routes()


@router.post("/routes", status_code=201, tags=["routes"])
def add_route(
    body: RouteBody,
    position: Annotated[int | None, Query(ge=0, le=10_000)] = None,
    lc: LiveConfig = Depends(live),
    who: Actor = Depends(_admin),
) -> dict[str, Any]:
    """Add a rule (at the end, or at ``position``)."""
    return _run(lc.add_route, who, body.model_dump(mode="json", exclude_none=True), position)


@router.post("/routes/dry-run", response_model=DryRunOut, tags=["routes"])
def route_dry_run(body: DryRunIn, lc: LiveConfig = Depends(live)) -> Any:
    """Which route a series (by ``series_uid``) or a set of attributes would take now."""
    facts = body.model_dump(exclude={"series_uid"})
    return _run(dry_run, lc, facts, body.series_uid)


@router.get("/routes/{name}", tags=["routes"])
def get_route(name: Name, lc: LiveConfig = Depends(live)) -> dict[str, Any]:
    return _run(lc.get_route, name)


@router.put("/routes/{name}", tags=["routes"])
def update_route(
    name: Name, body: RouteBody, lc: LiveConfig = Depends(live), who: Actor = Depends(_admin)
) -> dict[str, Any]:
    return _run(lc.update_route, who, name, body.model_dump(mode="json", exclude_none=True))


class MoveIn(BaseModel):
    position: int = Field(ge=0, le=10_000, description="0: first; past the end: last")


@router.post("/routes/{name}/move", tags=["routes"])
def move_route(
    name: Name, body: MoveIn, lc: LiveConfig = Depends(live), who: Actor = Depends(_admin)
) -> list[str]:
    """Put a rule at ``position`` (the first that matches decides); answers the new order."""
    return _run(lc.move_route, who, name, body.position)


@router.delete("/routes/{name}", status_code=204, tags=["routes"])
def delete_route(
    name: Name, lc: LiveConfig = Depends(live), who: Actor = Depends(_admin)
) -> Response:
    _run(lc.delete_route, who, name)
    return Response(status_code=204)


# ---------------------------------------------------------------- jobs
State = Annotated[Literal[JOB_STATES] | None, Query()]  # type: ignore[valid-type]


@router.get("/jobs", response_model=Page, tags=["jobs"])
def list_jobs(
    state: State = None,
    study_uid: Uid = None,
    series_uid: Uid = None,
    modality: Annotated[str | None, Query(max_length=16)] = None,
    accession: Annotated[str | None, Query(max_length=16)] = None,
    description: Short = None,
    study_date_from: Date = None,
    study_date_to: Date = None,
    limit: Limit = 50,
    offset: Offset = 0,
    db: Any = Depends(database),
) -> Any:
    """Jobs, newest first, filtered by state, study, series, modality, accession number,
    description (series or study, a substring) and study date (YYYYMMDD, inclusive)."""
    f = admin_jobs.JobFilter(
        state=state,
        study_uid=study_uid,
        series_uid=series_uid,
        modality=modality,
        accession=accession,
        description=description,
        study_date_from=study_date_from,
        study_date_to=study_date_to,
        limit=limit,
        offset=offset,
    )
    total, items = admin_jobs.search(db.engine, f)
    return {"total": total, "items": items}


@router.get("/jobs/{job_id}", tags=["jobs"])
def get_job(job_id: JobId, db: Any = Depends(database)) -> dict[str, Any]:
    """One job: its series, route, model, exports and (when derived) its provenance."""
    return _run(admin_jobs.get, db.engine, job_id)


@router.post("/jobs/{job_id}/retry", tags=["jobs"])
def retry_job(
    job_id: JobId,
    destination: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    db: Any = Depends(database),
    who: Actor = Depends(_admin),
) -> dict[str, Any]:
    """Queue a failed, skipped or done job again (fresh attempts, every destination); with
    ``destination``, a failed job sends its derived series to that destination alone."""
    return _run(admin_jobs.retry, db.engine, db, who, job_id, destination)


@router.post("/jobs/{job_id}/cancel", tags=["jobs"])
def cancel_job(
    job_id: JobId, db: Any = Depends(database), who: Actor = Depends(_admin)
) -> dict[str, Any]:
    """Stop a waiting or running job (it becomes skipped, reason: cancelled)."""
    return _run(admin_jobs.cancel, db, who, job_id)


# ---------------------------------------------------------------- models
@router.get("/models", tags=["models"])
def list_models(c: Console = Depends(console)) -> dict[str, Any]:
    """Model cards (with their held-out metrics and training data), the model each
    modality gets by default, the configured backend and, with ``auto``, the path it
    chose on this host for each model it has loaded (``engines``, newest first)."""
    from dicom_node.jobs import warmup
    from dicom_node.jobs.engines import cached_choices, node_cache_dir
    from sr_engine.registry import DEFAULT_FOR_MODALITY, GENERAL_MODEL
    from sr_engine.registry import list_models as cards

    found = cards(model_dirs=tuple(c.settings.engine.model_dirs))
    return {
        "backend": c.settings.engine.backend,
        "warm_up": warmup.status(),
        "engines": cached_choices(node_cache_dir(c.settings.node.data_dir)),
        "default_for_modality": {**DEFAULT_FOR_MODALITY, "*": GENERAL_MODEL},
        "models": [
            {**card.model_dump(mode="json"), "card_path": str(path)} for card, path in found
        ],
    }


# ---------------------------------------------------------------- audit
@router.get("/audit", response_model=Page, tags=["audit"])
def list_audit(
    kind: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_.]+$")] = None,
    user: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    db: Any = Depends(database),
) -> Any:
    """Who changed what and when (before and after), and refused associations; newest first.
    ``kind`` is a prefix (``destination``, ``ae``, ``route``, ``job``, ``user``)."""
    total, items = audit_log.query(
        db.engine, kind=kind, user=user, since=since, limit=limit, offset=offset
    )
    return {"total": total, "items": items}


@router.get("/status", tags=["status"])
def api_status(limit: Limit = 20, c: Console = Depends(console)) -> dict[str, Any]:
    """Queue counts, recent jobs and exports (what ``srnode status --json`` shows)."""
    from dicom_node.web.console import status_data

    return status_data(c, limit)
