"""Backends behind one interface. GPU backends skip here with the reason."""

import subprocess
import sys

import numpy as np
import pytest

from sr_engine import BackendUnavailable, Engine, PixelMeta
from sr_engine.backends import create_backend, cuda_usable, tensorrt_usable
from sr_engine.backends.onnxruntime_backend import OnnxRuntimeBackend
from sr_engine.backends.openvino_backend import openvino_usable
from sr_engine.model_card import load_card
from sr_engine.selection import candidate_names
from tests.onnx_models import write_test_model

TRT_REASON = tensorrt_usable()
CUDA_REASON = cuda_usable()
OV_REASON = openvino_usable()


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
def test_auto_picks_a_cpu_path_without_a_gpu(card_path, tmp_path):
    e = Engine.load(card_path, backend="auto", threads=1, cache_dir=tmp_path)
    assert e.backend_name in candidate_names()
    assert not e.backend_name.startswith(("torch-cuda", "tensorrt"))


@pytest.mark.skipif(OV_REASON is not None, reason=f"OpenVINO: {OV_REASON}")
def test_openvino_fp32_matches_onnxruntime(card_path):
    be = create_backend("openvino-fp32", load_card(card_path), card_path.with_suffix(".onnx"), 1)
    assert be.name == "openvino-fp32"
    ref = OnnxRuntimeBackend(card_path.with_suffix(".onnx"), threads=1)
    rng = np.random.default_rng(0)
    for shape in ((2, 1, 40, 48), (1, 1, 24, 20), (2, 1, 40, 48)):  # one compile per shape
        x = rng.random(shape).astype(np.float32)
        np.testing.assert_allclose(be.run(x), ref.run(x), atol=1e-5)


def test_without_openvino_its_paths_say_why_and_auto_still_loads(card_path, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    card = load_card(card_path)
    for name in ("openvino-fp32", "openvino-bf16", "openvino-bf16-precise"):
        with pytest.raises(BackendUnavailable, match="openvino package is not installed"):
            create_backend(name, card, card_path.with_suffix(".onnx"), 1)
    assert not any(n.startswith("openvino") for n in candidate_names())
    e = Engine.load(card_path, backend="auto", threads=1, cache_dir=tmp_path)
    assert not e.backend_name.startswith("openvino")
    px = np.random.default_rng(1).integers(0, 4096, (40, 50)).astype(np.uint16)
    assert e.enhance(px, PixelMeta(bits_stored=12)).pixels.shape == (80, 100)


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


def test_overflow_detection_names_the_hot_tensors(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from sr_engine.backends.tensorrt_backend import overflowing_tensors

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, "H", "W"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, "H", "W"])
    big = numpy_helper.from_array(np.array(1e5, np.float32), "big")
    small = numpy_helper.from_array(np.array(1e-5, np.float32), "small")
    nodes = [
        helper.make_node("Mul", ["input", "big"], ["hot"]),
        helper.make_node("Mul", ["hot", "small"], ["output"]),
    ]
    g = helper.make_graph(nodes, "g", [x], [y], [big, small])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "hot.onnx")
    assert overflowing_tensors(tmp_path / "hot.onnx") == {"hot"}


def test_torch_cpu_executes_the_onnx_graph_like_onnxruntime(card_path):
    pytest.importorskip("torch")
    e = Engine.load(card_path, backend="torch-cpu")
    assert e.backend_name == "torch-cpu-fp32"
    ref = Engine.load(card_path, backend="onnxruntime")
    x = np.random.default_rng(0).random((2, 1, 40, 48)).astype(np.float32)
    np.testing.assert_allclose(e.backend.run(x), ref.backend.run(x), atol=1e-5)


