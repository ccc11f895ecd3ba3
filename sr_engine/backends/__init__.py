"""Inference backends behind one interface: ``run(batch NCHW float32) -> NCHW float32``.

* ``onnxruntime`` - CPU, fp32, the reference and the one every install has;
* ``openvino-fp32`` / ``openvino-bf16`` / ``openvino-bf16-precise`` / ``openvino-fp16`` -
  OpenVINO on the CPU (see :mod:`.openvino_backend`); bf16 only where the CPU has AMX-BF16
  or AVX512-BF16 (``-precise``: the precision-sensitive nodes in fp32), fp16 only with
  AVX512-FP16 or AMX-FP16;
* ``tensorrt`` - a serialized TensorRT 10 engine built from the ONNX file for the card's
  tile shape (fp16, fp32 where fp16 would overflow), cached beside the ONNX file;
* ``torch`` - PyTorch on CUDA in fp16 (``torch``, ``torch-cuda-fp16``), bf16
  (``torch-cuda-bf16``) or fp32 without TF32 (``torch-cuda-fp32``), executing the ONNX
  graph itself with torch ops (see :mod:`.torch_backend`); on the CPU ``torch-cpu``
  (fp32) and ``torch-cpu-bf16`` (channels-last, oneDNN's bf16 kernels).

Reduced precision on the CPU (``openvino-bf16``/``-fp16``, ``torch-cpu-bf16``) runs only
the trunk of the network in low precision: the global skip and the final addition stay fp32
(:mod:`sr_engine.precision`). ``auto`` is resolved by measurement in
:mod:`sr_engine.selection`, not here. Neither torch, openvino nor tensorrt is imported by
this module: only when that backend is created.
"""

from __future__ import annotations

import importlib.util
import logging
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from sr_engine.errors import BackendUnavailable
from sr_engine.model_card import ModelCard

log = logging.getLogger(__name__)

BACKEND_NAMES = (
    "auto",
    "onnxruntime",
    "openvino-fp32",
    "openvino-bf16",
    "openvino-bf16-precise",
    "openvino-fp16",
    "tensorrt",
    "torch",
    "torch-cuda-fp16",
    "torch-cuda-bf16",
    "torch-cuda-fp32",
    "torch-cpu",
    "torch-cpu-fp32",
    "torch-cpu-bf16",
)

# CPU paths that compute in reduced precision: the fidelity gate decides whether they run
REDUCED_PRECISION_CPU = (
    "openvino-bf16",
    "openvino-bf16-precise",
    "openvino-fp16",
    "torch-cpu-bf16",
)


class Backend(ABC):
    """One loaded network. ``fixed_tile`` is set when it only runs that (H, W) input."""

    name: str = "?"
    fixed_tile: tuple[int, int] | None = None
    max_batch: int | None = None  # None: any batch size

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 1, H, W) float32 in [0, 1] -> (N, 1, sH, sW) float32."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free device memory / sessions."""


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _gpu_device_present() -> bool:
    """Cheap check before importing torch: an NVIDIA driver exposes these."""
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia").exists()


def cuda_usable() -> str | None:
    """None if torch sees a CUDA device, else the reason why not."""
    if not _has("torch"):
        return "PyTorch is not installed"
    if not _gpu_device_present():
        return "no NVIDIA GPU driver here (/dev/nvidiactl missing)"
    import torch

    if not torch.cuda.is_available():
        return f"PyTorch {torch.__version__} sees no CUDA device"
    return None


def tensorrt_usable() -> str | None:
    """None if TensorRT can build and run engines here, else the reason why not."""
    if not _has("tensorrt"):
        return "the tensorrt Python package is not installed"
    try:
        import tensorrt  # noqa: F401
    except Exception as e:  # bindings without libnvinfer raise on import
        return f"tensorrt cannot be imported ({type(e).__name__}: {e})".splitlines()[0]
    reason = cuda_usable()
    if reason is not None and not _has("cupy"):
        return f"no CUDA buffers: {reason} and CuPy is not installed"
    return reason


