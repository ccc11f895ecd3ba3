"""Stored values <-> network range: exact inverse, BitsStored clipping, MONOCHROME1, HU kept."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from sr_engine import Engine, PixelMeta, UnsupportedInput
from sr_engine.intensity import IntensityMap, check_input, stored_limits, to_stored
from sr_engine.model_card import Intensity
from tests.onnx_models import write_test_model


def meta_of(ds: pydicom.Dataset) -> PixelMeta:
    return PixelMeta(
        modality=ds.get("Modality", "OT"),
        bits_stored=int(ds.BitsStored),
        pixel_representation=int(ds.PixelRepresentation),
        rescale_slope=float(ds.get("RescaleSlope", 1) or 1),
        rescale_intercept=float(ds.get("RescaleIntercept", 0) or 0),
        photometric=ds.PhotometricInterpretation,
        samples_per_pixel=int(ds.SamplesPerPixel),
    )


def data_store_file(name: str) -> Path:
    data_store = pytest.importorskip("data_store")
    return Path(data_store.__file__).parent / "data" / name


CT = get_testdata_file("CT_small.dcm")
MR = get_testdata_file("MR_small.dcm")


@pytest.mark.parametrize(
    "model",
    [
        {"model": "ct_hu", "window": [-1024, 3071]},
        {"model": "percentile", "percentiles": [0.5, 99.5]},
        {"model": "bits_stored"},
    ],
)
@pytest.mark.parametrize("path", [CT, MR])
def test_forward_inverse_is_exact(model, path):
    ds = pydicom.dcmread(path)
    px, meta = ds.pixel_array, meta_of(ds)
    m = IntensityMap.fit(Intensity(**model), meta, px)
    x = m.forward(px)
    assert x.dtype == np.float32
    back = to_stored(m.inverse(x), meta, px.dtype)
    assert back.dtype == px.dtype
    np.testing.assert_array_equal(back, px)


def test_percentile_maps_percentiles_to_unit_range():
    ds = pydicom.dcmread(MR)
    px = ds.pixel_array
    m = IntensityMap.fit(Intensity(model="percentile", percentiles=(1, 99)), meta_of(ds), px)
    x = m.forward(px)
    assert np.percentile(x, 1) == pytest.approx(0, abs=1e-6)
    assert np.percentile(x, 99) == pytest.approx(1, abs=1e-6)


def test_ct_hu_window_uses_rescale():
    meta = PixelMeta(modality="CT", bits_stored=12, rescale_intercept=-1024)
    m = IntensityMap.fit(Intensity(model="ct_hu", window=(-1024, 1024)), meta, np.zeros((4, 4)))
    x = m.forward(np.array([0, 1024, 2048, 4095], np.uint16))
    np.testing.assert_allclose(x, [0, 0.5, 1, 1])  # -1024, 0, 1024 HU; above the window clips


def test_flat_image_percentile_is_not_degenerate():
    meta = PixelMeta(modality="MR", bits_stored=12)
    px = np.full((32, 32), 700, np.uint16)
    m = IntensityMap.fit(Intensity(model="percentile"), meta, px)
    assert np.isfinite(m.forward(px)).all()
    np.testing.assert_array_equal(to_stored(m.inverse(m.forward(px)), meta, px.dtype), px)


def test_to_stored_clips_to_bits_stored_and_keeps_dtype():
    meta = PixelMeta(bits_stored=12, pixel_representation=0)
    out = to_stored(np.array([-3.0, 2.4, 2.6, 5000.0]), meta, np.uint16)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, [0, 2, 3, 4095])
    signed = PixelMeta(bits_stored=12, pixel_representation=1)
    assert stored_limits(signed, np.dtype(np.int16)) == (-2048, 2047)
    out = to_stored(np.array([-5000.0, 5000.0]), signed, np.int16)
    np.testing.assert_array_equal(out, [-2048, 2047])


def test_monochrome1_is_not_inverted_in_storage(tmp_path):
    ds = pydicom.dcmread(data_store_file("RG3_UNCR.dcm"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    px = ds.pixel_array[800:928, 800:928]
    meta = meta_of(ds)
    m = IntensityMap.fit(Intensity(model="bits_stored"), meta, px)
    x = m.forward(px)
    # the network sees MONOCHROME2 contrast: larger stored value -> darker
    assert np.corrcoef(x.ravel(), px.ravel())[0, 1] < -0.99
    engine = Engine.load(write_test_model(tmp_path), backend="onnxruntime")
    out = engine.enhance(px, meta, consistency=False).pixels
    assert out.dtype == px.dtype and out.shape == (256, 256)
    down = out.reshape(128, 2, 128, 2).mean((1, 3))
    assert np.corrcoef(down.ravel(), px.ravel())[0, 1] > 0.99  # same polarity as the input
    assert abs(down.mean() - px.mean()) < 2


def _flattest_block(hu: np.ndarray, size: int = 32) -> tuple[int, int]:
    best, where = np.inf, (0, 0)
    for y in range(0, hu.shape[0] - size, 8):
        for x in range(0, hu.shape[1] - size, 8):
            b = hu[y : y + size, x : x + size]
            if b.mean() > -500 and b.std() < best:  # inside the body
                best, where = b.std(), (y, x)
    return where


@pytest.mark.parametrize("consistency", [True, False])
def test_flat_ct_region_keeps_mean_hu(tmp_path, consistency):
    ds = pydicom.dcmread(data_store_file("693_UNCR.dcm"))
    px, meta = ds.pixel_array, meta_of(ds)
    card = write_test_model(
        tmp_path,
        "ct-test",
        intensity={"model": "ct_hu", "window": [-1024, 3071]},
        tile={"size": 192, "overlap": 16, "batch": 4},
    )
    out = Engine.load(card, backend="onnxruntime").enhance(px, meta, consistency).pixels
    s, i = meta.rescale_slope, meta.rescale_intercept
    hu_in = px * s + i
    y, x = _flattest_block(hu_in)
    hu_out = out[2 * y : 2 * y + 64, 2 * x : 2 * x + 64] * s + i
    assert abs(hu_out.mean() - hu_in[y : y + 32, x : x + 32].mean()) <= 1.0


def test_unsupported_inputs_have_plain_reasons():
    ok = np.zeros((32, 32), np.uint16)
    with pytest.raises(UnsupportedInput, match="colour"):
        ds = pydicom.dcmread(get_testdata_file("SC_rgb.dcm"))
        check_input(ds.pixel_array, meta_of(ds))
    with pytest.raises(UnsupportedInput, match="palette colour"):
        check_input(ok, PixelMeta(photometric="PALETTE COLOR", bits_stored=8))
    with pytest.raises(UnsupportedInput, match="float"):
        check_input(ok.astype(np.float32), PixelMeta())
    with pytest.raises(UnsupportedInput, match="1-bit"):
        check_input(ok.astype(np.uint8), PixelMeta(bits_stored=1))
    with pytest.raises(UnsupportedInput, match="too small"):
        check_input(np.zeros((15, 64), np.uint16), PixelMeta())
    with pytest.raises(UnsupportedInput, match="shape"):
        check_input(np.zeros((2, 2, 32, 32), np.uint16), PixelMeta())
    check_input(ok, PixelMeta(photometric="MONOCHROME1"))
