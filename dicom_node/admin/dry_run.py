"""Which route a series would take with the live routes and destinations, changing nothing.
A received series is routed on its stored header, the very facts real routing reads."""

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
    from dicom_node.jobs.routing import MATCHERS, decide
    from dicom_node.receive.series_header import SeriesHeader

    if series_uid is not None:
        r = console.series_header(live.engine, series_uid)
        if r is None:
            raise NotFound(f"no series {series_uid} on this node")
        f = SeriesHeader.from_stored(r)  # what real routing reads (jobs.stability)
    else:
        f = SeriesHeader(**{k: v for k, v in (facts or {}).items() if v is not None})
    routes = _valid_entries(_ROUTE_LIST, live.list_routes(), "route")
    names = [d["name"] for d in live.list_destinations()]
    d = decide(routes, f, names)
    return {
        # what routing looks at (not the catalog's facts the header also holds)
        "facts": {k: getattr(f, k) for k in (*MATCHERS, "derived_by_srnode")},
        "action": d.action,
        "route": d.route,
        "model": d.model,
        "destinations": list(d.destinations),
        "reason": d.reason,
    }
