"""ONNX Runtime on the CPU, fp32: the default backend and the one the node ships with.

Session options (measured in ``bench/engine.py``): full graph optimisation (constant
folding, conv fusions and ORT's blocked NCHWc conv layout on AVX2/AVX-512), one
sequential inter-op thread and ``threads`` intra-op threads (0 = one per physical core),
denormals flushed to zero (a trained network's tiny activations otherwise take the slow
path), and the CPU memory arena with pattern planning so repeated tiles of one shape
reuse their buffers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from sr_engine.backends import Backend
from sr_engine.errors import BackendUnavailable

log = logging.getLogger(__name__)


def session_options(threads: int = 0, spinning: bool = True):  # -> ort.SessionOptions
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = max(0, int(threads))
    so.inter_op_num_threads = 1
    so.enable_cpu_mem_arena = True
    so.enable_mem_pattern = True
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3
    return so


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, onnx_path: Path, threads: int = 0, spinning: bool = True) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - a hard dependency of srnode
            raise BackendUnavailable(f"backend onnxruntime: cannot import ({e})") from None
        try:
            self.session = ort.InferenceSession(
                str(onnx_path),
                sess_options=session_options(threads, spinning),
                providers=["CPUExecutionProvider"],
            )
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BackendUnavailable(
                f"backend onnxruntime: cannot load {onnx_path.name}: {msg}"
            ) from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        n, _, h, w = (list(inp.shape) + [None] * 4)[:4]
        if isinstance(h, int) and isinstance(w, int):
            self.fixed_tile = (h, w)
        if isinstance(n, int):
            self.max_batch = n

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.max_batch is not None and x.shape[0] != self.max_batch:
            # a graph exported with a fixed batch: pad the last call, drop the padding
            n = x.shape[0]
            pad = np.zeros((self.max_batch - n,) + x.shape[1:], np.float32)
            return self.run(np.concatenate([x, pad]))[:n]
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def close(self) -> None:
        self.session = None
