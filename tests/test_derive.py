"""dicom_node.derive.instance / uids / process on real files with a stand-in engine.

The engine here is a nearest-neighbour upsampler (``np.kron``): its 2x2 area average
reproduces the input exactly, so HU and geometry checks are about derive, not about a
network. ``tests/test_cli_enhance.py`` runs the real engine on ONNX graphs.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from highdicom.spatial import PixelToReferenceTransformer, create_affine_matrix_from_attributes
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicom_node.config import DeriveSettings
from dicom_node.derive.geometry import shifted_position
from dicom_node.derive.identity import derived_instance_uid, derived_series_uid, derived_uid
from dicom_node.derive.instance import derive_instance
from dicom_node.derive.pixels import read_pixels
from dicom_node.derive.process import enhance_instance, save_derived
from sr_engine.model_card import ModelCard, load_card
from tests.onnx_models import write_test_model

DCMDUMP = "/usr/bin/dcmdump"


@dataclass
class FakeEnhanced:
    pixels: np.ndarray
    consistency_rmse: float | None
    consistency_max_abs: float | None
    seconds: float = 0.0


class NearestEngine:
    """Upsamples by pixel repetition; records the metas it was given."""

    backend_name = "nearest-test"

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self.metas: list = []

    def enhance(self, pixels, meta, consistency=True):
        self.metas.append(meta)
        s = self.card.scale
        up = np.repeat(np.repeat(pixels, s, axis=-1), s, axis=-2)
        return FakeEnhanced(up, 0.0 if consistency else None, 0.0 if consistency else None)


def _load(name: str) -> Dataset:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"test file {name} not available (pydicom-data missing?)")
    return pydicom.dcmread(path)


@pytest.fixture(scope="module")
def card(tmp_path_factory) -> ModelCard:
    return load_card(write_test_model(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def card4(tmp_path_factory) -> ModelCard:
    return load_card(write_test_model(tmp_path_factory.mktemp("models4"), "test-x4", scale=4))


def _corners(position, orientation, spacing, rows: int, cols: int) -> np.ndarray:
    """Patient coordinates of the four outer corners of the pixel grid."""
    affine = create_affine_matrix_from_attributes(
        image_position=[float(v) for v in position],
        image_orientation=[float(v) for v in orientation],
        pixel_spacing=[float(v) for v in spacing],
    )
    idx = np.array(
        [[-0.5, -0.5, 0, 1], [cols - 0.5, -0.5, 0, 1], [-0.5, rows - 0.5, 0, 1],
         [cols - 0.5, rows - 0.5, 0, 1]]
    ).T  # fmt: skip
    return (affine @ idx)[:3].T


def _classic_corners(ds: Dataset) -> np.ndarray:
    return _corners(
        ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing, ds.Rows, ds.Columns
    )


# -- UIDs -------------------------------------------------------------------------------


def test_uids_are_deterministic_and_distinct() -> None:
    sha = "a" * 64
    a = derived_series_uid("1.2.3", sha)
    assert a == derived_series_uid("1.2.3", sha)
    assert a.startswith("2.25.") and len(a) <= 64 and UID(a).is_valid
    assert a != derived_instance_uid("1.2.3", sha)  # roles apart
    assert a != derived_series_uid("1.2.3", "b" * 64)  # another model
    assert a != derived_series_uid("1.2.4", sha)
    assert a != derived_series_uid("1.2.3", sha, variant="no-dc")
    with pytest.raises(ValueError):
        derived_uid("study", "1.2.3", sha)  # type: ignore[arg-type]


# -- CT: identity, provenance, HU, geometry, encoding -----------------------------------


def test_ct_derived_instance(card: ModelCard, tmp_path: Path) -> None:
    src = _load("CT_small.dcm")
    engine = NearestEngine(card)
    out, res = enhance_instance(src, engine, DeriveSettings())

    # identity
    assert out.StudyInstanceUID == src.StudyInstanceUID
    assert out.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert out.SeriesInstanceUID != src.SeriesInstanceUID
    assert out.SOPInstanceUID != src.SOPInstanceUID
    from dicom_node.derive.identity import pixel_recipe

    recipe = pixel_recipe(card, engine.backend_name)
    assert out.SOPInstanceUID == derived_instance_uid(src.SOPInstanceUID, card.sha256, "", recipe)
    assert out.SeriesInstanceUID == derived_series_uid(
        src.SeriesInstanceUID, card.sha256, "", recipe
    )
    assert out.SOPClassUID == src.SOPClassUID
    assert list(out.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert out.SeriesDescription.endswith(" [AI SR x2]")
    assert out.SeriesNumber == int(src.SeriesNumber) + 1000

    # provenance
    code = out.DerivationCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
        "113085",
        "DCM",
        "Spatial resampling",
    )
    ref = out.SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert ref.ReferencedSOPClassUID == src.SOPClassUID
    purpose = ref.PurposeOfReferenceCodeSequence[0]
    assert (purpose.CodeValue, purpose.CodingSchemeDesignator) == ("121322", "DCM")
    assert purpose.CodeMeaning == "Source image for image processing operation"
    eq = out.ContributingEquipmentSequence[-1]
    assert eq.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    assert eq.PurposeOfReferenceCodeSequence[0].CodeMeaning == "Processing Equipment"
    assert eq.Manufacturer == "srnode"
    assert eq.ManufacturerModelName == card.name
    versions = list(eq.SoftwareVersions)
    assert versions[0].startswith("srnode ") and card.version in versions[1]
    assert card.sha256 in versions
    desc = out.DerivationDescription
    for part in ("srnode", card.name, card.version, card.short_sha, "RMSE 0.000"):
        assert part in desc
    assert len(desc) <= 1024

    # geometry: outer corners keep their patient coordinates
    assert (out.Rows, out.Columns) == (2 * src.Rows, 2 * src.Columns)
    assert [float(v) for v in out.PixelSpacing] == pytest.approx(
        [float(v) / 2 for v in src.PixelSpacing], abs=1e-9
    )
    assert np.abs(_classic_corners(out) - _classic_corners(src)).max() < 0.01
    assert list(out.ImageOrientationPatient) == list(src.ImageOrientationPatient)
    t_src = PixelToReferenceTransformer.for_image(src)
    t_out = PixelToReferenceTransformer.for_image(out)
    last = t_out(np.array([[255, 255], [254, 254]])).mean(axis=0)
    assert np.abs(last - t_src(np.array([[127, 127]]))[0]).max() < 0.01

    # write, re-read: encoding, pixels, HU
    path = save_derived(out, tmp_path / "ct.dcm")
    back = pydicom.dcmread(path)
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert (back.BitsAllocated, back.BitsStored, back.PixelRepresentation) == (16, 16, 1)
    assert back.RescaleIntercept == src.RescaleIntercept
    assert back.RescaleSlope == src.RescaleSlope
    arr = back.pixel_array
    assert arr.shape == (256, 256) and arr.dtype == np.int16
    np.testing.assert_array_equal(arr, res.pixels)
    hu_src = read_pixels(src) * float(src.RescaleSlope) + float(src.RescaleIntercept)
    hu_out = arr * float(back.RescaleSlope) + float(back.RescaleIntercept)
    assert abs(hu_out.mean() - hu_src.mean()) < 1.0
    # a flat-ish 32x32 region keeps its mean HU
    region = hu_src[48:64, 48:64].mean()
    assert abs(hu_out[96:128, 96:128].mean() - region) < 1.0
    # the engine saw the CT's rescale
    assert engine.metas[0].rescale_intercept == -1024.0


def test_rerun_gives_the_same_uids(card: ModelCard) -> None:
    a, _ = enhance_instance(_load("CT_small.dcm"), NearestEngine(card))
    b, _ = enhance_instance(_load("CT_small.dcm"), NearestEngine(card))
    assert (a.SeriesInstanceUID, a.SOPInstanceUID) == (b.SeriesInstanceUID, b.SOPInstanceUID)
    c, res = enhance_instance(
        _load("CT_small.dcm"), NearestEngine(card), DeriveSettings(data_consistency=False)
    )
    assert c.SOPInstanceUID != a.SOPInstanceUID  # another variant, another object
    assert res.consistency_rmse is None
    assert "data consistency not applied" in c.DerivationDescription


def test_same_series_maps_to_one_derived_series(card: ModelCard) -> None:
    a, _ = enhance_instance(_load("MR_small.dcm"), NearestEngine(card))
    b, _ = enhance_instance(_load("MR_small_RLE.dcm"), NearestEngine(card))
    assert a.SeriesInstanceUID == b.SeriesInstanceUID  # same source series


def test_settings_suffix_offset_and_truncation(card4: ModelCard) -> None:
    src = _load("CT_small.dcm")
    src.SeriesDescription = "X" * 64
    settings = DeriveSettings(description_suffix=" (SR {scale}x)", series_number_offset=50)
    out, _ = enhance_instance(src, NearestEngine(card4), settings)
    assert out.SeriesDescription.endswith(" (SR 4x)") and len(out.SeriesDescription) == 64
    assert out.SeriesNumber == int(src.SeriesNumber) + 50
    assert (out.Rows, out.Columns) == (512, 512)
    assert np.abs(_classic_corners(out) - _classic_corners(src)).max() < 0.01


def test_oblique_anisotropic_geometry(card: ModelCard, card4: ModelCard) -> None:
    src = _load("CT_small.dcm")
    a, b = math.radians(30), math.radians(20)
    row = np.array([math.cos(a), math.sin(a), 0.0])
    col = np.array([-math.sin(a) * math.cos(b), math.cos(a) * math.cos(b), math.sin(b)])
    src.ImageOrientationPatient = [f"{v:.12f}" for v in (*row, *col)]
    src.PixelSpacing = ["0.7", "0.45"]
    for c in (card, card4):
        out, _ = enhance_instance(src, NearestEngine(c))
        assert np.abs(_classic_corners(out) - _classic_corners(src)).max() < 0.01
        # and pixel centres line up: derived pixel (s-1)/2 ~ source pixel 0 (centre)
        s = c.scale
        ref = PixelToReferenceTransformer(
            src.ImagePositionPatient, src.ImageOrientationPatient, src.PixelSpacing
        )(np.array([[0, 0]]))
        first = np.array([float(v) for v in out.ImagePositionPatient])
        spacing = np.array([float(v) for v in out.PixelSpacing])
        centre = first + (s - 1) / 2 * (row * spacing[1] + col * spacing[0])
        assert np.abs(centre - ref[0]).max() < 0.01


def test_shifted_position_axial_by_hand() -> None:
    # 1 mm pixels, x2: first derived centre is 0.25 mm before the source centre
    p = shifted_position([10, 20, 30], [1, 0, 0, 0, 1, 0], [1, 1], 2)
    assert p == pytest.approx([9.75, 19.75, 30.0])


# -- MR: big endian source, window/stats, overlays --------------------------------------


def test_big_endian_mr_to_little_endian(card: ModelCard, tmp_path: Path) -> None:
    src = _load("MR_small_bigendian.dcm")
    out, res = enhance_instance(src, NearestEngine(card))
    back = pydicom.dcmread(save_derived(out, tmp_path / "mr.dcm"))
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    np.testing.assert_array_equal(back.pixel_array, res.pixels)
    np.testing.assert_array_equal(back.pixel_array[::2, ::2], read_pixels(_load("MR_small.dcm")))
    assert back.WindowCenter == src.WindowCenter and back.WindowWidth == src.WindowWidth
    assert "LargestImagePixelValue" in src and "LargestImagePixelValue" not in back
    assert "SmallestImagePixelValue" not in back


def test_overlays_and_icon_dropped(card: ModelCard) -> None:
    src = _load("MR-SIEMENS-DICOM-WithOverlays.dcm")
    assert any(0x6000 <= e.tag.group <= 0x601E for e in src)
    icon = Dataset()
    icon.Rows = icon.Columns = 4
    src.IconImageSequence = [icon]
    out, _ = enhance_instance(src, NearestEngine(card))
    assert not any(0x6000 <= e.tag.group <= 0x601E for e in out)
    assert "IconImageSequence" not in out


# -- CR MONOCHROME1, 8-bit, multi-frame -------------------------------------------------


def _crop(ds: Dataset, rows: int, cols: int) -> Dataset:
    arr = read_pixels(ds)[:rows, :cols]
    ds.Rows, ds.Columns = arr.shape
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    return ds


def test_cr_monochrome1_stays(card: ModelCard, tmp_path: Path) -> None:
    src = _crop(_load("RG3_UNCR.dcm"), 48, 40)
    src.ImagerPixelSpacing = ["0.2", "0.16"]
    out, res = enhance_instance(src, NearestEngine(card))
    back = pydicom.dcmread(save_derived(out, tmp_path / "cr.dcm"))
    assert back.PhotometricInterpretation == "MONOCHROME1"
    assert (back.BitsStored, back.PixelRepresentation) == (10, 0)
    assert [float(v) for v in back.ImagerPixelSpacing] == pytest.approx([0.1, 0.08])
    assert back.pixel_array.shape == (96, 80) and back.pixel_array.dtype == np.uint16
    assert back.pixel_array.max() <= 1023


def test_8bit_jpeg_lossless_source(card: ModelCard, tmp_path: Path) -> None:
    src = _crop(_load("JPGLosslessP14SV1_1s_1f_8b.dcm"), 32, 48)
    src.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # after the crop: raw pixels
    out, _ = enhance_instance(src, NearestEngine(card))
    back = pydicom.dcmread(save_derived(out, tmp_path / "us.dcm"))
    assert back.BitsAllocated == 8 and back.pixel_array.dtype == np.uint8
    assert back["PixelData"].VR == "OB"
    assert back.pixel_array.shape == (64, 96)


def test_lossy_source_stays_marked_lossy(card: ModelCard) -> None:
    src = _load("JPGExtended.dcm")  # JPEG extended, 12-bit
    del src.LossyImageCompression
    out, _ = enhance_instance(src, NearestEngine(card))
    assert out.LossyImageCompression == "01"
    assert out.LossyImageCompressionMethod == "ISO_10918_1"
    lossless, _ = enhance_instance(_load("MR_small_jp2klossless.dcm"), NearestEngine(card))
    assert lossless.get("LossyImageCompression") in (None, "00")


def test_enhanced_mr_multiframe(card: ModelCard, tmp_path: Path) -> None:
    src = _load("emri_small_jpeg_ls_lossless.dcm")
    out, res = enhance_instance(src, NearestEngine(card))
    assert res.pixels.shape == (10, 128, 128)
    assert out.ImageType[0] == "DERIVED" and out.ImageType[1] == "PRIMARY"
    derivation = out.SharedFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert derivation.DerivationCodeSequence[0].CodeValue == "113085"
    assert derivation.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    refs = out.ReferencedSeriesSequence[0]
    assert refs.SeriesInstanceUID == src.SeriesInstanceUID
    assert refs.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    back = pydicom.dcmread(save_derived(out, tmp_path / "emr.dcm"))
    assert back.NumberOfFrames == 10
    assert back.pixel_array.shape == (10, 128, 128)
    np.testing.assert_array_equal(back.pixel_array[:, ::2, ::2], read_pixels(src))


def test_enhanced_ct_functional_group_geometry(card: ModelCard) -> None:
    src = _load("eCT_Supplemental.dcm")
    pixels = np.repeat(np.repeat(read_pixels(src), 2, axis=-1), 2, axis=-2)
    out = derive_instance(src, FakeEnhanced(pixels, 0.1, 0.5), card, DeriveSettings())
    shared_src = src.SharedFunctionalGroupsSequence[0]
    shared_out = out.SharedFunctionalGroupsSequence[0]
    ori = shared_src.PlaneOrientationSequence[0].ImageOrientationPatient
    sp_src = shared_src.PixelMeasuresSequence[0].PixelSpacing
    sp_out = shared_out.PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in sp_out] == pytest.approx([float(v) / 2 for v in sp_src], abs=1e-9)
    for fs, fo in zip(
        src.PerFrameFunctionalGroupsSequence, out.PerFrameFunctionalGroupsSequence, strict=True
    ):
        c_src = _corners(
            fs.PlanePositionSequence[0].ImagePositionPatient, ori, sp_src, src.Rows, src.Columns
        )
        c_out = _corners(
            fo.PlanePositionSequence[0].ImagePositionPatient, ori, sp_out, out.Rows, out.Columns
        )
        assert np.abs(c_out - c_src).max() < 0.01
        assert "DerivationImageSequence" not in fo
    # highdicom reads the derived geometry the same way: source pixel (0, 0) centre =
    # mean of the derived 2x2 block's centres
    for frame in (1, 2):
        t_src = PixelToReferenceTransformer.for_image(src, frame_number=frame)
        t_out = PixelToReferenceTransformer.for_image(out, frame_number=frame)
        block = t_out(np.array([[0, 0], [1, 0], [0, 1], [1, 1]])).mean(axis=0)
        assert np.abs(block - t_src(np.array([[0, 0]]))[0]).max() < 0.01
    frame_type = shared_out.CTImageFrameTypeSequence[0].FrameType
    assert frame_type[0] == "DERIVED"
    # rescale and window kept in the functional groups
    assert (
        shared_out.PixelValueTransformationSequence[0].RescaleIntercept
        == shared_src.PixelValueTransformationSequence[0].RescaleIntercept
    )
    description = shared_out.DerivationImageSequence[0].DerivationDescription
    assert "RMSE 0.100, max 0.500" in description


def test_per_frame_rescale_runs_frame_by_frame(card: ModelCard) -> None:
    src = _load("eCT_Supplemental.dcm")
    shared = src.SharedFunctionalGroupsSequence[0]
    pvt = shared.PixelValueTransformationSequence
    del shared.PixelValueTransformationSequence
    for i, fg in enumerate(src.PerFrameFunctionalGroupsSequence):
        item = Dataset()
        item.RescaleSlope = pvt[0].RescaleSlope
        item.RescaleIntercept = str(-1024 - i)
        item.RescaleType = "HU"
        fg.PixelValueTransformationSequence = [item]
    engine = NearestEngine(card)
    out, res = enhance_instance(src, engine)
    assert [m.rescale_intercept for m in engine.metas] == [-1024.0, -1025.0]
    assert res.pixels.shape == (2, 1024, 1024)


def test_shape_mismatch_is_an_error(card: ModelCard) -> None:
    src = _load("CT_small.dcm")
    with pytest.raises(ValueError, match="expected"):
        derive_instance(src, np.zeros((128, 128), np.int16), card)


@pytest.mark.skipif(not Path(DCMDUMP).exists(), reason="dcmtk's dcmdump not installed")
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_bigendian.dcm", "emri_small.dcm"])
def test_dcmtk_parses_output(card: ModelCard, tmp_path: Path, name: str) -> None:
    out, _ = enhance_instance(_load(name), NearestEngine(card))
    path = save_derived(out, tmp_path / "o.dcm")
    run = subprocess.run(
        [shutil.which(DCMDUMP) or DCMDUMP, "+E", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "E:" not in run.stderr and "W:" not in run.stderr, run.stderr
    assert "Spatial resampling" in run.stdout or "113085" in run.stdout or "emri" in name
