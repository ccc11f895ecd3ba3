"""The derived instance: a source dataset plus super-resolved pixels, written so that a
PACS files it as a new series beside the original and a radiologist can see exactly how
it was made.

What changes (DESIGN.md, "Derived series"):

* identity: new deterministic SeriesInstanceUID / SOPInstanceUID
  (:mod:`dicom_node.derive.identity`), same StudyInstanceUID and FrameOfReferenceUID;
  SeriesDescription gains a suffix (`` [AI SR x2]``), ImageComments a notice that this is
  not the acquired image, SeriesNumber an offset; InstanceCreatorUID is srnode's; the
  source's private attributes are dropped unless ``derive.keep_private_tags``; ImageType
  value 1 becomes DERIVED (value 2 SECONDARY for classic images; enhanced multi-frame IODs
  allow only PRIMARY there, so it is kept);
* provenance: DerivationDescription, DerivationCodeSequence (DCM 113085 "Spatial
  resampling"), SourceImageSequence (purpose DCM 121322), ContributingEquipmentSequence
  (purpose DCM 109102, srnode and model versions, model sha256); for enhanced objects the
  same in the Derivation Image functional group and the Common Instance Reference module;
* geometry: Rows/Columns x s, PixelSpacing / ImagerPixelSpacing / NominalScannedPixelSpacing
  / s, ImagePositionPatient moved by the half-pixel shift so the outer corners of the pixel
  grid keep their patient coordinates (classic and per-frame functional groups);
* pixels: JPEG 2000 lossless when the source came compressed losslessly, otherwise
  Explicit VR Little Endian (each destination may ask for another syntax, see
  :mod:`dicom_node.derive.encoding`); same bit depth, signedness and photometric
  interpretation (MONOCHROME1 stays MONOCHROME1); rescale and window kept;
  icon image, overlays, curves, ultrasound regions, digital signatures and stale
  pixel statistics (Smallest/LargestImagePixelValue...) dropped.
"""

from __future__ import annotations

import copy
import logging
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
)

from dicom_node import __version__
from dicom_node.config import DeriveSettings
from dicom_node.derive.encoding import default_syntax, encode
from dicom_node.derive.geometry import (  # noqa: F401  (shifted_position: re-exported)
    classic_geometry,
    enhanced_geometry,
    shifted_position,
)
from dicom_node.derive.identity import derived_instance_uid, derived_series_uid
from dicom_node.derive.pixels import stored_dtype
from dicom_node.implementation import INSTANCE_CREATOR_UID, identify_file_meta
from sr_engine.model_card import ModelCard

SOFTWARE = "srnode"

log = logging.getLogger(__name__)

# Codes (PS3.16): CID 7203 Image Derivation, CID 7202 Source Image Purposes of Reference,
# CID 7005 Contributing Equipment Purposes of Reference.
SPATIAL_RESAMPLING = codes.DCM.SpatialResampling  # (113085, DCM, "Spatial resampling")
SOURCE_FOR_PROCESSING = codes.DCM.SourceImageForImageProcessingOperation  # 121322
PROCESSING_EQUIPMENT = codes.DCM.ProcessingEquipment  # (109102, DCM, ...)

# Top-level attributes that describe the old pixels or the old object and are dropped.
_DROP = {
    Tag(kw)
    for kw in (
        "PixelData",
        "FloatPixelData",
        "DoubleFloatPixelData",
        "ExtendedOffsetTable",
        "ExtendedOffsetTableLengths",
        "PixelDataProviderURL",
        "DataSetTrailingPadding",
        "IconImageSequence",
        "SmallestImagePixelValue",
        "LargestImagePixelValue",
        "SmallestPixelValueInSeries",
        "LargestPixelValueInSeries",
        "SmallestImagePixelValueInPlane",
        "LargestImagePixelValueInPlane",
        "HistogramSequence",
        "SequenceOfUltrasoundRegions",  # region bounds are pixel coordinates
        "DigitalSignaturesSequence",  # signed the source bytes
        "MACParametersSequence",
        "ConcatenationUID",
        "SOPInstanceUIDOfConcatenationSource",
        "InConcatenationNumber",
        "InConcatenationTotalNumber",
        "ConcatenationFrameOffsetNumber",
        "DerivationCodeSequence",  # replaced: this object's derivation, not the source's
        "SourceImageSequence",
        "SourceInstanceSequence",
    )
}

