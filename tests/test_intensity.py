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


@pytest.mark.slow
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


# -- padding: never seen as tissue, back bit-exact, the scan-circle edge no worse ----------
from sr_engine.padding import border_connected, fill_masked, find_padding  # noqa: E402


def _scan_circle(size: int = 96, pad_hu: int = -3024) -> tuple[np.ndarray, PixelMeta]:
    """A CT slice as scanners store it: tissue in a circle, padding outside (no tag)."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    r = np.hypot(yy - size / 2, xx - size / 2)
    rng = np.random.default_rng(0)
    hu = np.where(r < size * 0.3, 40.0, -1000.0) + rng.normal(0, 10, (size, size))
    hu[np.hypot(yy - size * 0.45, xx - size * 0.55) < size * 0.08] = 700.0  # bone
    hu = np.where(r < size * 0.46, hu, pad_hu)
    meta = PixelMeta("CT", 16, 1, 1.0, -1024.0)
    return np.rint(hu + 1024).astype(np.int16), meta


def _area(a: np.ndarray) -> np.ndarray:
    h, w = a.shape
    return a.astype(np.float64).reshape(h // 2, 2, w // 2, 2).mean((1, 3))


def test_border_connected_keeps_interior_regions_out():
    cand = np.zeros((20, 20), bool)
    cand[:, :3] = True  # touches the border
    cand[8:12, 8:12] = True  # interior (lung, bowel gas)
    cand[5, 2:15] = True  # a thin arm from the border region
    got = border_connected(cand)
    assert got[:, :3].all() and got[5, 2:15].all()
    assert not got[8:12, 8:12].any()


def test_fill_replaces_masked_pixels_with_nearby_values():
    x = np.full((16, 16), 100.0)
    mask = np.zeros_like(x, bool)
    mask[:, :5] = True
    x[mask] = -3000.0
    y = fill_masked(x, mask)
    assert np.allclose(y, 100.0)  # the network sees a smooth continuation, no step


@pytest.mark.parametrize("tag", [False, True])
def test_ct_padding_is_found_with_and_without_tag(tag):
    hr, meta = _scan_circle()
    if tag:
        meta = PixelMeta("CT", 16, 1, 1.0, -1024.0, padding_value=-2000)
    lr = np.rint(_area(hr)).astype(np.int16)
    plan = find_padding(lr, meta)
    assert plan is not None and plan.value == -2000 and plan.unmix
    assert plan.pure[0, 0] and plan.pure[-1, -1] and not plan.pure[24, 24]
    assert (plan.fill >= plan.pure).all()
    # restored from an ideal tissue estimate: pure blocks exact, edge blocks unmixed
    tissue = np.where(hr == -2000, 24, hr).astype(np.float64)
    out = plan.restore(tissue, lr, 2)
    pure_hr = np.repeat(np.repeat(plan.pure, 2, 0), 2, 1)
    assert (out[pure_hr] == -2000).all()
    edge = np.repeat(np.repeat(plan.fill & ~plan.pure, 2, 0), 2, 1)
    assert np.mean(np.abs(out[edge] - hr[edge]) < 100) > 0.9
    assert np.allclose(_area(out), lr, atol=0.51)  # block means are the input's


def test_mr_zero_background_and_no_padding():
    img = np.zeros((64, 64), np.uint16)
    img[16:48, 16:48] = 500
    plan = find_padding(img, PixelMeta("MR", 12, 0))
    assert plan is not None and plan.value == 0 and not plan.unmix
    flat = np.full((64, 64), 700, np.uint16) + np.arange(64, dtype=np.uint16)
    assert find_padding(flat, PixelMeta("MR", 12, 0)) is None
    hr, _ = _scan_circle()
    noairpad = np.maximum(hr, 0).astype(np.int16)  # clipped at -1024 HU: nothing to mask
    assert find_padding(noairpad, PixelMeta("CT", 16, 1, 1.0, -1024.0)) is None


def test_engine_returns_padding_bit_exact_and_edge_no_worse_than_bicubic(tmp_path):
    from sr_engine.resample import upsample_spline

    hr, meta = _scan_circle(128)
    lr = np.rint(_area(hr)).astype(np.int16)
    card = write_test_model(
        tmp_path, "ct-pad", intensity={"model": "ct_hu", "window": [-1024, 3071]},
        tile={"size": 48, "overlap": 8, "batch": 4},
    )  # fmt: skip
    out = Engine.load(card, backend="onnxruntime").enhance(lr, meta).pixels
    assert (out[hr == -2000] == -2000).sum() >= 0.97 * (hr == -2000).sum()
    full = np.repeat(np.repeat(lr == -2000, 2, 0), 2, 1)
    assert (out[full] == -2000).all()  # pure padding blocks come back bit-exact
    yy, xx = np.mgrid[:128, :128] + 0.5
    band = np.abs(np.hypot(yy - 64, xx - 64) - 128 * 0.46) < 3  # the scan-circle edge
    bic = np.rint(upsample_spline(lr, 2))
    err = np.sqrt(np.mean((out[band].astype(float) - hr[band]) ** 2))
    err_bic = np.sqrt(np.mean((bic[band] - hr[band]) ** 2))
    assert err < 0.5 * err_bic


def test_from_dataset_reads_pixel_padding_value():
    ds = pydicom.dcmread(data_store_file("693_UNCR.dcm"))
    meta = PixelMeta.from_dataset(ds)
    assert meta.padding_value == -2000 and meta.padding_range_limit is None
    assert PixelMeta.from_dataset(pydicom.dcmread(MR)).padding_value is None


# -- self-check across scales -----------------------------------------------------------
def test_self_check_keeps_a_good_network_and_drops_a_bad_one():
    from sr_engine import selfcheck

    rng = np.random.default_rng(1)
    base = np.rint(rng.uniform(0, 1000, (32, 32))).astype(np.int16)
    frames = np.repeat(np.repeat(base, 4, 0), 4, 1)[None]  # 128², blocky at every scale

    def nearest(c):  # this "network" knows the images are blocky
        return np.repeat(np.repeat(c, 2, 1), 2, 2)

    def noisy(c):  # this one invents texture
        up = nearest(c).astype(np.float64)
        return up + rng.normal(0, 300, up.shape)

    assert selfcheck.detail_weights(nearest, frames, 2, -32768, 32767) == [1.0]
    assert selfcheck.detail_weights(noisy, frames, 2, -32768, 32767) == [0.0]
    small = frames[:, :40, :40]
    assert selfcheck.detail_weights(noisy, small, 2, -32768, 32767) == [1.0]  # too small to judge


def test_self_check_wants_a_clear_gain_before_it_keeps_network_detail():
    from sr_engine import selfcheck
    from sr_engine.resample import upsample_spline

    rng = np.random.default_rng(4)
    base = np.rint(rng.uniform(0, 1000, (32, 32))).astype(np.int16)
    frames = np.repeat(np.repeat(base, 4, 0), 4, 1)[None]

    def towards_truth(share):  # cubic, moved ``share`` of the way to the (blocky) truth
        def net(c):
            near = np.repeat(np.repeat(c, 2, 1), 2, 2).astype(np.float64)
            cub = np.stack([upsample_spline(f, 2) for f in c])
            return cub + share * (near - cub)

        return net

    assert selfcheck.detail_weights(towards_truth(0.5), frames, 2, -32768, 32767) == [1.0]
    # a gain under MIN_GAIN_DB on the downsampled copy is no evidence: the floor
    assert selfcheck.detail_weights(towards_truth(0.02), frames, 2, -32768, 32767) == [0.0]


def test_engine_self_check_is_never_worse_than_the_floor_on_its_own_scale(tmp_path):
    from sr_engine import consistency as dc
    from sr_engine.resample import upsample_spline

    ds = pydicom.dcmread(data_store_file("693_UNCR.dcm"))
    hr = ds.pixel_array[128:384, 128:384]
    meta = PixelMeta.from_dataset(ds)
    lr = np.rint(dc.area_down(hr, 2)).astype(hr.dtype)
    card = write_test_model(
        tmp_path, "ct-sc", intensity={"model": "ct_hu", "window": [-1024, 3071]}
    )
    eng = Engine.load(card, backend="onnxruntime")
    on = eng.enhance(lr, meta).pixels.astype(float)
    off = eng.enhance(lr, meta, self_check=False).pixels.astype(float)
    floor = dc.project(upsample_spline(lr, 2), lr, 2, -32768, 32767)
    err = {
        k: np.sqrt(np.mean((v - hr) ** 2)) for k, v in (("on", on), ("off", off), ("floor", floor))
    }
    assert err["on"] <= max(err["off"], err["floor"]) + 1e-9
    assert np.abs(dc.area_down(on, 2) - lr).max() <= 0.5  # still consistent with the input


def test_a_frame_the_self_check_gives_the_floor_is_exactly_the_floor(tmp_path, monkeypatch):
    """Weight 0 means the floor: the cubic interpolation of the stored frame as it is, data
    consistent, with the pure padding blocks set to the padding value and the blocks at
    the padding's edge rebuilt within their tissue range (as after the network)."""
    from sr_engine import consistency as dc
    from sr_engine import selfcheck
    from sr_engine.resample import upsample_spline

    yy, xx = np.mgrid[:96, :96]
    rng = np.random.default_rng(5)
    lr = np.where((yy - 48) ** 2 + (xx - 48) ** 2 < 40**2, rng.normal(40, 30, (96, 96)), -2000)
    lr = np.rint(lr).astype(np.int16)
    meta = PixelMeta("CT", 16, 1, rescale_intercept=0.0)
    plan = find_padding(lr, meta)
    assert plan is not None and plan.pure.any()
    card = write_test_model(
        tmp_path, "ct-floor", intensity={"model": "ct_hu", "window": [-1024, 3071]}
    )
    eng = Engine.load(card, backend="onnxruntime")
    monkeypatch.setattr(selfcheck, "detail_weights", lambda *a, **k: [0.0])
    calls = []
    run = eng.backend.run
    monkeypatch.setattr(eng.backend, "run", lambda b: calls.append(b.shape) or run(b))
    out = eng.enhance(lr, meta).pixels.astype(np.float64)
    assert calls == []  # the floor needs no network
    floor = dc.project(upsample_spline(lr, 2), lr, 2, -32768, 32767)
    pure = np.repeat(np.repeat(plan.pure, 2, 0), 2, 1)
    assert np.all(out[pure] == -2000)
    edge = np.repeat(np.repeat(plan.fill & ~plan.pure, 2, 0), 2, 1)
    rest = ~pure & ~edge
    np.testing.assert_allclose(out[rest], np.rint(floor[rest]), atol=1.0)
    assert out[edge].min() >= lr[lr > -2000].min() and out[edge].max() <= lr.max()


def test_spline_upsampling_is_scipys_order_3_zoom():
    ndimage = pytest.importorskip("scipy.ndimage")
    from sr_engine.resample import upsample_spline

    a = np.random.default_rng(3).normal(0, 100, (40, 27))
    ref = ndimage.zoom(a, 2, order=3, mode="reflect", grid_mode=True)
    assert np.abs(upsample_spline(a, 2) - ref).max() < 1e-6
    flat = np.full((16, 16), 7.0)
    assert np.allclose(upsample_spline(flat, 2), 7.0)
