"""Backends behind one interface. GPU backends skip here with the reason."""

import subprocess
import sys

import numpy as np
import pytest

from sr_engine import BackendUnavailable, Engine, PixelMeta
from sr_engine.backends import create_backend, cuda_usable, tensorrt_usable
from sr_engine.backends.onnxruntime_backend import OnnxRuntimeBackend
from sr_engine.model_card import load_card
from tests.onnx_models import write_test_model

TRT_REASON = tensorrt_usable()
CUDA_REASON = cuda_usable()


@pytest.fixture(scope="module")
def card_path(tmp_path_factory):
    return write_test_model(tmp_path_factory.mktemp("m"), "test-x2")


def test_onnxruntime_runs_batches(card_path):
    be = OnnxRuntimeBackend(card_path.with_suffix(".onnx"), threads=1)
    x = np.random.default_rng(0).random((3, 1, 20, 24)).astype(np.float32)
    y = be.run(x)
    assert y.shape == (3, 1, 40, 48) and y.dtype == np.float32
    np.testing.assert_allclose(be.run(x[1:2]), y[1:2], atol=1e-6)
    assert be.fixed_tile is None and be.max_batch is None


def test_onnxruntime_bad_file_is_backend_unavailable(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(BackendUnavailable, match="x.onnx"):
        OnnxRuntimeBackend(bad)


def test_import_does_not_pull_torch(card_path):
    code = (
        "import sys, numpy as np\n"
        "from sr_engine import Engine, PixelMeta\n"
        f"e = Engine.load({str(card_path)!r}, backend='onnxruntime')\n"
        "e.enhance(np.zeros((32, 32), np.uint16), PixelMeta())\n"
        "assert 'torch' not in sys.modules and 'tensorrt' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(CUDA_REASON is None, reason="a CUDA device is present")
def test_auto_falls_back_to_onnxruntime_without_a_gpu(card_path):
    assert Engine.load(card_path, backend="auto").backend_name == "onnxruntime"


@pytest.mark.skipif(TRT_REASON is None, reason="TensorRT is usable here")
def test_tensorrt_unavailable_says_why(card_path):
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        Engine.load(card_path, backend="tensorrt")


@pytest.mark.gpu
@pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT: {TRT_REASON}")
def test_tensorrt_matches_onnxruntime(card_path, tmp_path):
    card = load_card(card_path)
    be = create_backend("tensorrt", card, card_path.with_suffix(".onnx"))
    assert be.fixed_tile == (card.tile.size, card.tile.size)
    ref = OnnxRuntimeBackend(card_path.with_suffix(".onnx"))
    x = np.random.default_rng(0).random((2, 1, *be.fixed_tile)).astype(np.float32)
    np.testing.assert_allclose(be.run(x), ref.run(x), atol=2e-3)
    # the serialized engine is cached beside the ONNX and reused
    assert list(card_path.parent.glob("*.engine"))
    e = Engine.load(card_path, backend="tensorrt")
    px = np.random.default_rng(1).integers(0, 4096, (100, 150)).astype(np.uint16)
    assert e.enhance(px, PixelMeta(bits_stored=12)).consistency_rmse <= 0.5
