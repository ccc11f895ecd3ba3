"""Inference backends behind one interface: ``run(batch NCHW float32) -> NCHW float32``.

* ``onnxruntime`` - CPU, fp32, the default and the only one the node needs;
* ``tensorrt`` - a serialized TensorRT 10 engine built from the ONNX file for the card's
  tile shape (fp16, fp32 where fp16 would overflow), cached beside the ONNX file;
* ``torch`` - PyTorch on CUDA in fp16 (``torch``, ``torch-cuda-fp16``), bf16
  (``torch-cuda-bf16``) or fp32 without TF32 (``torch-cuda-fp32``), executing the ONNX
  graph itself with torch ops (see :mod:`.torch_backend`); ``torch-cpu`` for tests.

``auto`` picks tensorrt if usable, else torch on CUDA if usable, else onnxruntime.
Neither torch nor tensorrt is imported by this module: only when that backend is chosen
(or probed by ``auto``).
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
    "tensorrt",
    "torch",
    "torch-cuda-fp16",
    "torch-cuda-bf16",
    "torch-cuda-fp32",
    "torch-cpu",
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


def create_backend(name: str, card: ModelCard, onnx_path: Path, threads: int = 0) -> Backend:
    """Load ``onnx_path`` on backend ``name`` (one of :data:`BACKEND_NAMES`)."""
    if name not in BACKEND_NAMES:
        raise BackendUnavailable(
            f"unknown backend {name!r}: choose one of {', '.join(BACKEND_NAMES)}"
        )
    if name == "auto":
        for candidate, probe in (("tensorrt", tensorrt_usable), ("torch", cuda_usable)):
            reason = probe()
            if reason is None:
                try:
                    return create_backend(candidate, card, onnx_path, threads)
                except BackendUnavailable as e:
                    log.warning("backend %s not usable, trying the next: %s", candidate, e)
            else:
                log.debug("backend %s skipped: %s", candidate, reason)
        name = "onnxruntime"
    if name == "onnxruntime":
        from sr_engine.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx_path, threads=threads)
    if name == "tensorrt":
        reason = tensorrt_usable()
        if reason is not None:
            raise BackendUnavailable(f"backend tensorrt: {reason}")
        from sr_engine.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(onnx_path, card)
    # torch variants
    from sr_engine.backends.torch_backend import TorchBackend

    if name == "torch-cpu":
        return TorchBackend(onnx_path, device="cpu", dtype="float32", threads=threads)
    reason = cuda_usable()
    if reason is not None:
        raise BackendUnavailable(f"backend {name}: {reason}")
    dtype = {"bf16": "bfloat16", "fp32": "float32"}.get(name.rsplit("-", 1)[-1], "float16")
    return TorchBackend(onnx_path, device="cuda", dtype=dtype)
