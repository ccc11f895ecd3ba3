"""Routing rules: which series are enhanced, with which model, and where the result goes.

A series that became stable is described by :class:`SeriesFacts`; :func:`decide` walks the
configured routes in order and the first one that matches wins. A series no route matches
is skipped, and the decision says why. With no routes configured at all, every image
series is enhanced with its modality's model and sent to every destination.

Series that srnode derived itself are never routed again (:func:`is_srnode_derived`), so a
PACS that sends everything back to us cannot start a loop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydicom.dataset import Dataset

from dicom_node.config import Route

#: Manufacturer written into the ContributingEquipmentSequence item of derived series
#: (``derive.manufacturer`` in the config; this is its default).
SRNODE_MANUFACTURER = "srnode"

#: Modalities that carry no image to enhance; with no routes configured they are skipped.
NON_IMAGE_MODALITIES = frozenset(
    {"SR", "PR", "KO", "SEG", "REG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "DOC"}
)

Action = Literal["enhance", "ignore", "skip"]


@dataclass(frozen=True)
class SeriesFacts:
    """What routing looks at, taken from the first instance of a series."""

    modality: str = ""
    body_part: str = ""
    series_description: str = ""
    study_description: str = ""
    calling_ae: str = ""
    derived_by_srnode: bool = False

    @classmethod
    def from_dataset(cls, ds: Dataset, calling_ae: str = "") -> SeriesFacts:
        """Facts of the series ``ds`` belongs to (header only is enough)."""
        return cls(
            modality=str(ds.get("Modality", "") or ""),
            body_part=str(ds.get("BodyPartExamined", "") or ""),
            series_description=str(ds.get("SeriesDescription", "") or ""),
            study_description=str(ds.get("StudyDescription", "") or ""),
            calling_ae=calling_ae,
            derived_by_srnode=is_srnode_derived(ds),
        )


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


def route_matches(route: Route, facts: SeriesFacts) -> bool:
    """True when every condition the route sets holds for the series."""
    return (
        _in(facts.modality, route.modality)
        and _in(facts.body_part, route.body_part)
        and _in(facts.calling_ae, route.calling_ae)
        and _search(route.series_description, facts.series_description)
        and _search(route.study_description, facts.study_description)
    )


def _describe(facts: SeriesFacts) -> str:
    parts = [f"modality={facts.modality or '-'}"]
    if facts.body_part:
        parts.append(f"body_part={facts.body_part}")
    if facts.calling_ae:
        parts.append(f"calling_ae={facts.calling_ae}")
    return " ".join(parts)


def decide(
    routes: Sequence[Route], facts: SeriesFacts, destination_names: Iterable[str]
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


def _text(value: object) -> str:
    return str(value or "").strip()


def is_srnode_derived(ds: Dataset, manufacturer: str = SRNODE_MANUFACTURER) -> bool:
    """True when ``ds`` is an instance srnode wrote.

    Either a ContributingEquipmentSequence item names ``manufacturer`` (what derive
    writes), or ImageType is DERIVED and DerivationDescription names srnode (for PACS that
    drop the sequence).
    """
    want = manufacturer.strip().lower()
    for item in ds.get("ContributingEquipmentSequence", None) or []:
        if _text(item.get("Manufacturer", "")).lower() == want:
            return True
    image_type = ds.get("ImageType", None)
    if image_type is None:
        return False
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    if not values or _text(values[0]).upper() != "DERIVED":
        return False
    description = _text(ds.get("DerivationDescription", "")).lower()
    return want in description
