"""What PS3.3 asks of a derived instance beyond geometry and provenance: attributes in
pixel coordinates (shutters, collimators) on the new grid, one UID for one content, the
enhanced IODs complete (Source Image Evidence, no General Image attributes, no
acquisition-only MR attributes), and header hygiene (times in the instance's time zone,
lossy JPEG 2000 sources marked with their method, LO values within 64 characters, no
dose attributes). Real files (pydicom's and pydicom-data's), the stand-in engine of
test_derive."""

from __future__ import annotations

import io
import warnings
from datetime import UTC, datetime

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from dicom_node.derive.instance import derive_instance
from dicom_node.derive.process import enhance_instance
from sr_engine.model_card import ModelCard, load_card
from tests.onnx_models import write_test_model
from tests.test_derive import NearestEngine, _load
from tests.test_intensity import data_store_file

# PS3.3 C.8.13.4 (MR Pulse Sequence) and C.7.6.18.3 (Bulk Motion Synchronization): Type 1C,
# required if Image Type Value 1 is ORIGINAL or MIXED, not present otherwise
MR_ORIGINAL_ONLY = (
    "PulseSequenceName",
    "MRAcquisitionType",
    "EchoPulseSequence",
    "MultiPlanarExcitation",
    "PhaseContrast",
    "TimeOfFlightContrast",
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
)
DOSE = ("CTDIvol", "ImageAndFluoroscopyAreaDoseProduct", "EntranceDoseInmGy", "OrganDose")


@pytest.fixture(scope="module")
def card(tmp_path_factory) -> ModelCard:
    return load_card(write_test_model(tmp_path_factory.mktemp("models")))


def _store(name: str) -> Dataset:
    path = data_store_file(name)
    if not path.exists():
        pytest.skip(f"{name} not in pydicom-data")
    return pydicom.dcmread(path)


def _roundtrip(ds: Dataset) -> Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return pydicom.dcmread(buf)


# -- 1. shutters and collimators: pixel coordinates on the new grid ----------------------


def _inside(ds: Dataset, kind: str, across: bool) -> np.ndarray:
    """Which 1-based columns (``across``) or rows of ``ds`` lie between the first and the
    last edge of its ``kind`` ("Shutter", "Collimator"), edges included."""
    first, last, n = (
        ("LeftVerticalEdge", "RightVerticalEdge", ds.Columns)
        if across
        else ("UpperHorizontalEdge", "LowerHorizontalEdge", ds.Rows)
    )
    pos = np.arange(1, int(n) + 1)
    return (pos >= int(ds[kind + first].value)) & (pos <= int(ds[kind + last].value))


def test_rectangular_shutter_and_collimator_cover_the_same_pixels(card: ModelCard) -> None:
    src = _store("RG1_UNCR.dcm")  # a CR with a rectangular collimator (pixel coordinates)
    assert src.CollimatorShape == "RECTANGULAR"
    src.ShutterShape = ["RECTANGULAR", "CIRCULAR", "POLYGONAL"]
    src.ShutterLeftVerticalEdge, src.ShutterRightVerticalEdge = 101, 1700
    src.ShutterUpperHorizontalEdge, src.ShutterLowerHorizontalEdge = 51, 1900
    src.CenterOfCircularShutter = [978, 921]
    src.RadiusOfCircularShutter = 900
    src.VerticesOfThePolygonalShutter = [1, 1, 1, 1841, 1955, 1841, 1955, 1]
    src.ShutterPresentationValue = 0
    src.ShutterOverlayGroup = 0x6000
    out, _ = enhance_instance(src, NearestEngine(card))
    s = card.scale
    assert (out.Rows, out.Columns) == (s * src.Rows, s * src.Columns)

    # every derived pixel is shuttered exactly when its source pixel is
    for kind in ("Shutter", "Collimator"):
        for across in (True, False):
            np.testing.assert_array_equal(
                _inside(out, kind, across),
                np.repeat(_inside(src, kind, across), s),
                err_msg=f"{kind} {'columns' if across else 'rows'}",
            )
    assert (out.ShutterLeftVerticalEdge, out.ShutterRightVerticalEdge) == (201, 3400)
    # a circle or a polygon cannot be moved to the finer grid exactly (integer centres
    # and vertices land on half pixels): dropped, with their shape value
    assert out.ShutterShape == "RECTANGULAR"
    for kw in (
        "CenterOfCircularShutter",
        "RadiusOfCircularShutter",
        "VerticesOfThePolygonalShutter",
        "ShutterOverlayGroup",  # the overlays are dropped
    ):
        assert kw not in out, kw
    assert out.ShutterPresentationValue == 0


