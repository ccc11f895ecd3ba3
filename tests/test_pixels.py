"""sr_engine.pixels (the reader of the node, training and the benchmarks) on pydicom's and
pydicom-data's real files: every transfer syntax decodes to the same stored values, the pixel
metadata is read right, and what srnode cannot process is refused with a plain reason."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from sr_engine.errors import UnsupportedInput
from sr_engine.meta import PixelMeta, frame_rescale
from sr_engine.pixels import check_supported, read_image, read_pixels


def _load(name: str) -> Dataset:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"test file {name} not available (pydicom-data missing?)")
    return pydicom.dcmread(path)


MR_VARIANTS = [
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "MR_small_implicit.dcm",
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
]


@pytest.mark.parametrize("name", MR_VARIANTS)
def test_mr_transfer_syntaxes_give_the_same_stored_values(name: str) -> None:
    ref = read_pixels(_load("MR_small.dcm"))
    arr = read_pixels(_load(name))
    assert arr.shape == (64, 64)
    assert arr.dtype == np.dtype("int16")  # native order, signed (PixelRepresentation 1)
    assert arr.dtype.byteorder in ("=", "|")
    np.testing.assert_array_equal(arr, ref)


@pytest.mark.parametrize(
    "name",
    [
        "emri_small_big_endian.dcm",
        "emri_small_RLE.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
        "emri_small_jpeg_ls_lossless.dcm",
    ],
)
def test_multiframe_variants(name: str) -> None:
    ref = read_pixels(_load("emri_small.dcm"))
    assert ref.shape == (10, 64, 64) and ref.dtype == np.uint16
    np.testing.assert_array_equal(read_pixels(_load(name)), ref)


def test_jpeg_lossless_and_extended() -> None:
    # both carry NumberOfFrames = 1: multi-frame objects always come back as 3-D
    lossless = read_pixels(_load("JPEG-LL.dcm"))  # JPEG lossless process 14, signed
    assert lossless.shape == (1, 1024, 256) and lossless.dtype == np.int16
    extended = read_pixels(_load("JPGExtended.dcm"))  # JPEG extended, 12-bit
    assert extended.shape == (1, 1024, 256) and extended.dtype == np.uint16
    assert extended.max() < 4096


def test_jpeg2000_ct_matches_uncompressed() -> None:
    ref = read_pixels(_load("693_UNCR.dcm"))
    arr = read_pixels(_load("693_J2KR.dcm"))
    assert arr.shape == ref.shape == (512, 512)
    np.testing.assert_array_equal(arr, ref)


def test_ct_meta_and_hu() -> None:
    ds = _load("CT_small.dcm")
    meta = PixelMeta.from_dataset(ds)
    assert meta.modality == "CT"
    assert (meta.bits_stored, meta.pixel_representation) == (16, 1)
    assert (meta.rescale_slope, meta.rescale_intercept) == (1.0, -1024.0)
    assert meta.photometric == "MONOCHROME2"
    arr = read_pixels(ds)
    hu = arr * meta.rescale_slope + meta.rescale_intercept
    assert hu.min() > -1100 and hu.max() < 3100


def test_cr_monochrome1_meta() -> None:
    ds = _load("RG3_UNCR.dcm")
    meta = PixelMeta.from_dataset(ds)
    assert meta.modality == "CR"
    assert meta.photometric == "MONOCHROME1"
    assert (meta.bits_stored, meta.pixel_representation) == (10, 0)
    assert meta.stored_max == 1023


def test_cr_jpeg2000_matches_uncompressed() -> None:
    np.testing.assert_array_equal(
        read_pixels(_load("RG3_J2KR.dcm")), read_pixels(_load("RG3_UNCR.dcm"))
    )


def test_enhanced_ct_rescale_from_functional_groups() -> None:
    ds = _load("eCT_Supplemental.dcm")
    slope, intercept = frame_rescale(ds, 0)
    pvt = ds.SharedFunctionalGroupsSequence[0].get("PixelValueTransformationSequence")
    per = ds.PerFrameFunctionalGroupsSequence[0].get("PixelValueTransformationSequence")
    item = (per or pvt)[0]
    assert (slope, intercept) == (float(item.RescaleSlope), float(item.RescaleIntercept))
    assert PixelMeta.from_dataset(ds).rescale_intercept == intercept


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("SC_rgb.dcm", "colour"),
        ("SC_ybr_full_uncompressed.dcm", "colour"),
        ("OBXXXX1A.dcm", "palette"),
        ("liver_1frame.dcm", "1-bit"),
    ],
)
def test_unsupported_real_files(name: str, words: str) -> None:
    ds = _load(name)
    with pytest.raises(UnsupportedInput, match=words):
        check_supported(ds)
    with pytest.raises(UnsupportedInput):
        read_pixels(ds)


def test_float_pixel_data_refused() -> None:
    ds = Dataset()
    ds.Rows = ds.Columns = 32
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 32
    ds.FloatPixelData = np.zeros((32, 32), np.float32).tobytes()
    with pytest.raises(UnsupportedInput, match="float"):
        check_supported(ds)


def test_too_small_refused() -> None:
    ds = _load("MR_small.dcm")
    arr = read_pixels(ds)[:8, :12]
    ds.Rows, ds.Columns = arr.shape
    ds.PixelData = arr.tobytes()
    with pytest.raises(UnsupportedInput, match="12x8"):
        check_supported(ds)


def test_no_pixel_data_refused() -> None:
    ds = _load("MR_small.dcm")
    del ds.PixelData
    with pytest.raises(UnsupportedInput, match="no pixel data"):
        check_supported(ds)


def test_incomplete_pixel_module_refused() -> None:
    ds = _load("MR_small.dcm")
    del ds.BitsAllocated
    with pytest.raises(UnsupportedInput, match="incomplete"):
        check_supported(ds)


def test_undecodable_pixel_data_is_unsupported_input() -> None:
    ds = _load("MR_truncated.dcm")  # fewer bytes of pixel data than Rows x Columns
    with pytest.raises(UnsupportedInput, match="could not be decoded"):
        read_pixels(ds)


def test_read_image_gives_stored_values_and_their_meta() -> None:
    ds = _load("CT_small.dcm")
    pixels, meta = read_image(ds)
    np.testing.assert_array_equal(pixels, read_pixels(ds))
    assert meta == PixelMeta.from_dataset(ds)
    assert (meta.modality, meta.bits_stored, meta.pixel_representation) == ("CT", 16, 1)
    with pytest.raises(UnsupportedInput, match="colour"):
        read_image(_load("SC_rgb.dcm"))


def test_the_derive_stage_reads_with_the_engine_reader() -> None:
    import dicom_node.derive.pixels as derive_pixels

    assert derive_pixels.read_pixels is read_pixels
    assert derive_pixels.check_supported is check_supported
