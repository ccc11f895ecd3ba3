"""OpenVINO on the CPU: fp32, or bf16 / fp16 where the CPU computes in them natively.

bf16 is offered only where the CPU has AMX-BF16 or AVX512-BF16 (:func:`bf16_native`),
in two forms: ``bf16`` (every operation of the trunk) and ``bf16-precise`` (the input
convolution, the residual sums and the long skip's convolution kept in fp32:
:func:`sr_engine.precision.sensitive_nodes`,
:func:`sr_engine.precision.keep_fp32`);
fp16 only with AVX512-FP16 or AMX-FP16 (:func:`fp16_native`: 3 more mantissa bits than
bf16); elsewhere OpenVINO would emulate them and gain nothing. In reduced precision the
network is split at its global skip (:mod:`sr_engine.precision`): the trunk runs in
bf16/fp16, the interpolation and the final addition in fp32. fp32 means fp32:
``INFERENCE_PRECISION_HINT`` is set explicitly, since OpenVINO's CPU plugin defaults to
bf16 on such CPUs.

Shapes: the model is compiled for each input shape it meets (all tiles of an image share
one shape), a few kept; compiling a static shape takes a fraction of a second and runs
faster than a dynamic-shape model.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from sr_engine.backends import Backend
from sr_engine.cpu import cpu_flags
from sr_engine.errors import BackendUnavailable

log = logging.getLogger(__name__)

_KEEP_SHAPES = 4


def openvino_usable() -> str | None:
    """None if the openvino package imports, else the reason why not."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "the openvino package is not installed (pip install openvino)"
    except Exception as e:  # a broken install
        return f"openvino cannot be imported ({type(e).__name__}: {e})".splitlines()[0]
    return None


def bf16_native() -> bool:
    """True when the CPU computes bf16 dot products in hardware (AMX-BF16, AVX512-BF16)."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def fp16_native() -> bool:
    """True when the CPU computes fp16 in hardware (AVX512-FP16, AMX-FP16)."""
    return bool({"avx512_fp16", "amx_fp16"} & cpu_flags())


_NATIVE = {
    "fp32": lambda: True,
    "bf16": bf16_native,
    "bf16-precise": bf16_native,
    "fp16": fp16_native,
}
_OV_TYPE = {"fp32": "f32", "bf16": "bf16", "bf16-precise": "bf16", "fp16": "f16"}


class OpenVINOBackend(Backend):
    """``model``: an ONNX ``ModelProto`` to run instead of the file (a split trunk)."""

    def __init__(
        self,
        onnx_path: Path,
        precision: str = "fp32",
        threads: int = 0,
        model: Any = None,
    ) -> None:
        reason = openvino_usable()
        if reason is not None:
            raise BackendUnavailable(f"backend openvino: {reason}")
        if precision not in _NATIVE:
            raise BackendUnavailable(f"backend openvino: unknown precision {precision!r}")
        if not _NATIVE[precision]():
            up = "BF16" if precision.startswith("bf16") else precision.upper()
            raise BackendUnavailable(
                f"backend openvino-{precision}: this CPU has neither AMX-{up} nor AVX512-{up}"
            )
        import openvino as ov

        self.name = f"openvino-{precision}"
        self.core = ov.Core()
        try:
            src = model.SerializeToString() if model is not None else str(onnx_path)
            self.model = self.core.read_model(src)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BackendUnavailable(
                f"backend openvino: cannot read {onnx_path.name}: {msg}"
            ) from None
        if precision.endswith("-precise"):
            from sr_engine.precision import keep_fp32, sensitive_nodes

            kept = sensitive_nodes(self.model)
            self.model = keep_fp32(self.model, kept)
            log.debug("openvino-%s: %d precision-sensitive nodes in fp32", precision, len(kept))
        self.config = {
            "INFERENCE_PRECISION_HINT": _OV_TYPE[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        if threads > 0:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self._requests: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    def _request(self, shape: tuple[int, ...]) -> Any:
        req = self._requests.get(shape)
        if req is None:
            m = self.model.clone()
            m.reshape(list(shape))
            req = self.core.compile_model(m, "CPU", self.config).create_infer_request()
            self._requests[shape] = req
            while len(self._requests) > _KEEP_SHAPES:
                self._requests.popitem(last=False)
        else:
            self._requests.move_to_end(shape)
        return req

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        req = self._request(x.shape)
        req.infer({0: x})
        return np.array(req.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def close(self) -> None:
        self._requests.clear()
