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
* provenance (:mod:`dicom_node.derive.provenance`): DerivationDescription,
  DerivationCodeSequence (DCM 113085 "Spatial resampling"), SourceImageSequence (purpose
  DCM 121322), ContributingEquipmentSequence (purpose DCM 109102, srnode and model
  versions, model sha256); for enhanced objects the same in the Derivation Image
  functional group and the Common Instance Reference module;
* geometry: Rows/Columns x s, PixelSpacing / ImagerPixelSpacing / NominalScannedPixelSpacing
  / s, ImagePositionPatient moved by the half-pixel shift so the outer corners of the pixel
  grid keep their patient coordinates (classic and per-frame functional groups);
* pixels: JPEG 2000 lossless when the source came compressed losslessly, otherwise
  Explicit VR Little Endian (each destination may ask for another syntax, see
  :mod:`dicom_node.derive.encoding`); same bit depth, signedness and photometric
  interpretation (MONOCHROME1 stays MONOCHROME1); rescale and window kept;
  icon image, overlays, curves, ultrasound regions, digital signatures and stale
  pixel statistics (Smallest/LargestImagePixelValue...) dropped
  (:mod:`dicom_node.derive.header`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from dicom_node.config import DeriveSettings
from dicom_node.derive.encoding import default_syntax, encode
from dicom_node.derive.geometry import classic_geometry, enhanced_geometry, scale_pixel_coordinates
from dicom_node.derive.header import (
    ORIGINAL_ONLY_MR,
    _copy_attributes,
    _creation_time,
    _mark_lossy_source,
    _set_pixels,
)
from dicom_node.derive.identity import derived_instance_uid, derived_series_uid, pixel_recipe
from dicom_node.derive.provenance import (
    SPATIAL_RESAMPLING,
    EnhancedLike,
    _contributing_equipment,
    _enhanced_references,
    _frame_types,
    _image_comments,
    _image_type,
    _series_description,
    _source_reference,
    coded,
    derivation_description,
)
from dicom_node.implementation import INSTANCE_CREATOR_UID, identify_file_meta
from sr_engine.model_card import ModelCard

log = logging.getLogger(__name__)


def is_enhanced(ds: Dataset) -> bool:
    """True for enhanced multi-frame image IODs (functional groups, or an Enhanced /
    Legacy Converted Enhanced image SOP class)."""
    if "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds:
        return True
    name = getattr(ds.get("SOPClassUID"), "name", "") or ""
    return "Enhanced" in name and "Image" in name


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
    encoder: Callable[[Dataset, str], Dataset] = encode,
) -> Dataset:
    """The derived instance of ``source`` carrying ``enhanced.pixels``.

    ``enhanced`` is an ``sr_engine.Enhanced`` (or any object with ``pixels``,
    ``consistency_rmse`` and ``consistency_max_abs``; a bare array means "no consistency
    step"). Its pixels are stored values of shape (sH, sW) or (frames, sH, sW) with
    s = ``card.scale``. ``variant`` goes into the UIDs (see :mod:`dicom_node.derive.identity`);
    ``backend`` into the DerivationDescription. The result has ``file_meta`` (transfer
    syntax: :func:`dicom_node.derive.encoding.default_syntax`) and is ready for
    ``dcmwrite(..., enforce_file_format=True)``. ``encoder`` compresses the pixels where
    that syntax asks for it (:func:`~dicom_node.derive.encoding.encode`, or the same in a
    :class:`~dicom_node.derive.codec_pool.CodecPool`).
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
            out = encoder(out, syntax)
        except Exception as e:  # an encoder that cannot take these pixels: stay uncompressed
            log.warning(
                "derived %s stays uncompressed: %s failed (%s)", out.SOPInstanceUID, syntax.name, e
            )
            out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            _set_pixels(out, source, pixels)
    return out
