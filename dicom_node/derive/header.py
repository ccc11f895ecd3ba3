"""The attributes of a derived instance taken from its source: what is copied and what is
dropped (the old pixels and what describes them, overlays and curves, radiation dose,
signatures, concatenation), the values of a big endian source swapped to little endian, the
creation time, the new pixels in the source's stored type, and the lossy-compression mark
of a source that came lossy.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
)

from dicom_node.derive.pixels import stored_dtype

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

_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _is_overlay_or_curve(tag: Any) -> bool:
    group = tag.group
    return (0x6000 <= group <= 0x601E or 0x5000 <= group <= 0x501E) and group % 2 == 0


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
