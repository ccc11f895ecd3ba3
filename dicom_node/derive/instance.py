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
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Protocol

import numpy as np
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
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
    scale_pixel_coordinates,
    shifted_position,
)
from dicom_node.derive.identity import derived_instance_uid, derived_series_uid, pixel_recipe
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

# Radiation dose of the acquisition, at any level: a derived image was not an exposure, and
# dose monitoring that reads images would count the dose twice.
DOSE_ATTRIBUTES = (
    "CTDIvol",
    "CTDIPhantomTypeCodeSequence",
    "ImageAndFluoroscopyAreaDoseProduct",
    "AcquiredImageAreaDoseProduct",
    "EntranceDose",
    "EntranceDoseInmGy",
    "EntranceDoseDerivation",
    "ExposureDoseSequence",
    "OrganDose",
    "OrganExposed",
    "CommentsOnRadiationDose",
    "EstimatedDoseSaving",
    "XRayAcquisitionDoseSequence",
)
_DOSE_TAGS = {Tag(kw) for kw in DOSE_ATTRIBUTES}

# Enhanced MR: Type 1C attributes "required if Image Type Value 1 is ORIGINAL or MIXED",
# absent otherwise (PS3.3 C.8.13.4 MR Pulse Sequence Module; C.7.6.18.3 Bulk Motion
# Synchronization): they describe the acquisition of an ORIGINAL image.
ORIGINAL_ONLY_MR = (
    "PulseSequenceName",
    "MRAcquisitionType",
    "EchoPulseSequence",
    "MultipleSpinEcho",
    "MultiPlanarExcitation",
    "PhaseContrast",
    "VelocityEncodingAcquisitionSequence",
    "TimeOfFlightContrast",
    "ArterialSpinLabelingContrast",
    "SteadyStatePulseSequence",
    "EchoPlanarPulseSequence",
    "SaturationRecovery",
    "SpectrallySelectedSuppression",
    "OversamplingPhase",
    "GeometryOfKSpaceTraversal",
    "RectilinearPhaseEncodeReordering",
    "SegmentedKSpaceTraversal",
    "CoverageOfKSpace",
    "NumberOfKSpaceTrajectories",
    "BulkMotionCompensationTechnique",
    "BulkMotionSignalSource",
)

# General Image attributes that the enhanced IODs do not have: there the derivation lives
# in the Derivation Image functional group (PS3.3 C.7.6.16.2.6), and writing it at the top
# level too would make the object a Standard Extended SOP Class.
_CLASSIC_ONLY = ("DerivationDescription", "SourceImageSequence", "DerivationCodeSequence")

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
# lossless or lossy: the codestream says which (the wavelet of its COD marker segment)
_J2K_SYNTAXES = {JPEG2000: "ISO_15444_1", HTJ2K: "ISO_15444_15"}


def _j2k_irreversible(source: Dataset) -> bool:
    """True when the first frame's JPEG 2000 codestream uses the irreversible 9-7 wavelet
    (ISO 15444-1 A.6.1: COD, SPcod transformation 0), i.e. was compressed lossily."""
    try:
        from pydicom.encaps import generate_frames

        frame = next(generate_frames(source.PixelData, number_of_frames=1))
    except Exception:  # noqa: BLE001 - an unreadable codestream says nothing
        return False
    at = frame.find(b"\xff\x52")  # COD: Lcod(2) Scod(1) SGcod(4) SPcod: levels, cb w/h, style
    return at >= 0 and len(frame) > at + 13 and frame[at + 13] == 0


def _mark_lossy_source(out: Dataset, source: Dataset) -> None:
    """An image derived from lossy-compressed pixels stays marked lossy, with the method
    (PS3.3 C.7.6.1.1.5), though it is stored losslessly."""
    ts = getattr(getattr(source, "file_meta", None), "TransferSyntaxUID", None)
    ts = UID(ts) if ts is not None else None
    method = _LOSSY_SYNTAXES.get(ts) if ts is not None else None
    if method is None and ts in _J2K_SYNTAXES and _j2k_irreversible(source):
        # (a source marked 01 whose codestream is reversible was made lossy by an earlier
        # step: its LossyImageCompression is copied, its method is not known here)
        method = _J2K_SYNTAXES[ts]
    if method is None:
        return
    out.LossyImageCompression = "01"
    if "LossyImageCompressionMethod" not in out:
        out.LossyImageCompressionMethod = method


def _drop_everywhere(ds: Dataset, tags: set) -> None:
    for tag in [t for t in tags if t in ds]:
        del ds[tag]
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _drop_everywhere(item, tags)


def _creation_time(now: datetime | None, source: Dataset) -> datetime:
    """The time of processing, aware, in the source's TimezoneOffsetFromUTC when it has
    one (PS3.3 C.12.1.1.8: the offset applies to every date and time of the instance);
    otherwise in the node's local time."""
    when = now or datetime.now(UTC)
    when = when.astimezone() if when.tzinfo is None else when
    offset = str(source.get("TimezoneOffsetFromUTC", "") or "").strip()
    if len(offset) == 5 and offset[0] in "+-" and offset[1:].isdigit():
        minutes = int(offset[1:3]) * 60 + int(offset[3:])
        tz = timezone(timedelta(minutes=minutes if offset[0] == "+" else -minutes))
        return when.astimezone(tz)
    return when.astimezone()


def _copy_attributes(source: Dataset) -> Dataset:
    out = Dataset()
    for elem in source:
        if elem.tag in _DROP or _is_overlay_or_curve(elem.tag):
            continue
        out.add(copy.deepcopy(elem))
    _drop_everywhere(out, _DOSE_TAGS)
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
    when = _creation_time(now, source)
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

    # identity: one UID, one content (the backend and the card's pixel settings included)
    recipe = pixel_recipe(card, backend)
    out.SOPInstanceUID = derived_instance_uid(source.SOPInstanceUID, card.sha256, variant, recipe)
    out.SeriesInstanceUID = derived_series_uid(
        source.SeriesInstanceUID, card.sha256, variant, recipe
    )
    out.InstanceCreationDate = when.strftime("%Y%m%d")
    out.InstanceCreationTime = when.strftime("%H%M%S")
    out.ImageType = _image_type(source.get("ImageType", []), enhanced_iod)
    if enhanced_iod:
        _frame_types(out)
        for kw in ORIGINAL_ONLY_MR:
            if kw in out:
                del out[kw]
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
    equipment.append(_contributing_equipment(card, settings, when, backend))
    out.ContributingEquipmentSequence = Sequence(equipment)

    # geometry
    out.Rows, out.Columns = expected
    if enhanced_iod:
        enhanced_geometry(out, scale)
    else:
        classic_geometry(out, source, scale)
    scale_pixel_coordinates(out, scale)  # shutters, collimators: scaled or dropped

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
