"""The provenance of a derived instance: how it was made and from what.

DerivationDescription and DerivationCodeSequence, the SourceImageSequence, the
ContributingEquipmentSequence item of srnode (software versions included); the series
description, image comments, image type and frame types that say it is derived; and, for
enhanced IODs, the Derivation Image functional group, Common Instance Reference module and
Source Image Evidence Sequence in place of the General Image derivation attributes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

import numpy as np
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes

from dicom_node import __version__
from dicom_node.config import DeriveSettings
from sr_engine.model_card import ModelCard

SOFTWARE = "srnode"

# Codes (PS3.16): CID 7203 Image Derivation, CID 7202 Source Image Purposes of Reference,
# CID 7005 Contributing Equipment Purposes of Reference.
SPATIAL_RESAMPLING = codes.DCM.SpatialResampling  # (113085, DCM, "Spatial resampling")
SOURCE_FOR_PROCESSING = codes.DCM.SourceImageForImageProcessingOperation  # 121322
PROCESSING_EQUIPMENT = codes.DCM.ProcessingEquipment  # (109102, DCM, ...)

# General Image attributes that the enhanced IODs do not have: there the derivation lives
# in the Derivation Image functional group (PS3.3 C.7.6.16.2.6), and writing it at the top
# level too would make the object a Standard Extended SOP Class.
_CLASSIC_ONLY = ("DerivationDescription", "SourceImageSequence", "DerivationCodeSequence")


class EnhancedLike(Protocol):
    """What derive needs from ``sr_engine.Enhanced``."""

    pixels: np.ndarray
    consistency_rmse: float | None
    consistency_max_abs: float | None


def coded(code: Any) -> CodedConcept:
    """A code as a sequence item (CodeValue, CodingSchemeDesignator, CodeMeaning)."""
    return CodedConcept(code.value, code.scheme_designator, code.meaning)


def derivation_description(
    card: ModelCard,
    enhanced: EnhancedLike | None,
    backend: str | None = None,
    consistency: bool = True,
) -> str:
    """One line (ST, <= 1024 chars): software, model, version, sha256, consistency error.

    The error is the card's degradation operator applied to the output versus the input,
    in stored units; ``consistency`` says whether the projection step ran.
    """
    parts = [
        f"{SOFTWARE} {__version__} super-resolution x{card.scale}",
        f"model {card.name} {card.version} ({card.architecture.name}, sha256 {card.short_sha})",
    ]
    if backend:
        parts.append(f"backend {backend}")
    rmse = getattr(enhanced, "consistency_rmse", None)
    worst = getattr(enhanced, "consistency_max_abs", None)
    op = f"{card.degradation.operator} x{card.scale}"
    if rmse is None:
        measured = ""
    else:
        measured = f"RMSE {float(rmse):.3f}"
        if worst is not None:
            measured += f", max {float(worst):.3f}"
        measured += " stored units"
    if consistency:
        parts.append(f"data consistency ({op}) " + (measured or "not measured"))
    else:
        parts.append(
            "data consistency not applied" + (f" (measured {op}: {measured})" if measured else "")
        )
    return "; ".join(parts)[:1024]


def _source_reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    item.PurposeOfReferenceCodeSequence = Sequence([coded(SOURCE_FOR_PROCESSING)])
    return item


def _software_versions(values: list[str]) -> list[str]:
    """LO values (64 characters at most), the last one at most 63 when the joined value has
    odd length: the space that pads it to even length is read back as part of that value."""
    vals = [v[:64] for v in values]
    if len("\\".join(vals)) % 2 and len(vals[-1]) == 64:
        vals[-1] = vals[-1][:63]
    return vals


def _contributing_equipment(
    card: ModelCard, settings: DeriveSettings, when: datetime, backend: str | None
) -> Dataset:
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = Sequence([coded(PROCESSING_EQUIPMENT)])
    item.Manufacturer = settings.manufacturer[:64]
    item.ManufacturerModelName = card.name[:64]
    item.SoftwareVersions = _software_versions(
        [
            f"{SOFTWARE} {__version__}",
            f"{card.name} {card.version}",
            card.sha256,  # 64 hex characters: exactly an LO value, never the last one
            f"backend {backend or 'unknown'}",
        ]
    )
    # DT with its own offset from UTC: unambiguous whatever TimezoneOffsetFromUTC says
    item.ContributionDateTime = when.strftime("%Y%m%d%H%M%S%z")
    item.ContributionDescription = (
        f"super-resolution x{card.scale} by model {card.name} {card.version} (sha256 {card.sha256})"
        + (f" on backend {backend}" if backend else "")
    )
    return item


def _series_description(source: Dataset, settings: DeriveSettings, scale: int) -> str:
    """Source description + suffix, at most 64 characters (the source part is shortened,
    the suffix kept). A source without a description is named by modality and number, so
    the result never reads as just the suffix."""
    try:
        suffix = settings.description_suffix.format(scale=scale)
    except (KeyError, IndexError, ValueError):
        suffix = settings.description_suffix
    base = str(source.get("SeriesDescription", "") or "").strip()
    if not base:
        modality = str(source.get("Modality", "") or "").strip()
        number = str(source.get("SeriesNumber", "") or "").strip()
        base = " ".join(p for p in (modality, "series", number) if p)
    room = 64 - len(suffix)
    return (base[: max(room, 0)] + suffix).strip()[:64]


def _image_comments(source: Dataset, settings: DeriveSettings, card: ModelCard) -> str:
    """The notice that this is not the acquired image, then the source's comments."""
    notice = settings.image_comments.format(
        version=__version__, model=card.name, model_version=card.version, scale=card.scale
    )
    old = str(source.get("ImageComments", "") or "").strip()
    return (notice + ("\n" + old if old else ""))[:10240]