def test_torch_backend_refuses_unknown_operators(tmp_path):
    pytest.importorskip("torch")
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, "H", "W"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, "H", "W"])
    g = helper.make_graph([helper.make_node("Erf", ["input"], ["output"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "erf.onnx")
    from sr_engine.backends.torch_backend import TorchBackend

    with pytest.raises(BackendUnavailable, match="Erf"):
        TorchBackend(tmp_path / "erf.onnx", device="cpu", dtype="float32")


@pytest.mark.skipif(CUDA_REASON is None, reason="a CUDA device is present")
def test_torch_cuda_unavailable_says_why(card_path):
    with pytest.raises(BackendUnavailable, match="torch"):
        Engine.load(card_path, backend="torch-cuda-fp16")


def _rrdbnet_onnx(path, **params):
    """A small RRDBNet from training.archs, exported to ONNX (needs torch + onnxscript)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    archs = pytest.importorskip("training.archs.rrdbnet_arch")
    torch.manual_seed(0)
    net = archs.RRDBNet(**params).eval()
    torch.onnx.export(
        net,
        (torch.rand(1, 1, 64, 64),),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_shapes=({0: "N", 2: "H", 3: "W"},),
        dynamo=True,
        opset_version=18,
        verbose=False,
    )
    return path


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch-cuda-fp16", "torch-cuda-bf16", "torch-cuda-fp32"])
@pytest.mark.skipif(CUDA_REASON is not None, reason=f"CUDA: {CUDA_REASON}")
def test_torch_cuda_matches_onnxruntime_on_a_real_slice(tmp_path, backend):
    import json

    import pydicom

    from sr_engine.model_card import sha256_of
    from tests.test_intensity import data_store_file, meta_of

    onnx_path = _rrdbnet_onnx(tmp_path / "rrdb-x2.onnx", num_feat=32, num_block=2, num_grow_ch=16)
    card = json.loads(write_test_model(tmp_path, "tmp-x2").read_text())
    card.update(
        name="rrdb-x2",
        weights=onnx_path.name,
        sha256=sha256_of(onnx_path),
        intensity={"model": "ct_hu", "window": [-1024, 3071]},
        tile={"size": 256, "overlap": 16, "batch": 4},
    )
    (tmp_path / "rrdb-x2.json").write_text(json.dumps(card))
    ds = pydicom.dcmread(data_store_file("693_UNCR.dcm"))
    px, meta = ds.pixel_array, meta_of(ds)
    ref = Engine.load(tmp_path / "rrdb-x2.json", backend="onnxruntime")
    gpu = Engine.load(tmp_path / "rrdb-x2.json", backend=backend)
    assert gpu.backend_name == backend
    a = ref.enhance(px, meta, consistency=False).pixels.astype(np.int64)
    b = gpu.enhance(px, meta, consistency=False).pixels.astype(np.int64)
    # 1 stored unit = 1 HU over a 4095-HU window: fp16 keeps ~11 bits, bf16 ~8
    tol = {"fp16": 4, "bf16": 32, "fp32": 1}[backend.rsplit("-", 1)[-1]]
    assert np.abs(a - b).max() <= tol
    assert gpu.enhance(px, meta).consistency_rmse <= 0.5


def test_scalar_mul_becomes_depthwise_conv_with_the_same_result(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from sr_engine.backends.onnxruntime_backend import scalar_mul_to_conv

    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, "H", "W"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, "H", "W"])
    inits = [
        numpy_helper.from_array(rng.normal(size=(16, 1, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(1, 16, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array(0.2, np.float32), "k"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["a", "k"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["c"]),
        helper.make_node("Conv", ["c", "w2"], ["output"], pads=[1, 1, 1, 1]),
    ]
    g = helper.make_graph(nodes, "g", [x], [y], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "mul.onnx"
    onnx.save(m, path)
    rewritten = onnx.load(path)
    assert scalar_mul_to_conv(rewritten) == 1
    assert [n.op_type for n in rewritten.graph.node] == ["Conv", "Conv", "Add", "Conv"]
    inp = rng.random((2, 1, 24, 20)).astype(np.float32)
    a = OnnxRuntimeBackend(path, threads=1, rewrite=False).run(inp)
    b = OnnxRuntimeBackend(path, threads=1).run(inp)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_onnxruntime_without_the_onnx_package(card_path, monkeypatch):
    """The node's base install has onnxruntime but maybe not onnx: no rewrite, still runs."""
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    be = OnnxRuntimeBackend(card_path.with_suffix(".onnx"), threads=1)
    assert be.run(np.zeros((1, 1, 16, 16), np.float32)).shape == (1, 1, 32, 32)


def _skip_graph(path):
    """A graph ending like the bundled RRDBNet: ``Conv(Conv(x)) + Resize(x)``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, "H", "W"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, "sH", "sW"])
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 1, 3, 3)).astype(np.float32) * 0.1, "w1"),
        numpy_helper.from_array(rng.normal(size=(1, 8, 3, 3)).astype(np.float32) * 0.1, "w2"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
    ]
    nodes = [
        helper.make_node("Resize", ["input", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Conv", ["up", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("LeakyRelu", ["a"], ["b"], alpha=0.2),
        helper.make_node("Conv", ["b", "w2"], ["residual"], pads=[1, 1, 1, 1]),
        helper.make_node(
            "Resize",
            ["input", "", "scales"],
            ["skip"],
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        ),
        helper.make_node("Add", ["residual", "skip"], ["output"]),
    ]
    g = helper.make_graph(nodes, "g", [x], [y], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def test_global_skip_split_adds_up_to_the_whole_graph(tmp_path):
    import onnx

    from sr_engine.precision import SkipSplit, split_global_skip

    path = _skip_graph(tmp_path / "skip.onnx")
    trunk, skip = split_global_skip(onnx.load(path))
    assert [n.op_type for n in skip.graph.node] == ["Resize"]
    assert "Add" not in [n.op_type for n in trunk.graph.node]
    whole = OnnxRuntimeBackend(path, threads=1)
    onnx.save(trunk, tmp_path / "trunk.onnx")
    split = SkipSplit(OnnxRuntimeBackend(tmp_path / "trunk.onnx", threads=1), skip, threads=1)
    x = np.random.default_rng(2).random((2, 1, 20, 24)).astype(np.float32)
    np.testing.assert_allclose(split.run(x), whole.run(x), atol=1e-6)
    # a graph without such an addition is not split
    assert split_global_skip(onnx.load(card_path_for_split(tmp_path))) is None


def card_path_for_split(tmp_path):
    return write_test_model(tmp_path / "plain", "plain-x2").with_suffix(".onnx")


@pytest.mark.parametrize("name", ["openvino-bf16", "openvino-bf16-precise", "torch-cpu-bf16"])
def test_bf16_paths_keep_the_skip_in_fp32(tmp_path, name):
    """The trunk in bf16, the skip and the sum in fp32: close to fp32 where bf16 is native."""
    from sr_engine.backends.openvino_backend import bf16_native

    if not bf16_native():
        pytest.skip("this CPU has neither AMX-BF16 nor AVX512-BF16")
    if name.startswith("openvino") and OV_REASON:
        pytest.skip(OV_REASON)
    if name.startswith("torch"):
        pytest.importorskip("torch")
    path = _skip_graph(tmp_path / "skip.onnx")
    card = load_card(write_test_model(tmp_path, "t-x2"))
    be = create_backend(name, card, path, 1)
    assert be.name == name and be.split is not None
    x = np.random.default_rng(3).random((1, 1, 32, 32)).astype(np.float32)
    ref = OnnxRuntimeBackend(path, threads=1).run(x)
    np.testing.assert_allclose(be.run(x), ref, atol=2e-2)


class _Perturbed:
    """ONNX Runtime plus a +-0.01 checkerboard: survives data consistency (zero block mean)."""

    name = "perturbed"
    fixed_tile = None
    max_batch = None

    def __init__(self, onnx_path):
        self.inner = OnnxRuntimeBackend(onnx_path, threads=1)

    def run(self, batch):
        y = self.inner.run(batch)
        yy, xx = np.indices(y.shape[-2:])
        return y + np.where((yy + xx) % 2, 0.01, -0.01).astype(np.float32)

    def close(self):
        pass


class _Slow(OnnxRuntimeBackend):
    def run(self, batch):
        import time

        time.sleep(0.25)  # the reference made slower, so the perturbed path would win on speed
        return super().run(batch)


@pytest.mark.slow
def test_the_gate_refuses_a_path_that_fails_it(card_path, tmp_path, monkeypatch):
    from sr_engine import selection

    card = load_card(card_path)
    real = selection.create_backend

    def fake(name, card, onnx_path, threads=0):
        if name == "perturbed":
            return _Perturbed(onnx_path)
        return _Slow(onnx_path, threads=1) if name == "onnxruntime" else real(name, card, onnx_path)

    monkeypatch.setattr(selection, "create_backend", fake)
    be, sel = selection.select_backend(
        card, card_path, 1, tmp_path, names=["onnxruntime", "perturbed"]
    )
    bad = sel.row("perturbed")
    assert bad.p999 > card.fidelity_gate().p999 and not bad.passed and not bad.chosen
    assert sel.chosen == "onnxruntime" and be.name == "onnxruntime"
    assert "FAIL" in sel.table() and "auto chose onnxruntime" in sel.summary()


def test_a_configured_reduced_precision_path_must_pass_the_gate(card_path, tmp_path):
    from sr_engine.selection import check_gate

    card = load_card(card_path)
    bad = _Perturbed(card_path.with_suffix(".onnx"))
    with pytest.raises(BackendUnavailable, match="fidelity gate"):
        check_gate("openvino-bf16", bad, card, card_path, 1, tmp_path)
    check_gate("onnxruntime", bad, card, card_path, 1, tmp_path)  # fp32 paths are not gated
    good = OnnxRuntimeBackend(card_path.with_suffix(".onnx"), threads=1)
    check_gate("torch-cpu-bf16", good, card, card_path, 1, tmp_path)


@pytest.mark.slow
def test_auto_choice_is_cached_per_host_model_tile_and_threads(card_path, tmp_path, caplog):
    import json
    import logging

    from sr_engine.selection import CACHE_FILE, select_backend

    card = load_card(card_path)
    names = candidate_names()[:2]  # the reference and one more where there is one
    with caplog.at_level(logging.INFO, logger="sr_engine.selection"):
        _, first = select_backend(card, card_path, 1, tmp_path, names=names)
    assert not first.cached and first.chosen in names
    assert [r.name for r in first.rows] == names
    lines = [r.message for r in caplog.records if "auto chose" in r.message]
    assert len(lines) == 1 and "measured" in lines[0]
    stored = json.loads((tmp_path / CACHE_FILE).read_text())
    assert len(stored) == 1
    _, again = select_backend(card, card_path, 1, tmp_path, names=names)
    assert again.cached and again.chosen == first.chosen
    _, other_threads = select_backend(card, card_path, 2, tmp_path, names=names)
    assert not other_threads.cached  # another key: measured again
    retiled = card.model_copy(update={"tile": card.tile.model_copy(update={"size": 48})})
    _, other_tile = select_backend(retiled, card_path, 1, tmp_path, names=names)
    assert not other_tile.cached
    assert len(json.loads((tmp_path / CACHE_FILE).read_text())) == 3
    # a broken cache file is measured over, never fatal
    (tmp_path / CACHE_FILE).write_text("{not json")
    _, fresh = select_backend(card, card_path, 1, tmp_path, names=names)
    assert not fresh.cached


@pytest.mark.slow
def test_bench_candidates_table(card_path, tmp_path):
    from sr_engine.selection import bench_candidates

    sel = bench_candidates(card_path, threads=1, cache_dir=tmp_path, all_paths=False)
    assert sel.rows[0].name == "onnxruntime" and sel.rows[0].ratio == pytest.approx(1.0)
    assert sum(r.chosen for r in sel.rows) == 1
    table = sel.table()
    assert "| onnxruntime |" in table and "ms per 512² slice" in table


def test_choice_is_the_fastest_passing_eligible_path():
    from sr_engine.selection import Candidate, _choose

    def rows():
        return [
            Candidate("onnxruntime", ms_per_call=100.0, passed=True),
            Candidate("openvino-bf16", ms_per_call=20.0, passed=False),  # over the gate
            Candidate("torch-cpu-fp32", ms_per_call=50.0, passed=True),  # bench table only
            Candidate("openvino-fp32", ms_per_call=70.0, passed=True),
        ]

    assert _choose(rows()) == "torch-cpu-fp32"
    table = rows()
    assert _choose(table, ["onnxruntime", "openvino-fp32", "openvino-bf16"]) == "openvino-fp32"
    assert [r.name for r in table if r.chosen] == ["openvino-fp32"]


@pytest.mark.skipif(OV_REASON is not None, reason=f"OpenVINO: {OV_REASON}")
def test_precision_sensitive_nodes_of_the_bundled_trunk():
    """bf16-precise keeps fp32 exactly: the input convolution, each residual sum with its
    scaling, the long skip's convolution and sum; never a dense-block convolution. The
    marks survive into the model OpenVINO compiles (through the IR)."""
    import onnx
    import openvino as ov

    from sr_engine.precision import keep_fp32, kept_fp32, sensitive_nodes, split_global_skip
    from sr_engine.registry import bundled_model_dir

    trunk, _ = split_global_skip(onnx.load(str(bundled_model_dir() / "ct-x2.onnx")))
    model = ov.Core().read_model(trunk.SerializeToString())
    kept = sensitive_nodes(model)
    assert kept_fp32(model) == []
    marked = keep_fp32(model, kept)
    assert kept_fp32(marked) == kept
    clone = marked.clone()
    clone.reshape([1, 1, 32, 32])
    assert kept_fp32(clone) == kept  # what the backend compiles, per tile shape
    # 6 RRDBs of 3 dense blocks: 24 residual sums, each with its 0.2 scaling
    assert sum(n.endswith("/Add") and "/body/" in n for n in kept) == 24
    assert sum(n.endswith("/Mul") for n in kept) == 24
    assert {"/conv_first/Conv/WithoutBiases", "/conv_first/Conv", "/conv_body/Conv", "/Add"} <= set(
        kept
    )
    assert not any("/conv" in n and "/rdb" in n for n in kept)  # dense convolutions stay bf16
    assert not any(n.startswith(("/conv_up1", "/conv_hr", "/conv_last")) for n in kept)
    assert len(kept) == 53
    with pytest.raises(ValueError, match="not in the model"):
        keep_fp32(model, ["no such node"])


@pytest.mark.slow
@pytest.mark.skipif(OV_REASON is not None, reason=f"OpenVINO: {OV_REASON}")
def test_bf16_precise_runs_the_marked_nodes_in_fp32(card_path):
    """On a CPU with native bf16, OpenVINO runs the marked convolutions and sums in fp32
    and the rest in bf16 (its runtime model says which precision each node ran in)."""
    from sr_engine.backends.openvino_backend import bf16_native

    if not bf16_native():
        pytest.skip("this CPU has neither AMX-BF16 nor AVX512-BF16")
    from sr_engine.registry import bundled_model_dir

    onnx_path = bundled_model_dir() / "ct-x2.onnx"
    runs = {}
    for name in ("openvino-bf16", "openvino-bf16-precise"):
        backend = create_backend(name, load_card(onnx_path.with_suffix(".json")), onnx_path, 1)
        backend.run(np.zeros((1, 1, 24, 24), np.float32))
        request = next(iter(backend.inner._requests.values()))
        ops = request.get_compiled_model().get_runtime_model().get_ordered_ops()
        info = [o.get_rt_info() for o in ops]
        runs[name] = {(i["layerType"].astype(str), i["runtimePrecision"].astype(str)) for i in info}
        backend.close()
    assert ("Convolution", "f32") not in runs["openvino-bf16"]
    assert ("Convolution", "f32") in runs["openvino-bf16-precise"]
    assert ("Convolution", "bf16") in runs["openvino-bf16-precise"]


def test_bf16_precise_needs_native_bf16(card_path):
    from sr_engine.backends.openvino_backend import bf16_native

    if OV_REASON is not None:
        pytest.skip(f"OpenVINO: {OV_REASON}")
    if bf16_native():
        pytest.skip("this CPU computes bf16 natively")
    with pytest.raises(BackendUnavailable, match="neither AMX-BF16 nor AVX512-BF16"):
        create_backend(
            "openvino-bf16-precise", load_card(card_path), card_path.with_suffix(".onnx"), 1
        )
    assert "openvino-bf16-precise" not in candidate_names()
