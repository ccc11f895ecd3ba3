"""TensorRT 10 backend: a serialized engine built from the ONNX file for the card's tile.

Build (once per model, tile shape, TensorRT version and GPU; cached):

* parse the ONNX file with ``trt.OnnxParser`` into an explicit-batch network;
* one optimisation profile: input ``(1..batch, 1, size, size)``, optimised for ``batch``
  (``card.tile``); the engine therefore only runs that tile shape (``fixed_tile``);
* fp16 everywhere (``BuilderFlag.FP16``) except where fp16 would overflow: ONNX Runtime
  runs the fp32 graph once on a calibration tile, every tensor whose magnitude exceeds
  ``FP16_SAFE`` (a quarter of fp16's 65504) is recorded, and the layers producing them,
  plus reductions/normalisations/exp/pow layers, are pinned to fp32
  (``OBEY_PRECISION_CONSTRAINTS``);
* the serialized engine is written beside the ONNX file as
  ``<stem>.<sha12>.b<batch>x<size>x<size>.fp16.trt<version>.sm<cc>.engine`` (or under
  ``~/.cache/srnode`` if that folder is read-only) and loaded from there next time.

Run: device buffers are torch CUDA tensors (or CuPy arrays when torch is absent);
``set_input_shape``, ``set_tensor_address`` and ``execute_async_v3`` on a stream.

TensorRT cannot be installed where this was written (its libraries come from NVIDIA's own
index); the code follows the TensorRT 10 Python API and its tests skip without it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from sr_engine.backends import Backend
from sr_engine.errors import BackendUnavailable
from sr_engine.model_card import ModelCard

log = logging.getLogger(__name__)

FP16_SAFE = 16384.0


def overflowing_tensors(onnx_path: Path, size: int = 64, limit: float = FP16_SAFE) -> set[str]:
    """Names of the ONNX tensors whose |value| exceeds ``limit`` on a calibration tile."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(onnx_path))
    known = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in known:
                model.graph.output.append(
                    helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                )
                known.add(name)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    yy, xx = np.mgrid[0:size, 0:size] / size
    tile = (0.5 + 0.4 * np.sin(9 * xx) * np.cos(7 * yy)).astype(np.float32)
    tile += np.random.default_rng(0).normal(0, 0.05, tile.shape).astype(np.float32)
    feed = {sess.get_inputs()[0].name: np.clip(tile, 0, 1)[None, None]}
    names = [o.name for o in sess.get_outputs()]
    out = set()
    for name, value in zip(names, sess.run(names, feed), strict=True):
        v = np.asarray(value)
        if v.dtype.kind == "f" and v.size and float(np.abs(v).max()) > limit:
            out.add(name)
    return out


def _cache_path(onnx_path: Path, card: ModelCard, trt: Any, cc: str) -> Path:
    t, b = card.tile.size, card.tile.batch
    name = f"{onnx_path.stem}.{card.short_sha}.b{b}x{t}x{t}.fp16.trt{trt.__version__}.sm{cc}.engine"
    if os.access(onnx_path.parent, os.W_OK):
        return onnx_path.parent / name
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "srnode"
    cache.mkdir(parents=True, exist_ok=True)
    return cache / name