def _image_type(values: Any, enhanced: bool) -> list[str]:
    if not values:
        vals: list[str] = []
    elif isinstance(values, str):
        vals = [values]
    else:
        vals = [str(v) for v in values]
    if enhanced:
        # PS3.3 C.8.16.1: value 2 of enhanced IODs is PRIMARY only
        rest = vals[1:] if len(vals) > 1 else ["PRIMARY"]
        return ["DERIVED", *rest]
    return ["DERIVED", "SECONDARY", *vals[2:]]


def _frame_types(out: Dataset) -> None:
    groups = []
    if "SharedFunctionalGroupsSequence" in out:
        groups.extend(out.SharedFunctionalGroupsSequence)
    groups.extend(out.get("PerFrameFunctionalGroupsSequence") or [])
    for fg in groups:
        for elem in fg:
            if elem.keyword.endswith("FrameTypeSequence") and elem.VR == "SQ":
                for item in elem.value:
                    if "FrameType" in item:
                        item.FrameType = _image_type(item.FrameType, enhanced=True)


def _enhanced_references(out: Dataset, source: Dataset, description: str) -> None:
    shared = (
        out.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in out else None
    )
    if shared is None:
        shared = Dataset()
        out.SharedFunctionalGroupsSequence = Sequence([shared])
    for fg in out.get("PerFrameFunctionalGroupsSequence") or []:
        if "DerivationImageSequence" in fg:
            del fg.DerivationImageSequence
    derivation = Dataset()
    derivation.DerivationDescription = description
    derivation.DerivationCodeSequence = Sequence([coded(SPATIAL_RESAMPLING)])
    derivation.SourceImageSequence = Sequence([_source_reference(source)])
    shared.DerivationImageSequence = Sequence([derivation])

    # Common Instance Reference module: every instance referenced in the same study
    series_uid = source.SeriesInstanceUID
    refs = out.get("ReferencedSeriesSequence")
    if refs is None:
        out.ReferencedSeriesSequence = refs = Sequence()
    entry = next((s for s in refs if s.get("SeriesInstanceUID") == series_uid), None)
    if entry is None:
        entry = Dataset()
        entry.SeriesInstanceUID = series_uid
        entry.ReferencedInstanceSequence = Sequence()
        refs.append(entry)
    inst = Dataset()
    inst.ReferencedSOPClassUID = source.SOPClassUID
    inst.ReferencedSOPInstanceUID = source.SOPInstanceUID
    entry.setdefault("ReferencedInstanceSequence", Sequence())
    entry.ReferencedInstanceSequence.append(inst)

    # Source Image Evidence Sequence (Type 1C: the Derivation Image functional group has a
    # Source Image Sequence): the source by study, series and instance (Hierarchical SOP
    # Instance Reference Macro, PS3.3 C.17.2.1); the source's own evidence is replaced
    sop = Dataset()
    sop.ReferencedSOPClassUID = source.SOPClassUID
    sop.ReferencedSOPInstanceUID = source.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.ReferencedSOPSequence = Sequence([sop])
    study = Dataset()
    study.StudyInstanceUID = source.StudyInstanceUID
    study.ReferencedSeriesSequence = Sequence([series])
    out.SourceImageEvidenceSequence = Sequence([study])
    # the General Image derivation attributes are not part of the enhanced IODs
    for kw in _CLASSIC_ONLY:
        if kw in out:
            del out[kw]