def test_circular_only_shutter_is_dropped_whole(card: ModelCard) -> None:
    src = _load("CT_small.dcm")
    src.Modality = "CR"
    src.ShutterShape = "CIRCULAR"
    src.CenterOfCircularShutter = [64, 64]
    src.RadiusOfCircularShutter = 60
    src.ShutterPresentationValue = 0
    out, _ = enhance_instance(src, NearestEngine(card))
    for kw in (
        "ShutterShape",
        "CenterOfCircularShutter",
        "RadiusOfCircularShutter",
        "ShutterPresentationValue",
    ):
        assert kw not in out, kw


def test_nested_sensing_regions_and_mask_shift_follow_the_grid(card: ModelCard) -> None:
    src = _load("CT_small.dcm")
    src.Modality = "DX"
    region = Dataset()
    region.ExposureControlSensingRegionShape = ["RECTANGULAR", "CIRCULAR"]
    region.ExposureControlSensingRegionLeftVerticalEdge = 10
    region.ExposureControlSensingRegionRightVerticalEdge = 30
    region.ExposureControlSensingRegionUpperHorizontalEdge = 5
    region.ExposureControlSensingRegionLowerHorizontalEdge = 25
    region.CenterOfCircularExposureControlSensingRegion = [60, 60]
    region.RadiusOfCircularExposureControlSensingRegion = 10
    src.ExposureControlSensingRegionsSequence = [region]
    mask = Dataset()
    mask.MaskOperation = "AVG_SUB"
    mask.MaskSubPixelShift = [0.5, -1.25]
    src.MaskSubtractionSequence = [mask]
    out, _ = enhance_instance(src, NearestEngine(card))
    got = out.ExposureControlSensingRegionsSequence[0]
    assert got.ExposureControlSensingRegionShape == "RECTANGULAR"
    assert (
        got.ExposureControlSensingRegionLeftVerticalEdge,
        got.ExposureControlSensingRegionRightVerticalEdge,
        got.ExposureControlSensingRegionUpperHorizontalEdge,
        got.ExposureControlSensingRegionLowerHorizontalEdge,
    ) == (19, 60, 9, 50)
    assert "CenterOfCircularExposureControlSensingRegion" not in got
    assert list(out.MaskSubtractionSequence[0].MaskSubPixelShift) == [1.0, -2.5]


# -- 3. one UID, one content ---------------------------------------------------------


class OtherBackend(NearestEngine):
    """The same network on another numeric path: a different backend name."""

    backend_name = "openvino-bf16"

    def enhance(self, pixels, meta, consistency=True):
        res = super().enhance(pixels, meta, consistency)
        res.pixels = res.pixels.copy()
        res.pixels[0, 0] += 1  # reduced precision: a stored unit here and there
        return res


def test_backends_that_give_other_pixels_give_other_uids(card: ModelCard) -> None:
    a, ra = enhance_instance(_load("CT_small.dcm"), NearestEngine(card))
    b, rb = enhance_instance(_load("CT_small.dcm"), OtherBackend(card))
    assert not np.array_equal(ra.pixels, rb.pixels)
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.SeriesInstanceUID != b.SeriesInstanceUID
    # the same backend again: the same UIDs (re-running a job duplicates nothing)
    again, _ = enhance_instance(_load("CT_small.dcm"), OtherBackend(card))
    assert (again.SOPInstanceUID, again.SeriesInstanceUID) == (
        b.SOPInstanceUID,
        b.SeriesInstanceUID,
    )
    # the backend is recorded where a PACS user looks
    assert "backend openvino-bf16" in b.DerivationDescription
    assert "backend openvino-bf16" in list(b.ContributingEquipmentSequence[-1].SoftwareVersions)


def test_card_pixel_settings_are_part_of_the_uid(card: ModelCard) -> None:
    other = card.model_copy(update={"tile": card.tile.model_copy(update={"overlap": 16})})
    a, _ = enhance_instance(_load("CT_small.dcm"), NearestEngine(card))
    b, _ = enhance_instance(_load("CT_small.dcm"), NearestEngine(other))
    assert a.SOPInstanceUID != b.SOPInstanceUID


def test_another_srnode_release_gives_other_uids(card: ModelCard, monkeypatch) -> None:
    a, _ = enhance_instance(_load("CT_small.dcm"), NearestEngine(card))
    monkeypatch.setattr("dicom_node.derive.identity.__version__", "99.0.0", raising=False)
    b, _ = enhance_instance(_load("CT_small.dcm"), NearestEngine(card))
    assert a.SOPInstanceUID != b.SOPInstanceUID


# -- 4. enhanced CT / MR ---------------------------------------------------------------


