"""A model's gain does not depend on how an image is stored; the floor is the floor, bit for
bit; what the noise-by-band table calls invented grain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from sr_engine import Engine, PixelMeta, selfcheck
from sr_engine import consistency as dc
from sr_engine.intensity import stored_limits
from sr_engine.padding import find_padding
from sr_engine.resample import upsample_spline
from tests.test_intensity import data_store_file

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")


def _gain(out: np.ndarray, bic: np.ndarray, hr: np.ndarray) -> float:
    h = hr.astype(np.float64)
    return 10 * np.log10(np.mean((bic - h) ** 2) / np.mean((out.astype(np.float64) - h) ** 2))


def _colin27_slice() -> np.ndarray:
    nib = pytest.importorskip("nibabel")
    if not COLIN27.is_file():
        pytest.skip(f"{COLIN27} (Debian mricron-data) is not installed")
    vol = np.asarray(nib.load(str(COLIN27)).dataobj)
    sl = np.rot90(vol[:, :, 100]).astype(np.int64)  # axial, 0-255, zero background
    return sl[: sl.shape[0] // 2 * 2, : sl.shape[1] // 2 * 2]


def test_a_constant_background_outside_ct_is_seen_as_stored_and_returned_exactly():
    img = np.zeros((64, 64), np.uint16)
    img[16:48, 16:48] = 500
    img[20:30, 20:30] = 800
    plan = find_padding(img, PixelMeta("MR", 12, 0))
    assert plan is not None and plan.value == 0
    assert not plan.fill.any()  # the network sees the skin-air edge as it is
    assert np.array_equal(plan.fill_input(img), img)
    out = plan.restore(np.full((128, 128), 7.0), img, 2)
    pure_hr = np.repeat(np.repeat(plan.pure, 2, 0), 2, 1)
    assert (out[pure_hr] == 0).all()


@pytest.mark.slow
def test_zero_background_mr_keeps_the_networks_gain():
    """Colin27 (values 0-255, zero outside the head) in a 12-bit MR container: hiding the
    background from the network cost it more than half of its gain over bicubic."""
    hr = _colin27_slice().astype(np.uint16)
    lr = np.rint(dc.area_down(hr, 2)).astype(np.uint16)
    eng = Engine.load("mr-x2", backend="onnxruntime", threads=1)
    out = eng.enhance(lr, PixelMeta("MR", 12, 0)).pixels
    gain = _gain(out, upsample_spline(lr, 2), hr)
    assert gain > 2.5, gain  # the background filled with tissue: +1.7 dB


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, source",
    [("general-x2", "RG3_J2KR.dcm"), ("mr-x2", "MR-SIEMENS-DICOM-WithOverlays.dcm")],
)
def test_the_gain_does_not_depend_on_the_container(model, source):
    from training.evaluate.storage_variants import RANGE8, SPREAD_TARGET_DB, run_variants, spreads
    from training.evaluate.unseen import ModelRunner, UnseenImage

    path = data_store_file(source) if source.startswith("RG") else get_testdata_file(source)
    ds = pydicom.dcmread(path)
    hr = ds.pixel_array
    hr = hr[: hr.shape[0] // 2 * 2, : hr.shape[1] // 2 * 2]
    img = UnseenImage(source, ds.Modality, hr, PixelMeta.from_dataset(ds))
    rows = run_variants([img], [ModelRunner(model, threads=1)])
    assert len(rows) == len(RANGE8)
    assert all(not r["fell_back"] for r in rows)  # the network's detail is kept in each
    (s,) = spreads(rows)
    assert s["spread"] < SPREAD_TARGET_DB, rows  # bits_stored mapping: 0.83 dB on RG3
    assert s["min"] > rows[0]["floor_gain"]


def _ct_with_scan_circle() -> tuple[np.ndarray, PixelMeta]:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    px = ds.pixel_array.astype(np.int16)
    yy, xx = np.mgrid[: px.shape[0], : px.shape[1]]
    px[(yy - 64) ** 2 + (xx - 60) ** 2 > 58**2] = -2000 - int(ds.RescaleIntercept)
    return px, PixelMeta.from_dataset(ds)


def test_a_frame_the_self_check_sends_to_the_floor_is_the_floor_bit_for_bit(monkeypatch):
    from training.evaluate.unseen import interpolate

    eng = Engine.load("ct-x2", backend="onnxruntime", threads=1)
    monkeypatch.setattr(selfcheck, "detail_weights", lambda *a, **k: [0.0] * a[1].shape[0])
    px, meta = _ct_with_scan_circle()
    assert find_padding(px, meta) is not None
    res = eng.enhance(px, meta)
    assert res.detail_weights == (0.0,)
    lo, hi = stored_limits(meta, px.dtype)
    floor = selfcheck.floor_frame(px, meta, 2, lo, hi)
    assert floor.dtype == px.dtype and np.array_equal(res.pixels, floor)
    # and the benchmark scores exactly that as the floor (not a plain projection of bicubic)
    assert np.array_equal(interpolate("floor", px, meta), floor.astype(np.float64))


def test_noise_bands_flag_invented_grain_and_not_rounding():
    from training.evaluate.unseen import UnseenImage
    from training.evaluate.unseen_noise import band_power, flat_patches, noise_bands, rounding_power

    rng = np.random.default_rng(0)
    white = rng.normal(0, 10, (32, 32))
    p = band_power(white)
    assert p["sub-pixel"] > 2.5 * p["input"]  # white noise: most of the spectrum is sub-pixel
    assert p["input"] + p["sub-pixel"] == pytest.approx(white.var(), rel=0.15)
    r = rounding_power()
    assert sum(r.values()) == pytest.approx(1 / 12, rel=2e-3)  # all but the mean (removed)

    yy, xx = np.mgrid[:128, :128]
    hr = np.rint(1000 + 0.5 * xx + rng.normal(0, 4, (128, 128))).astype(np.int16)
    hr[:, :8] = 0  # a background at the lowest value is never a noise patch
    img = UnseenImage("flat", "CT", hr, PixelMeta("CT", 16, 1))
    smooth = upsample_spline(dc.area_down(hr, 2), 2)
    checker = np.where((yy + xx) % 2, 6.0, -6.0)
    rows = noise_bands([img], {"flat": {"smooth": np.rint(smooth), "grain": hr + checker}})
    by = {r["method"]: r for r in rows}
    assert by["smooth"]["noisier"] == [] and by["smooth"]["ratio"]["sub-pixel"] < 0.5
    assert "sub-pixel" in by["grain"]["noisier"]
    corners = flat_patches(hr)
    assert corners and all(x >= 8 for _, x in corners)  # patches avoid the background


def test_storage_containers_encode_the_base_exactly():
    from training.evaluate.storage_variants import HU12, RANGE8

    base8 = np.arange(256, dtype=np.int64).reshape(16, 16)
    hu = np.arange(-1024, 3072, 16, dtype=np.int64).reshape(16, 16)
    for c, base in [(c, base8) for c in RANGE8] + [(c, hu) for c in HU12]:
        stored = c.encode(base)
        meta = c.meta("MR")
        lo, hi = stored_limits(meta, stored.dtype)
        assert stored.min() >= lo and stored.max() <= hi, c.name
        assert np.array_equal(c.decode(stored), base), c.name
        modality = stored * meta.rescale_slope + meta.rescale_intercept
        if c.photometric == "MONOCHROME2" and base is hu:
            assert np.allclose(modality, hu), c.name  # HU stay HU in every CT container


@pytest.mark.slow
def test_the_floor_of_lossy_padding_is_not_rebuilt_as_tissue():
    """693_UNCI (lossy JPEG 2000): its -2000 HU padding holds ringing (-2971 to -1100 HU), so
    almost none of it is the padding value. Rebuilding those blocks from the filled frame
    put tissue values into the padding (the floor fell 9.7 dB below bicubic): they take
    the cubic interpolation of the input instead."""
    ds = pydicom.dcmread(data_store_file("693_UNCI.dcm"))
    hr = ds.pixel_array
    meta = PixelMeta.from_dataset(ds)
    lr = np.rint(dc.area_down(hr, 2)).astype(hr.dtype)
    lo, hi = stored_limits(meta, lr.dtype)
    bic = upsample_spline(lr, 2)
    plain = dc.project(bic, lr, 2, lo, hi)
    node = selfcheck.floor_frame(lr, meta, 2, lo, hi)
    assert _gain(node, bic, hr) > _gain(plain, bic, hr) - 0.05
