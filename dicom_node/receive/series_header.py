"""The header facts of a received series, read once: :class:`SeriesHeader`.

Ingest takes them from the first instance of a new series (the data set it has parsed
already, groups 0008-0028) and stores them once with the series, as JSON
(:meth:`SeriesHeader.to_json`, the ``series.routing`` column); the searchable columns of the
series row are written from the same value. Routing (:mod:`dicom_node.jobs.stability`),
the routing dry run (:mod:`dicom_node.admin.dry_run`) and the series catalog
(:mod:`dicom_node.admin.catalog`) all read that stored value
(:meth:`SeriesHeader.from_stored`), never the files again.

A new fact is one field here, with the header keyword it is read from; a stored header
that lacks it (written by an older srnode) gives its default. Series from before any
stored header (schema 1) are described by their columns.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from dicom_node.config import DeriveSettings, Settings

#: the fields a header JSON written before the catalog facts came into it lacks
CATALOG_FIELDS = ("study_date", "accession_number", "series_number")


def _text(name: str, limit: int | None = None) -> Any:
    return field(default="", metadata={"keyword": name, "limit": limit})


def _number(name: str) -> Any:
    return field(default=None, metadata={"keyword": name, "number": True})


@dataclass(frozen=True)
class SeriesHeader:
    """What the node knows of a series from the header of its first instance.

    Fields with a ``keyword`` are read from that attribute (text stripped, ``""`` when
    absent; numbers ``None`` when absent or not an integer); ``calling_ae`` is the AE
    title that sent that first instance; ``derived_by_srnode``: see
    :func:`is_srnode_derived`. No patient name or ID is kept."""

    modality: str = _text("Modality")
    body_part: str = _text("BodyPartExamined")
    series_description: str = _text("SeriesDescription")
    study_description: str = _text("StudyDescription")
    study_date: str = _text("StudyDate", 8)
    accession_number: str = _text("AccessionNumber", 16)
    series_number: int | None = _number("SeriesNumber")
    expected_count: int | None = _number("ImagesInAcquisition")
    calling_ae: str = ""
    derived_by_srnode: bool = False

    @classmethod
    def from_dataset(
        cls,
        ds: Any,
        calling_ae: str | None = "",
        settings: Settings | DeriveSettings | None = None,
    ) -> SeriesHeader:
        """The header of the series ``ds`` belongs to (the header alone is enough).

        A text attribute that cannot be read raises (the instance is not understood); a
        malformed sequence makes the series count as derived by srnode, so that it is
        never enhanced on facts the node could not read."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            keyword = f.metadata.get("keyword")
            if keyword is None:
                continue
            raw = ds.get(keyword, None)
            if f.metadata.get("number"):
                values[f.name] = int_or_none(raw)
            else:
                text = str(raw or "").strip()
                limit = f.metadata.get("limit")
                values[f.name] = text[:limit] if limit else text
        if values["study_date"] and not values["study_date"].isdigit():
            values["study_date"] = ""
        try:
            derived = is_srnode_derived(ds, settings or DeriveSettings())
        except Exception:
            derived = True
        return cls(**values, calling_ae=calling_ae or "", derived_by_srnode=derived)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SeriesHeader:
        """From a stored header; fields it lacks (added to srnode since) get defaults."""
        raw = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    @classmethod
    def from_stored(cls, row: Any) -> SeriesHeader:
        """From a row of :data:`dicom_node.store.series.HEADER_COLUMNS`: the stored header,
        or for a series received before there was one (schema 1), its columns."""
        if row.routing:
            return cls.from_json(row.routing)
        return cls(
            modality=row.modality or "",
            body_part=row.body_part or "",
            series_description=row.series_description or "",
            study_description=row.study_description or "",
            calling_ae=row.calling_ae or "",
            derived_by_srnode=bool(row.derived_by_srnode),
            expected_count=row.expected_count,
        )

    @staticmethod
    def has_catalog_facts(stored: str | None) -> bool:
        """True when a stored header JSON carries the catalog's facts (written by an
        srnode that extracts them at ingest)."""
        if not stored:
            return False
        try:
            return all(k in json.loads(stored) for k in CATALOG_FIELDS)
        except ValueError:
            return False

    def catalog_row(self) -> dict[str, Any]:
        """The series catalog's columns (None where the header has nothing)."""
        number = self.series_number
        return {
            "study_date": self.study_date or None,
            "accession_number": self.accession_number or None,
            "series_number": number if number is not None and abs(number) < 2**31 else None,
        }


def int_or_none(v: Any) -> int | None:
    """An IS/US value as int; None when absent or not an integer."""
    try:
        return None if v is None or v == "" else int(v)
    except (TypeError, ValueError):
        return None


def _text_of(value: object) -> str:
    return str(value or "").strip()


def is_srnode_derived(ds: Any, settings: Settings | DeriveSettings) -> bool:
    """True when ``ds`` is an instance srnode wrote, under the configured manufacturer.

    Either a ContributingEquipmentSequence item names ``derive.manufacturer`` (what derive
    writes), or ImageType is DERIVED and DerivationDescription names it (for PACS that
    drop the sequence). orthanc/autoroute.py carries a copy (Orthanc's Python has only
    the standard library); tests/test_routing.py checks that the two agree.
    """
    derive = settings.derive if isinstance(settings, Settings) else settings
    want = derive.manufacturer.strip().lower()
    for item in ds.get("ContributingEquipmentSequence", None) or []:
        if _text_of(item.get("Manufacturer", "")).lower() == want:
            return True
    image_type = ds.get("ImageType", None)
    if image_type is None:
        return False
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    if not values or _text_of(values[0]).upper() != "DERIVED":
        return False
    description = _text_of(ds.get("DerivationDescription", "")).lower()
    return want in description
