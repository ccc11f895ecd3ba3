"""Engine.load / Engine.enhance on the test graph and real DICOM pixels; the registry."""

import json

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from sr_engine import (
    BackendUnavailable,
    Engine,
    Enhanced,
    ModelCardError,
    PixelMeta,
    UnsupportedInput,
    list_models,
    model_for_modality,
    resolve_model,
)
from tests.onnx_models import write_test_model
from tests.test_intensity import data_store_file, meta_of

CT_CARD = {"model": "ct_hu", "window": [-1024, 3071]}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    tile = {"size": 64, "overlap": 16, "batch": 3}
    write_test_model(d, "ct-x2", intensity=CT_CARD, modalities=["CT"], tile=tile)
    write_test_model(d, "ct-x2-gan", intensity=CT_CARD, modalities=["CT"], tile=tile)
    write_test_model(d, "mr-x2", intensity={"model": "percentile"}, modalities=["MR"], tile=tile)
    write_test_model(d, "general-x2", modalities=["CR", "DX", "MG", "OT"], tile=tile)
    write_test_model(d, "general-x4", scale=4, tile={"size": 32, "overlap": 8, "batch": 4})
    return d


def test_load_by_name_and_path(models):
    e = Engine.load("ct-x2", backend="onnxruntime", model_dirs=[models])
    assert e.card.name == "ct-x2" and e.card_path == models / "ct-x2.json"
    assert e.backend_name == "onnxruntime"
    e2 = Engine.load(models / "mr-x2.json", backend="onnxruntime")
    assert e2.card.intensity.model == "percentile"
    e3 = Engine.load(str(models / "mr-x2.onnx"), backend="onnxruntime")
    assert e3.card.name == "mr-x2"


def test_unknown_model_lists_the_available_ones(models):
    with pytest.raises(ModelCardError, match=r"'nope' not found; available: .*ct-x2.*mr-x2"):
        Engine.load("nope", model_dirs=[models])


def test_unknown_backend_is_refused(models):
    with pytest.raises(BackendUnavailable, match="unknown backend"):
        Engine.load("ct-x2", backend="opencl", model_dirs=[models])


def test_registry(models, tmp_path):
    names = [c.name for c, _ in list_models([models])]
    assert names == sorted(names) and {"ct-x2", "mr-x2", "general-x2"} <= set(names)
    assert model_for_modality("CT", [models]).name == "ct-x2.json"  # never the GAN variant
    assert model_for_modality("MR", [models]).name == "mr-x2.json"
    assert model_for_modality("CR", [models]).name == "general-x2.json"
    assert model_for_modality("US", [models]).name == "general-x2.json"
    assert resolve_model("general-x4", [models]) == models / "general-x4.json"
    # a broken card is skipped, not fatal
    (tmp_path / "broken.json").write_text(json.dumps({"name": "broken"}))
    assert "broken" not in [c.name for c, _ in list_models([tmp_path, models])]
    # a card in a configured directory overrides a bundled/later one of the same name
    write_test_model(tmp_path, "ct-x2", intensity=CT_CARD, modalities=["CT"])
    assert resolve_model("ct-x2", [tmp_path, models]) == tmp_path / "ct-x2.json"


def test_sha_mismatch_refuses_to_load(models, tmp_path):
    card = write_test_model(tmp_path, "bad-x2")
    (tmp_path / "bad-x2.onnx").write_bytes((tmp_path / "bad-x2.onnx").read_bytes() + b"\0")
    with pytest.raises(ModelCardError, match="sha256"):
        Engine.load(card, backend="onnxruntime")


@pytest.fixture(scope="module")
def ct():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    return ds.pixel_array, meta_of(ds)


def test_enhance_ct_shape_dtype_consistency(models, ct):
    px, meta = ct
    e = Engine.load("ct-x2", backend="onnxruntime", model_dirs=[models])
    res = e.enhance(px, meta)
    assert isinstance(res, Enhanced)
    assert res.pixels.shape == (256, 256) and res.pixels.dtype == px.dtype
    assert res.consistency_rmse <= 0.5 and res.consistency_max_abs <= 1
    assert res.seconds > 0
    down = res.pixels.reshape(128, 2, 128, 2).mean((1, 3))
    np.testing.assert_allclose(down, px, atol=1)


@pytest.mark.parametrize("consistency", [True, False])
def test_tiled_equals_untiled_within_one_unit(models, ct, consistency):
    px, meta = ct
    e = Engine.load("ct-x2", backend="onnxruntime", model_dirs=[models])
    assert e.plan(*px.shape).count > 1
    tiled = e.enhance(px, meta, consistency).pixels.astype(np.int64)
    whole = e.enhance(px, meta, consistency, untiled=True).pixels.astype(np.int64)
    assert np.abs(tiled - whole).max() <= 1


def test_x4_and_odd_sizes(models):
    e = Engine.load("general-x4", backend="onnxruntime", model_dirs=[models])
    px = np.random.default_rng(3).integers(0, 1024, (37, 70)).astype(np.uint16)
    res = e.enhance(px, PixelMeta(bits_stored=10))
    assert res.pixels.shape == (148, 280) and res.pixels.max() <= 1023
    assert res.consistency_rmse <= 0.5


def test_multiframe_mr_frame_by_frame(models):
    ds = pydicom.dcmread(data_store_file("emri_small.dcm"))
    px, meta = ds.pixel_array, meta_of(ds)
    assert px.ndim == 3
    e = Engine.load("mr-x2", backend="onnxruntime", model_dirs=[models])
    res = e.enhance(px, meta)
    assert res.pixels.shape == (px.shape[0], 128, 128) and res.pixels.dtype == px.dtype
    assert res.consistency_rmse <= 0.5
    # each frame as if alone (percentile per frame)
    one = e.enhance(px[3], meta).pixels
    np.testing.assert_array_equal(one, res.pixels[3])


