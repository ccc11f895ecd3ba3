"""ONNX Runtime on the CPU, fp32: the default backend and the one the node ships with.

One graph rewrite at load, exact up to float rounding: a multiplication by a scalar
constant of a 4-D tensor (ESRGAN's ``x + 0.2 * rrdb(x)``) becomes a 1x1 depthwise
convolution. ORT keeps convolutions in its blocked NCHWc layout but not ``Mul``, so
every such ``Mul`` cost a layout round trip (ReorderOutput, then ReorderInput before the
next convolution) and pushed all the dense-block concatenations of the next block out of
NCHWc: 31 % of the time of RRDBNet on 2 cores went to those reorders and concats. As a
convolution it stays blocked, and the residual ``Add`` fuses into it.

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
from typing import Any

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


def scalar_mul_to_conv(model: Any) -> int:
    """Rewrite ``Mul(t, scalar constant)`` with 4-D ``t`` of known channels into a 1x1
    depthwise Conv, in place. Returns the number of nodes rewritten."""
    import onnx
    from onnx import helper, numpy_helper

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort: no rewrite
        return 0
    shapes = {
        vi.name: vi.type.tensor_type.shape
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input)
    }
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    nodes, count = [], 0
    for n in model.graph.node:
        new = None
        if n.op_type == "Mul" and len(n.input) == 2:
            for t, c in ((n.input[0], n.input[1]), (n.input[1], n.input[0])):
                sh = shapes.get(t)
                v = consts.get(c)
                if (
                    v is not None
                    and v.size == 1
                    and v.dtype == np.float32
                    and sh is not None
                    and len(sh.dim) == 4
                    and sh.dim[1].HasField("dim_value")
                ):
                    ch = sh.dim[1].dim_value
                    w = f"srnode_dw_scale_{count}"
                    value = np.full((ch, 1, 1, 1), v.reshape(-1)[0], np.float32)
                    model.graph.initializer.append(numpy_helper.from_array(value, w))
                    new = helper.make_node(
                        "Conv", [t, w], list(n.output), name=w, group=ch, kernel_shape=[1, 1]
                    )
                    count += 1
                    break
        nodes.append(new or n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


def load_for_cpu(onnx_path: Path, rewrite: bool = True) -> bytes | str:
    """The model for ``InferenceSession``: with ``rewrite``, bytes with
    :func:`scalar_mul_to_conv` applied (external data, if any, loaded inline); else the
    path itself."""
    if not rewrite:
        return str(onnx_path)
    try:
        import onnx
    except ImportError:  # the rewrite needs the onnx package; without it, the file as is
        log.info("onnxruntime: no onnx package: %s runs without the rewrite", onnx_path.name)
        return str(onnx_path)

    model = onnx.load(str(onnx_path))
    n = scalar_mul_to_conv(model)
    log.debug("onnxruntime: %d scalar Mul rewritten as depthwise Conv in %s", n, onnx_path.name)
    return model.SerializeToString()


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self, onnx_path: Path, threads: int = 0, spinning: bool = True, rewrite: bool = True
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - a hard dependency of srnode
            raise BackendUnavailable(f"backend onnxruntime: cannot import ({e})") from None
        try:
            self.session = ort.InferenceSession(
                load_for_cpu(onnx_path, rewrite),
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