def test_enhanced_ct_has_source_image_evidence_and_no_general_image_attributes(
    card: ModelCard,
) -> None:
    src = _store("eCT_Supplemental.dcm")
    out, _ = enhance_instance(src, NearestEngine(card))
    evidence = out.SourceImageEvidenceSequence
    assert len(evidence) == 1 and evidence[0].StudyInstanceUID == src.StudyInstanceUID
    series = evidence[0].ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == src.SeriesInstanceUID
    sop = series.ReferencedSOPSequence[0]
    assert (sop.ReferencedSOPClassUID, sop.ReferencedSOPInstanceUID) == (
        src.SOPClassUID,
        src.SOPInstanceUID,
    )
    # the derivation is in the functional group only (no Standard Extended SOP Class)
    for kw in ("SourceImageSequence", "DerivationDescription", "DerivationCodeSequence"):
        assert kw not in out, kw
    derivation = out.SharedFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert "srnode" in derivation.DerivationDescription
    assert derivation.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    # the console's provenance panel finds it there
    from dicom_node.derive.preview import _provenance

    assert _provenance(out, src)["DerivationDescription"] == derivation.DerivationDescription


def test_enhanced_mr_drops_the_original_only_pulse_sequence_attributes(
    card: ModelCard,
) -> None:
    src = _store("emri_small.dcm")
    present = [kw for kw in MR_ORIGINAL_ONLY if kw in src]
    assert "PulseSequenceName" in present and len(present) > 10
    out, _ = enhance_instance(src, NearestEngine(card))
    assert out.ImageType[0] == "DERIVED"
    assert [kw for kw in MR_ORIGINAL_ONLY if kw in out] == []
    # what describes the image rather than the pulse sequence stays
    assert out.get("ContentQualification") == src.ContentQualification
    assert "SourceImageEvidenceSequence" in out and "SourceImageSequence" not in out


# -- 5. header hygiene -----------------------------------------------------------------


def test_creation_times_are_in_the_instance_time_zone(card: ModelCard) -> None:
    src = _load("CT_small.dcm")
    assert src.TimezoneOffsetFromUTC == "-0500"
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    pixels = np.repeat(np.repeat(src.pixel_array, 2, 0), 2, 1)
    out = derive_instance(src, pixels, card, now=now)
    assert out.TimezoneOffsetFromUTC == "-0500"
    assert (out.InstanceCreationDate, out.InstanceCreationTime) == ("20260101", "220405")
    when = out.ContributingEquipmentSequence[-1].ContributionDateTime
    assert when == "20260101220405-0500"
    # without an offset in the source: the node's local time, the DT says its offset
    del src.TimezoneOffsetFromUTC
    out = derive_instance(src, pixels, card, now=now)
    local = now.astimezone()
    assert out.InstanceCreationTime == local.strftime("%H%M%S")
    assert out.ContributingEquipmentSequence[-1].ContributionDateTime == local.strftime(
        "%Y%m%d%H%M%S%z"
    )


def test_lossy_jpeg2000_source_gets_its_method(card: ModelCard) -> None:
    src = _store("MR2_J2KI.dcm")  # JPEG 2000, irreversible wavelet
    out, _ = enhance_instance(src, NearestEngine(card))
    assert out.LossyImageCompression == "01"
    assert out.LossyImageCompressionMethod == "ISO_15444_1"
    # the codestream says it even when the header does not
    src = _store("MR2_J2KI.dcm")
    del src.LossyImageCompression
    out, _ = enhance_instance(src, NearestEngine(card))
    assert out.LossyImageCompressionMethod == "ISO_15444_1"
    # a reversible (lossless) JPEG 2000 source is not marked lossy
    out, _ = enhance_instance(_store("MR2_J2KR.dcm"), NearestEngine(card))
    assert out.get("LossyImageCompression") in (None, "00")
    assert "LossyImageCompressionMethod" not in out


@pytest.mark.parametrize("name", ["ct-x2", "ct-x2-gan", "mr"])
def test_software_versions_read_back_without_warnings(card: ModelCard, name: str) -> None:
    named = card.model_copy(update={"name": name, "version": "1.0"})
    out, _ = enhance_instance(_load("CT_small.dcm"), NearestEngine(named))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom warns on a value over the VR's length
        back = _roundtrip(out)
        versions = list(back.ContributingEquipmentSequence[-1].SoftwareVersions)
    assert all(len(v) <= 64 for v in versions)
    assert named.sha256 in versions


def test_dose_attributes_are_not_copied(card: ModelCard) -> None:
    src = _load("CT_small.dcm")
    src.CTDIvol = 12.5
    out, _ = enhance_instance(src, NearestEngine(card))
    assert "CTDIvol" not in out
    cr = _store("RG1_UNCR.dcm")
    assert "ImageAndFluoroscopyAreaDoseProduct" in cr
    out, _ = enhance_instance(cr, NearestEngine(card))
    assert not any(kw in out for kw in DOSE)
    ect = _store("eCT_Supplemental.dcm")
    exposure = Dataset()
    exposure.CTDIvol = 7.0
    exposure.ExposureInmAs = 100.0
    ect.SharedFunctionalGroupsSequence[0].CTExposureSequence = [exposure]
    out, _ = enhance_instance(ect, NearestEngine(card))
    kept = out.SharedFunctionalGroupsSequence[0].CTExposureSequence[0]
    assert "CTDIvol" not in kept and kept.ExposureInmAs == 100.0