_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


class EnhancedLike(Protocol):
    """What derive needs from ``sr_engine.Enhanced``."""

    pixels: np.ndarray
    consistency_rmse: float | None
    consistency_max_abs: float | None


def _is_overlay_or_curve(tag: Any) -> bool:
    group = tag.group
    return (0x6000 <= group <= 0x601E or 0x5000 <= group <= 0x501E) and group % 2 == 0


def is_enhanced(ds: Dataset) -> bool:
    """True for enhanced multi-frame image IODs (functional groups, or an Enhanced /
    Legacy Converted Enhanced image SOP class)."""
    if "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds:
        return True
    name = getattr(ds.get("SOPClassUID"), "name", "") or ""
    return "Enhanced" in name and "Image" in name


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


def _contributing_equipment(card: ModelCard, settings: DeriveSettings, when: datetime) -> Dataset:
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = Sequence([coded(PROCESSING_EQUIPMENT)])
    item.Manufacturer = settings.manufacturer[:64]
    item.ManufacturerModelName = card.name[:64]
    item.SoftwareVersions = [
        f"{SOFTWARE} {__version__}"[:64],
        f"{card.name} {card.version}"[:64],
        card.sha256,  # 64 hex characters: exactly an LO value
    ]
    item.ContributionDateTime = when.strftime("%Y%m%d%H%M%S")
    item.ContributionDescription = (
        f"super-resolution x{card.scale} by model {card.name} {card.version} (sha256 {card.sha256})"
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


# -- pixels and encoding ----------------------------------------------------------------


def _set_pixels(out: Dataset, source: Dataset, pixels: np.ndarray) -> None:
    dtype = stored_dtype(source)
    bits_stored = int(source.get("BitsStored", dtype.itemsize * 8))
    signed = dtype.kind == "i"
    lo = -(1 << (bits_stored - 1)) if signed else 0
    hi = (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
    arr = np.asarray(pixels)
    if arr.dtype.kind == "f":
        arr = np.rint(arr)
    arr = np.clip(arr, lo, hi).astype(dtype.newbyteorder("<"), copy=False)
    out.PixelData = np.ascontiguousarray(arr).tobytes()
    out["PixelData"].VR = "OB" if dtype.itemsize == 1 else "OW"


def _swap_big_endian_values(ds: Dataset) -> None:
    """Byte-swap the values of OW/OF/OL/OD/OV elements read from a big endian file."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _swap_big_endian_values(item)
        elif elem.VR in _SWAP_WIDTH and isinstance(elem.value, bytes | bytearray):
            width = _SWAP_WIDTH[elem.VR]
            raw = bytes(elem.value)
            n = len(raw) // width * width
            swapped = np.frombuffer(raw[:n], f">u{width}").astype(f"<u{width}").tobytes()
            elem.value = swapped + raw[n:]


# Transfer syntaxes that are always lossy -> LossyImageCompressionMethod (PS3.3 C.7.6.1.1.5)
_LOSSY_SYNTAXES = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
}


def _mark_lossy_source(out: Dataset, source: Dataset) -> None:
    """An image derived from lossy-compressed pixels stays marked lossy (PS3.3
    C.7.6.1.1.5), though it is stored uncompressed."""
    ts = getattr(getattr(source, "file_meta", None), "TransferSyntaxUID", None)
    method = _LOSSY_SYNTAXES.get(ts) if ts is not None else None
    if method is None:
        return
    out.LossyImageCompression = "01"
    if "LossyImageCompressionMethod" not in out:
        out.LossyImageCompressionMethod = method


def _copy_attributes(source: Dataset) -> Dataset:
    out = Dataset()
    for elem in source:
        if elem.tag in _DROP or _is_overlay_or_curve(elem.tag):
            continue
        out.add(copy.deepcopy(elem))
    encoding = getattr(source, "original_encoding", None)
    if encoding is not None and encoding[1] is False:
        _swap_big_endian_values(out)
    return out


# -- the derived instance ---------------------------------------------------------------


def derive_instance(
    source: Dataset,
    enhanced: EnhancedLike | np.ndarray,
    card: ModelCard,
    settings: DeriveSettings | None = None,
    *,
    backend: str | None = None,
    variant: str = "",
    now: datetime | None = None,
) -> Dataset:
    """The derived instance of ``source`` carrying ``enhanced.pixels``.

    ``enhanced`` is an ``sr_engine.Enhanced`` (or any object with ``pixels``,
    ``consistency_rmse`` and ``consistency_max_abs``; a bare array means "no consistency
    step"). Its pixels are stored values of shape (sH, sW) or (frames, sH, sW) with
    s = ``card.scale``. ``variant`` goes into the UIDs (see :mod:`dicom_node.derive.identity`);
    ``backend`` into the DerivationDescription. The result has ``file_meta`` (transfer
    syntax: :func:`dicom_node.derive.encoding.default_syntax`) and is ready for
    ``dcmwrite(..., enforce_file_format=True)``.
    """
    settings = settings or DeriveSettings()
    when = now or datetime.now()
    scale = int(card.scale)
    if isinstance(enhanced, np.ndarray):
        pixels, info = enhanced, None
    else:
        pixels, info = np.asarray(enhanced.pixels), enhanced
    rows, cols = int(source.Rows), int(source.Columns)
    frames = int(source.get("NumberOfFrames", 1) or 1)
    expected = (rows * scale, cols * scale)
    if pixels.shape[-2:] != expected or (pixels.ndim == 3 and pixels.shape[0] != frames):
        raise ValueError(
            f"enhanced pixels have shape {pixels.shape}; expected {frames} frame(s) of "
            f"{expected} for x{scale} of a {rows}x{cols} source"
        )
    enhanced_iod = is_enhanced(source)

    out = _copy_attributes(source)
    if not settings.keep_private_tags:
        out.remove_private_tags()  # every level of nesting

    # identity
    out.SOPInstanceUID = derived_instance_uid(source.SOPInstanceUID, card.sha256, variant)
    out.SeriesInstanceUID = derived_series_uid(source.SeriesInstanceUID, card.sha256, variant)
    out.InstanceCreationDate = when.strftime("%Y%m%d")
    out.InstanceCreationTime = when.strftime("%H%M%S")
    out.ImageType = _image_type(source.get("ImageType", []), enhanced_iod)
    if enhanced_iod:
        _frame_types(out)
    out.SeriesDescription = _series_description(source, settings, scale)
    out.ImageComments = _image_comments(source, settings, card)
    out.InstanceCreatorUID = INSTANCE_CREATOR_UID
    # BurnedInAnnotation / RecognizableVisualFeatures stay as the source has them: the
    # pixels are the source's, resampled; srnode writes no text into them
    try:
        number = int(source.get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        number = 0
    out.SeriesNumber = min(number + settings.series_number_offset, 2**31 - 1)

    # provenance
    description = derivation_description(card, info, backend, settings.data_consistency)
    out.DerivationDescription = description
    out.SourceImageSequence = Sequence([_source_reference(source)])
    if enhanced_iod:
        _enhanced_references(out, source, description)
    else:
        out.DerivationCodeSequence = Sequence([coded(SPATIAL_RESAMPLING)])
    equipment = list(out.get("ContributingEquipmentSequence") or [])
    equipment.append(_contributing_equipment(card, settings, when))
    out.ContributingEquipmentSequence = Sequence(equipment)

    # geometry
    out.Rows, out.Columns = expected
    if enhanced_iod:
        enhanced_geometry(out, scale)
    else:
        classic_geometry(out, source, scale)

    # pixels
    _set_pixels(out, source, pixels)
    _mark_lossy_source(out, source)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = source.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    identify_file_meta(meta)
    out.file_meta = meta
    syntax = default_syntax(source)
    if syntax != ExplicitVRLittleEndian:
        try:
            encode(out, syntax)
        except Exception as e:  # an encoder that cannot take these pixels: stay uncompressed
            log.warning(
                "derived %s stays uncompressed: %s failed (%s)", out.SOPInstanceUID, syntax.name, e
            )
            out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            _set_pixels(out, source, pixels)
    return out
