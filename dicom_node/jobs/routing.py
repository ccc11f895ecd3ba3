"""Routing rules: which series are enhanced, with which model, and where the result goes.

A series is described by its :class:`~dicom_node.receive.series_header.SeriesHeader`, taken
from the header of its first instance at receive and stored with the series (so a new
criterion needs no schema change: a ``SeriesHeader`` field naming its header keyword, a
``Route`` field in the config and one function in :data:`MATCHERS`).
:func:`decide` walks the configured routes in order and the first one that matches wins.
A series no route matches is skipped, and the decision says why. With no routes configured
at all, every image series is enhanced with its modality's model and sent to every
destination.

Series that srnode derived itself are never routed again (``SeriesHeader.derived_by_srnode``,
:func:`~dicom_node.receive.series_header.is_srnode_derived`), so a PACS that sends
everything back to us cannot start a loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from dicom_node.config_routing import Route
from dicom_node.receive.series_header import SeriesHeader

#: Modalities that carry no image to enhance; with no routes configured they are skipped.
NON_IMAGE_MODALITIES = frozenset(
    {"SR", "PR", "KO", "SEG", "REG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "DOC"}
)

Action = Literal["enhance", "ignore", "skip"]


@dataclass(frozen=True)
class RouteDecision:
    """``enhance``: run ``model`` (None = the modality's default) and send to
    ``destinations``; ``ignore``: a route said so; ``skip``: nothing matched (see
    ``reason``)."""

    action: Action
    route: str | None
    model: str | None
    destinations: list[str] = field(default_factory=list)
    reason: str = ""


def _norm(s: str) -> str:
    return s.strip().upper()


def _in(value: str, allowed: Sequence[str]) -> bool:
    """Empty ``allowed`` matches anything; otherwise a case-insensitive exact match."""
    return not allowed or _norm(value) in {_norm(a) for a in allowed}


def _search(pattern: str | None, value: str) -> bool:
    return pattern is None or re.search(pattern, value, re.IGNORECASE) is not None


#: one match function per route criterion (a ``Route`` field of the same name); an
#: empty criterion matches anything
MATCHERS: dict[str, Callable[[Any, SeriesHeader], bool]] = {
    "modality": lambda want, f: _in(f.modality, want),
    "body_part": lambda want, f: _in(f.body_part, want),
    "calling_ae": lambda want, f: _in(f.calling_ae, want),
    "series_description": lambda want, f: _search(want, f.series_description),
    "study_description": lambda want, f: _search(want, f.study_description),
}


def route_matches(route: Route, facts: SeriesHeader) -> bool:
    """True when every condition the route sets holds for the series."""
    return all(match(getattr(route, name), facts) for name, match in MATCHERS.items())


def _describe(facts: SeriesHeader) -> str:
    parts = [f"modality={facts.modality or '-'}"]
    if facts.body_part:
        parts.append(f"body_part={facts.body_part}")
    if facts.calling_ae:
        parts.append(f"calling_ae={facts.calling_ae}")
    return " ".join(parts)


def decide(
    routes: Sequence[Route], facts: SeriesHeader, destination_names: Iterable[str]
) -> RouteDecision:
    """The first route that matches ``facts`` decides; see the module docstring.

    ``destination_names`` are the configured destinations in order. A route's empty
    ``destinations`` means all of them; names a route lists that are not configured are
    dropped (and said in ``reason``); a route left with none is skipped.
    """
    known = list(dict.fromkeys(destination_names))
    if facts.derived_by_srnode:
        return RouteDecision("skip", None, None, [], "series was derived by srnode")
    if not routes:
        if _norm(facts.modality) in NON_IMAGE_MODALITIES:
            return RouteDecision(
                "skip", None, None, [], f"no routes configured and {facts.modality} has no image"
            )
        if not known:
            return RouteDecision("skip", None, None, [], "no destinations configured")
        return RouteDecision(
            "enhance", None, None, known, "no routes configured: enhance every image series"
        )
    for route in routes:
        if not route_matches(route, facts):
            continue
        if route.action == "ignore":
            return RouteDecision("ignore", route.name, None, [], f"route {route.name!r}: ignore")
        wanted = list(route.destinations) or known
        dests = [d for d in wanted if d in known]
        unknown = [d for d in wanted if d not in known]
        note = f" (unknown destinations dropped: {', '.join(unknown)})" if unknown else ""
        if not dests:
            return RouteDecision(
                "skip", route.name, route.model, [], f"route {route.name!r}: no destination{note}"
            )
        return RouteDecision(
            "enhance", route.name, route.model, dests, f"route {route.name!r} matched{note}"
        )
    return RouteDecision("skip", None, None, [], f"no route matched ({_describe(facts)})")
