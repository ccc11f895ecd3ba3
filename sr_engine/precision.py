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


# -- precision-sensitive nodes (OpenVINO) ---------------------------------------------------
# OpenVINO's CPU plugin runs a node in its original precision (fp32) under a bf16 or fp16
# inference hint when the node carries the ``DisablePrecisionConversion`` runtime attribute.
# OpenVINO's Python API cannot create that attribute, but its IR reader can: the model goes
# through the IR (serialised, annotated, read back), see :func:`keep_fp32`.
OV_KEEP_FP32 = "DisablePrecisionConversion"
_KEEP_ANY = "dynamic:dynamic"  # no conversion from any type to any type


def sensitive_nodes(model: Any) -> list[str]:
    """The friendly names of the nodes of an OpenVINO model (a residual trunk) whose
    rounding costs the most fidelity in bf16, for :func:`keep_fp32`:

    - the convolutions that read the graph input (rounded to bf16, the input alone is
      about 16 HU off on a 4095-HU window), with their bias;
    - every residual sum (an ``Add`` of two computed tensors, not a bias) and the scaling
      ``Multiply`` that feeds it: the residual stream of the dense blocks;
    - the convolutions whose output feeds such a sum directly (the long skip's last
      convolution), with their bias.

    On the bundled ct-x2 (bf16 storage and fp32 accumulation emulated on the two CT calibration
    slices, before data consistency) the residual is 3.3 HU off at p99.9 (7.0 HU max) with
    the whole trunk in bf16, 0.66 HU (1.6 HU max) with these nodes in fp32, which cost about
    1 % of the trunk's multiply-adds."""
    ops = model.get_ordered_ops()
    const: dict[int, bool] = {}

    def src(inp: Any) -> Any:
        return inp.get_source_output().get_node()

    def is_const(node: Any) -> bool:
        key = id(node)
        if key not in const:
            kind = node.get_type_name()
            const[key] = kind in ("Constant", "ShapeOf") or (  # shapes carry no pixel values
                kind != "Parameter" and all(is_const(src(i)) for i in node.inputs())
            )
        return const[key]

    def biased_conv(node: Any) -> Any:
        """The Convolution of ``Add(Convolution, constant)``, else None."""
        if node.get_type_name() != "Add":
            return None
        ins = [src(i) for i in node.inputs()]
        convs = [n for n in ins if n.get_type_name() == "Convolution"]
        if len(convs) == 1 and all(is_const(n) for n in ins if n is not convs[0]):
            return convs[0]
        return None

    keep: dict[int, Any] = {}

    def conv_with_bias(conv: Any) -> None:
        keep[id(conv)] = conv
        for out in conv.outputs():
            for t in out.get_target_inputs():
                user = t.get_node()
                if biased_conv(user) is conv:
                    keep[id(user)] = user

    for node in ops:
        kind = node.get_type_name()
        if kind == "Convolution" and src(node.input(0)).get_type_name() == "Parameter":
            conv_with_bias(node)
        elif kind == "Add" and biased_conv(node) is None:
            ins = [src(i) for i in node.inputs()]
            if any(is_const(n) for n in ins):
                continue
            keep[id(node)] = node
            for n in ins:
                if n.get_type_name() == "Multiply":
                    keep[id(n)] = n
                conv = biased_conv(n)
                if conv is not None:
                    conv_with_bias(conv)
    return [n.get_friendly_name() for n in ops if id(n) in keep]


def keep_fp32(model: Any, names: list[str]) -> Any:
    """A copy of the OpenVINO ``model`` whose nodes named ``names`` carry
    ``DisablePrecisionConversion``, so the CPU plugin runs them in fp32 under a bf16 or
    fp16 inference hint (the other nodes as hinted). Raises ``ValueError`` if a name is
    not in the model."""
    import tempfile
    import xml.etree.ElementTree as ET

    import openvino as ov

    wanted = set(names)
    with tempfile.TemporaryDirectory(prefix="srnode-ov-") as tmp:
        xml_path = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml_path), compress_to_fp16=False)
        root = ET.parse(xml_path).getroot()
        weights = np.fromfile(xml_path.with_suffix(".bin"), dtype=np.uint8)
    found = set()
    for layer in root.iter("layer"):
        name = layer.get("name")
        if name not in wanted:
            continue
        found.add(name)
        rt = layer.find("rt_info")
        if rt is None:
            rt = ET.Element("rt_info")
            layer.insert(0, rt)
        ET.SubElement(rt, "attribute", name=OV_KEEP_FP32, version="0", value=_KEEP_ANY)
    missing = wanted - found
    if missing:
        raise ValueError(f"not in the model: {', '.join(sorted(missing)[:3])}")
    return ov.Core().read_model(ET.tostring(root, encoding="unicode"), ov.Tensor(weights))


def kept_fp32(model: Any) -> list[str]:
    """The friendly names of the nodes of ``model`` that :func:`keep_fp32` marked."""
    key = f"{OV_KEEP_FP32}_0"
    return [op.get_friendly_name() for op in model.get_ordered_ops() if key in op.get_rt_info()]