class _Buffers:
    """CUDA memory via torch (preferred) or CuPy."""

    def __init__(self) -> None:
        try:
            import torch

            if not torch.cuda.is_available():
                raise ImportError
            self.torch, self.cupy = torch, None
            self.stream = torch.cuda.Stream()
        except ImportError:
            import cupy

            self.torch, self.cupy = None, cupy
            self.stream = cupy.cuda.Stream(non_blocking=True)

    def capability(self) -> str:
        if self.torch is not None:
            major, minor = self.torch.cuda.get_device_capability()
        else:
            cc = self.cupy.cuda.Device().compute_capability
            major, minor = int(cc[:-1]), int(cc[-1])
        return f"{major}{minor}"

    @property
    def handle(self) -> int:
        return self.stream.cuda_stream if self.torch is not None else self.stream.ptr

    def to_device(self, a: np.ndarray) -> Any:
        if self.torch is not None:
            return self.torch.from_numpy(a).cuda(non_blocking=False)
        return self.cupy.asarray(a)

    def empty(self, shape: tuple[int, ...]) -> Any:
        if self.torch is not None:
            return self.torch.empty(shape, dtype=self.torch.float32, device="cuda")
        return self.cupy.empty(shape, dtype=np.float32)

    @staticmethod
    def ptr(t: Any) -> int:
        return t.data_ptr() if hasattr(t, "data_ptr") else t.data.ptr

    def to_host(self, t: Any) -> np.ndarray:
        self.stream.synchronize()
        return t.cpu().numpy() if self.torch is not None else self.cupy.asnumpy(t)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, onnx_path: Path, card: ModelCard) -> None:
        try:
            import tensorrt as trt
        except Exception as e:
            raise BackendUnavailable(f"backend tensorrt: cannot import tensorrt ({e})") from None
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.buffers = _Buffers()
        t, b = card.tile.size, card.tile.batch
        self.fixed_tile = (t, t)
        self.max_batch = b
        self.scale = card.scale
        path = _cache_path(onnx_path, card, trt, self.buffers.capability())
        if path.is_file():
            data = path.read_bytes()
            log.info("tensorrt: loading cached engine %s", path.name)
        else:
            data = self._build(onnx_path, t, b)
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
                tmp.write(data)
            os.replace(tmp.name, path)  # atomic: a concurrent builder never sees half a file
            log.info("tensorrt: built and cached engine %s", path.name)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise BackendUnavailable(f"backend tensorrt: cannot deserialize {path.name}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == mode)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) != mode)

    def _build(self, onnx_path: Path, tile: int, batch: int) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendUnavailable(f"backend tensorrt: cannot parse {onnx_path.name}: {errs}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 2 << 30)
        if builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            self._pin_fp32(network, overflowing_tensors(onnx_path))
        inp = network.get_input(0)
        profile = builder.create_optimization_profile()
        profile.set_shape(
            inp.name, (1, 1, tile, tile), (batch, 1, tile, tile), (batch, 1, tile, tile)
        )
        config.add_optimization_profile(profile)
        data = builder.build_serialized_network(network, config)
        if data is None:
            raise BackendUnavailable(f"backend tensorrt: building {onnx_path.name} failed")
        return bytes(data)

    def _pin_fp32(self, network: Any, hot: set[str]) -> None:
        trt = self.trt
        risky = {
            getattr(trt.LayerType, n)
            for n in ("REDUCE", "NORMALIZATION", "SOFTMAX", "UNARY")
            if hasattr(trt.LayerType, n)
        }
        pinned = 0
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            outs = [layer.get_output(j).name for j in range(layer.num_outputs)]
            if layer.type in risky or any(o in hot for o in outs):
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
                pinned += 1
        log.info("tensorrt: %d of %d layers pinned to fp32", pinned, network.num_layers)

    def run(self, batch: np.ndarray) -> np.ndarray:
        n, c, h, w = batch.shape
        if (h, w) != self.fixed_tile or n > self.max_batch:
            raise ValueError(f"tensorrt engine runs up to {self.max_batch}x1x{self.fixed_tile}")
        buf = self.buffers
        x = buf.to_device(np.ascontiguousarray(batch, dtype=np.float32))
        y = buf.empty((n, c, h * self.scale, w * self.scale))
        self.context.set_input_shape(self.input_name, (n, c, h, w))
        self.context.set_tensor_address(self.input_name, buf.ptr(x))
        self.context.set_tensor_address(self.output_name, buf.ptr(y))
        if not self.context.execute_async_v3(buf.handle):
            raise RuntimeError("tensorrt: execute_async_v3 failed")
        return buf.to_host(y)

    def close(self) -> None:
        self.context = None
        self.engine = None
