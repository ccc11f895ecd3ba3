"""Which route a series would take with the live routes and destinations, changing nothing."""

from __future__ import annotations

from typing import Any

from dicom_node.admin.errors import NotFound
from dicom_node.admin.live_config import LiveConfig
from dicom_node.admin.validation import _ROUTE_LIST, _valid_entries
from dicom_node.store import console


def dry_run(
    live: LiveConfig, facts: dict[str, Any] | None = None, series_uid: str | None = None
) -> dict[str, Any]:
    """Which route a series (by UID, from what the node recorded) or a set of attributes
    would take with the live routes and destinations; nothing is changed."""
    from dicom_node.jobs.routing import SeriesFacts, decide

    if series_uid is not None:
        r = console.series_facts(live.engine, series_uid)
        if r is None:
            raise NotFound(f"no series {series_uid} on this node")
        f = SeriesFacts(
            modality=r.modality or "",
            body_part=r.body_part or "",
            series_description=r.series_description or "",
            study_description=r.study_description or "",
            calling_ae=r.calling_ae or "",
            derived_by_srnode=bool(r.derived_by_srnode),
        )
    else:
        f = SeriesFacts(**{k: v for k, v in (facts or {}).items() if v is not None})
    routes = _valid_entries(_ROUTE_LIST, live.list_routes(), "route")
    names = [d["name"] for d in live.list_destinations()]
    d = decide(routes, f, names)
    return {
        "facts": {k: getattr(f, k) for k in f.__dataclass_fields__},
        "action": d.action,
        "route": d.route,
        "model": d.model,
        "destinations": list(d.destinations),
        "reason": d.reason,
    }