def torch_usable() -> str | None:
    """None if PyTorch is installed (not imported here), else the reason."""
    return None if _has("torch") else "PyTorch is not installed"


def create_backend(name: str, card: ModelCard, onnx_path: Path, threads: int = 0) -> Backend:
    """Load ``onnx_path`` on backend ``name`` (one of :data:`BACKEND_NAMES` but ``auto``,
    which :func:`sr_engine.selection.select_backend` resolves). ``threads`` 0: one per
    usable physical core."""
    from sr_engine.cpu import resolve_threads

    if name not in BACKEND_NAMES:
        raise BackendUnavailable(
            f"unknown backend {name!r}: choose one of {', '.join(BACKEND_NAMES)}"
        )
    if name == "auto":
        raise ValueError("backend auto is chosen by sr_engine.selection.select_backend")
    threads = resolve_threads(threads)
    if name == "onnxruntime":
        from sr_engine.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx_path, threads=threads)
    if name in REDUCED_PRECISION_CPU:
        return _mixed_precision(name, onnx_path, threads)
    if name == "openvino-fp32":
        from sr_engine.backends.openvino_backend import OpenVINOBackend

        return OpenVINOBackend(onnx_path, "fp32", threads)
    if name == "tensorrt":
        reason = tensorrt_usable()
        if reason is not None:
            raise BackendUnavailable(f"backend tensorrt: {reason}")
        from sr_engine.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(onnx_path, card)
    # torch variants
    if torch_usable() is not None:
        raise BackendUnavailable(f"backend {name}: {torch_usable()}")
    from sr_engine.backends.torch_backend import TorchBackend

    if name in ("torch-cpu", "torch-cpu-fp32"):
        return TorchBackend(onnx_path, device="cpu", dtype="float32", threads=threads)
    reason = cuda_usable()
    if reason is not None:
        raise BackendUnavailable(f"backend {name}: {reason}")
    dtype = {"bf16": "bfloat16", "fp32": "float32"}.get(name.rsplit("-", 1)[-1], "float16")
    return TorchBackend(onnx_path, device="cuda", dtype=dtype)


class MixedPrecision(Backend):
    """A reduced-precision trunk plus the fp32 global skip (``precision.SkipSplit``),
    or the whole graph in reduced precision when it has no such skip."""

    def __init__(self, name: str, inner: Backend, split: object | None) -> None:
        self.name = name
        self.inner = inner
        self.split = split
        self.fixed_tile = inner.fixed_tile
        self.max_batch = inner.max_batch

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.split.run(batch) if self.split is not None else self.inner.run(batch)

    def close(self) -> None:
        self.inner.close()


def _mixed_precision(name: str, onnx_path: Path, threads: int) -> Backend:
    from sr_engine.precision import SkipSplit, split_global_skip

    if name.startswith("openvino"):
        from sr_engine.backends.openvino_backend import openvino_usable

        reason = openvino_usable()
        if reason is not None:
            raise BackendUnavailable(f"backend {name}: {reason}")
    elif torch_usable() is not None:
        raise BackendUnavailable(f"backend {name}: {torch_usable()}")
    try:
        import onnx

        parts = split_global_skip(onnx.load(str(onnx_path)))
    except ImportError:  # without the onnx package: no split, the whole graph in bf16
        parts = None
    trunk = parts[0] if parts else None
    if name.startswith("openvino"):
        from sr_engine.backends.openvino_backend import OpenVINOBackend

        precision = name.removeprefix("openvino-")
        inner: Backend = OpenVINOBackend(onnx_path, precision, threads, model=trunk)
    else:
        from sr_engine.backends.torch_backend import TorchBackend

        inner = TorchBackend(onnx_path, "cpu", "bfloat16", threads, model=trunk)
    split = SkipSplit(inner, parts[1], threads) if parts else None
    if split is None:
        log.info(
            "backend %s: %s has no global skip: the whole graph in low precision",
            name,
            onnx_path.name,
        )
    return MixedPrecision(name, inner, split)
