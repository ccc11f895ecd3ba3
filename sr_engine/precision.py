"""Mixed precision that keeps stored units: a low-precision trunk, an fp32 skip and sum.

The bundled networks end in ``output = trunk(x) + interpolate(x)``: a fixed interpolation
of the input (``global_skip``) carries most of the signal and the learned trunk adds a
small residual. Run whole in bf16, the input and the sum are rounded to 8 significant
bits: about 8 HU over a 4095-HU window, before the trunk makes any error of its own. Split
at that last addition, the trunk (all the convolutions) runs in low precision and returns
its residual as fp32; the interpolation (a Resize, no convolution) and the addition run in
fp32 (ONNX Runtime), so only the residual's own error remains.

:func:`split_global_skip` finds that split in any ONNX graph whose output is ``Add(a, b)``
with exactly one operand computed without a convolution; :class:`SkipSplit` runs a trunk
backend and the fp32 skip and adds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_HEAVY = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def _producers(graph: Any) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def _ancestors(graph: Any, tensor: str) -> list[Any]:
    """The nodes ``tensor`` depends on, in graph order."""
    prod = _producers(graph)
    seen: set[int] = set()
    stack = [tensor]
    while stack:
        t = stack.pop()
        n = prod.get(t)
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        stack.extend(i for i in n.input if i)
    return [n for n in graph.node if id(n) in seen]


def _subgraph(model: Any, output: str, name: str) -> Any:
    """A model computing ``output`` from the graph input: only the nodes and initializers
    it needs."""
    import onnx
    from onnx import helper

    g = model.graph
    nodes = _ancestors(g, output)
    used = {i for n in nodes for i in n.input}
    inits = [i for i in g.initializer if i.name in used]
    out = helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)
    sub = helper.make_graph(nodes, name, list(g.input), [out], inits)
    m = helper.make_model(sub, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    return m


def split_global_skip(model: Any) -> tuple[Any, Any] | None:
    """``(trunk, skip)`` ONNX models whose outputs add up to ``model``'s output, or None
    when the graph does not end in such an addition."""
    g = model.graph
    if len(g.output) != 1:
        return None
    node = _producers(g).get(g.output[0].name)
    if node is None or node.op_type != "Add" or len(node.input) != 2:
        return None
    heavy = [any(n.op_type in _HEAVY for n in _ancestors(g, t)) for t in node.input]
    if sorted(heavy) != [False, True]:
        return None
    trunk_out, skip_out = (node.input[0], node.input[1]) if heavy[0] else node.input[::-1]
    trunk = _subgraph(model, trunk_out, f"{g.name}_trunk")
    skip = _subgraph(model, skip_out, f"{g.name}_skip")
    trunk.graph.output[0].name = trunk_out
    return trunk, skip


def split_files(onnx_path: Path, directory: Path) -> tuple[Path, Path] | None:
    """Write the trunk and skip of ``onnx_path`` into ``directory`` (named by the source
    file's stem); None when the graph has no global skip to split."""
    import onnx

    parts = split_global_skip(onnx.load(str(onnx_path)))
    if parts is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / f"{onnx_path.stem}.trunk.onnx", directory / f"{onnx_path.stem}.skip.onnx")
    for m, p in zip(parts, paths, strict=True):
        onnx.save(m, str(p))
    return paths


class SkipSplit:
    """``run(x) = trunk.run(x) + skip(x)``; the skip (ONNX Runtime, fp32) and the sum in
    fp32, whatever precision the trunk backend computes in."""

    def __init__(self, trunk: Any, skip_model: Any, threads: int = 0) -> None:
        import onnxruntime as ort

        from sr_engine.backends.onnxruntime_backend import session_options

        self.trunk = trunk
        data = skip_model if isinstance(skip_model, bytes | str) else skip_model.SerializeToString()
        self.skip = ort.InferenceSession(
            data, sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.skip_input = self.skip.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        residual = self.trunk.run(x).astype(np.float32, copy=False)
        base = self.skip.run(None, {self.skip_input: x})[0]
        return residual + base