def test_mr_background_at_zero_consistent(models):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    px = ds.pixel_array.copy()
    px[:, :12] = 0  # background at the stored minimum of an unsigned image
    meta = PixelMeta(modality="MR", bits_stored=12, pixel_representation=0)
    res = Engine.load("mr-x2", backend="onnxruntime", model_dirs=[models]).enhance(
        px.astype(np.uint16), meta
    )
    assert res.pixels.min() == 0
    assert res.consistency_rmse <= 0.5


def test_ct_air_at_stored_minimum_consistent(models, ct):
    px, _ = ct
    px = px.astype(np.uint16)
    px[:20] = 0  # -1024 HU = stored 0 with BitsStored 12, unsigned, intercept -1024
    meta = PixelMeta(modality="CT", bits_stored=12, rescale_intercept=-1024)
    res = Engine.load("ct-x2", backend="onnxruntime", model_dirs=[models]).enhance(px, meta)
    assert res.pixels[:40].max() == 0 and res.consistency_rmse <= 0.5


def test_enhance_refuses_unsupported(models):
    e = Engine.load("general-x2", backend="onnxruntime", model_dirs=[models])
    with pytest.raises(UnsupportedInput):
        e.enhance(np.zeros((8, 8), np.uint16), PixelMeta())
    with pytest.raises(UnsupportedInput):
        e.enhance(np.zeros((32, 32), np.float32), PixelMeta())


def test_tiled_equals_untiled_with_a_real_rrdbnet(tmp_path, ct):
    """The seam bound with ESRGAN's generator (training.archs), small and random-init."""
    torch = pytest.importorskip("torch")
    archs = pytest.importorskip("training.archs.rrdbnet_arch")
    from sr_engine.model_card import sha256_of

    torch.manual_seed(0)
    net = archs.RRDBNet(1, 1, 2, num_feat=16, num_block=2, num_grow_ch=8).eval()
    onnx_path = tmp_path / "rrdb-x2.onnx"
    torch.onnx.export(
        net,
        (torch.rand(1, 1, 32, 32),),
        str(onnx_path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "N", 2: "H", 3: "W"}, "output": {0: "N", 2: "h", 3: "w"}},
        dynamo=False,
    )
    card = json.loads(write_test_model(tmp_path, "tmp-x2").read_text())
    card.update(
        name="rrdb-x2",
        weights=onnx_path.name,
        sha256=sha256_of(onnx_path),
        intensity=CT_CARD,
        tile={"size": 64, "overlap": 16, "batch": 4},
    )
    (tmp_path / "rrdb-x2.json").write_text(json.dumps(card))
    px, meta = ct
    e = Engine.load(tmp_path / "rrdb-x2.json", backend="onnxruntime", threads=1)
    assert e.plan(*px.shape).count == 9
    tiled = e.enhance(px, meta, consistency=False).pixels.astype(np.int64)
    whole = e.enhance(px, meta, consistency=False, untiled=True).pixels.astype(np.int64)
    assert np.abs(tiled - whole).max() <= 1


@pytest.mark.parametrize("consistency", [True, False])
def test_ct_pixels_outside_the_window_pass_through(models, ct, consistency):
    """Scanner padding (-3024 HU) and metal above the window are not what the network saw:
    they keep their stored value over their 2x2 block instead of the window's edge."""
    px, meta = ct
    px = px.copy()
    pad = int(round((-3024 - meta.rescale_intercept) / meta.rescale_slope))
    metal = int(round((3500 - meta.rescale_intercept) / meta.rescale_slope))
    px[:, :20] = pad  # a padded border, as 693_UNCR has
    px[60:64, 60:64] = metal
    e = Engine.load("ct-x2", backend="onnxruntime", model_dirs=[models])
    out = e.enhance(px, meta, consistency).pixels
    assert (out[:, :40] == pad).all()
    assert (out[120:128, 120:128] == metal).all()
    # inside the window the network's output is used (it is not nearest-neighbour)
    up = np.repeat(np.repeat(px, 2, 0), 2, 1)
    assert (out[:, 60:] != up[:, 60:]).mean() > 0.3


def test_enhance_many_equals_one_by_one(models, ct):
    """Tiles of several slices (different shapes, a multi-frame item) share backend calls;
    every result is the one enhance() gives for that item alone."""
    px, meta = ct
    e = Engine.load("ct-x2", backend="onnxruntime", model_dirs=[models])
    rng = np.random.default_rng(5)
    items = [
        (px, meta),
        (px[:100, :90].copy(), meta),
        (np.stack([px[10:74, 20:84], px[30:94, 0:64]]), meta),
        (px[::-1].copy(), meta),
    ]
    many = e.enhance_many(items)
    assert len(many) == len(items)
    for (p, m), res in zip(items, many, strict=True):
        one = e.enhance(p, m)
        assert res.pixels.shape == one.pixels.shape and res.pixels.dtype == p.dtype
        np.testing.assert_array_equal(res.pixels, one.pixels)
        assert res.consistency_rmse == one.consistency_rmse
    assert sum(r.seconds for r in many) > 0
    mr = rng.integers(0, 4096, (40, 40)).astype(np.uint16)
    with pytest.raises(UnsupportedInput):  # checked before any runs
        e.enhance_many([(px, meta), (mr.astype(np.float32), meta)])
