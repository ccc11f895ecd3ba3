"""PyTorch backend (CUDA fp16/bf16; CPU fp32 for tests): runs the ONNX graph with torch ops.

Why execute the ONNX file rather than rebuild the network from ``training.archs``: the
ONNX file is the one artefact the model card's sha256 vouches for; sr_engine may not
import ``training`` (the arrows go ``training -> sr_engine``); and it needs no ``.pth``
beside it. The super-resolution graphs we export use a small set of operators (Conv,
LeakyRelu/Relu/PRelu, Add/Mul/Sub/Div, Concat, Resize, DepthToSpace/SpaceToDepth and the
shape ops of an exported pixel-(un)shuffle), each mapped one to one onto cuDNN/ATen
kernels, so the result is the eager PyTorch network itself. An operator outside that set
is refused at load with its name (BackendUnavailable).

On CUDA the weights are cast to fp16 (or bf16) and the activations kept channels-last,
the layout cuDNN's tensor-core convolutions want; cudnn.benchmark picks the fastest
algorithm for the tile shape on first use. torch is imported here, lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sr_engine.backends import Backend
from sr_engine.errors import BackendUnavailable

_ONNX_DTYPES = {1: "float32", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


class OnnxTorchGraph:
    """An ONNX graph executed node by node with torch operations."""

    def __init__(self, onnx_path: Path, device: str, dtype: Any, model: Any = None) -> None:
        import onnx
        import torch
        from onnx import numpy_helper

        if model is None:
            model = onnx.load(str(onnx_path))
        g = model.graph
        unknown = sorted({n.op_type for n in g.node} - supported_ops())
        if unknown:
            raise BackendUnavailable(
                f"backend torch: {onnx_path.name} uses ONNX operators it cannot run: "
                + ", ".join(unknown)
            )
        self.torch = torch
        self.device = torch.device(device)
        self.dtype = dtype
        self.values: dict[str, Any] = {}
        for init in g.initializer:
            self.values[init.name] = self._tensor(numpy_helper.to_array(init))
        self.nodes = list(g.node)
        for n in self.nodes:
            if n.op_type == "Constant":
                a = n.attribute[0]
                self.values[n.output[0]] = self._tensor(
                    numpy_helper.to_array(a.t) if a.name == "value" else np.array(_attrs(n)[a.name])
                )
        init_names = {i.name for i in g.initializer}
        self.input_name = next(i.name for i in g.input if i.name not in init_names)
        self.output_name = g.output[0].name
        self.attrs = [_attrs(n) for n in self.nodes]
        last: dict[str, int] = {}
        for k, n in enumerate(self.nodes):
            for i in n.input:
                if i and i not in self.values and i != self.input_name:
                    last[i] = k
        self.free_after: list[list[str]] = [[] for _ in self.nodes]
        for name, k in last.items():  # drop activations after their last use: tiles are big
            if name != self.output_name:
                self.free_after[k].append(name)
        # channels-last: the layout cuDNN's tensor cores and oneDNN's bf16 kernels want
        self.channels_last = self.device.type == "cuda" or dtype == torch.bfloat16
        for n in self.nodes:  # conv weights once in that layout
            if n.op_type == "Conv" and self.channels_last:
                w = self.values[n.input[1]]
                self.values[n.input[1]] = w.contiguous(memory_format=torch.channels_last)

    def _tensor(self, a: np.ndarray) -> Any:
        t = self.torch.from_numpy(np.array(a, copy=True))
        if t.is_floating_point():
            t = t.to(self.dtype)
        return t.to(self.device)

    def __call__(self, x: Any) -> Any:
        v = dict(self.values)
        v[self.input_name] = x
        for node, attrs, free in zip(self.nodes, self.attrs, self.free_after, strict=True):
            if node.op_type != "Constant":
                args = [v[i] if i else None for i in node.input]
                v[node.output[0]] = _OPS[node.op_type](self, args, attrs)
            for name in free:
                v.pop(name, None)
        return v[self.output_name]


def _ints(t: Any) -> list[int]:
    return [int(v) for v in t.reshape(-1).tolist()]


def _conv(g: OnnxTorchGraph, a: list, at: dict) -> Any:
    F = g.torch.nn.functional  # noqa: N806
    x, w = a[0], a[1]
    b = a[2] if len(a) > 2 else None
    pads = at.get("pads", [0, 0, 0, 0])
    if at.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        raise BackendUnavailable("backend torch: Conv auto_pad is not supported")
    strides = at.get("strides", [1, 1])
    dil = at.get("dilations", [1, 1])
    groups = at.get("group", 1)
    if pads[0] != pads[2] or pads[1] != pads[3]:
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
        pads = [0, 0, 0, 0]
    return F.conv2d(x, w, b, strides, (pads[0], pads[1]), dil, groups)


def _resize(g: OnnxTorchGraph, a: list, at: dict) -> Any:
    F = g.torch.nn.functional  # noqa: N806
    x = a[0]
    scales = a[2] if len(a) > 2 and a[2] is not None and a[2].numel() else None
    sizes = a[3] if len(a) > 3 and a[3] is not None and a[3].numel() else None
    mode = at.get("mode", "nearest")
    ctm = at.get("coordinate_transformation_mode", "half_pixel")
    kw: dict[str, Any] = {}
    if sizes is not None:
        kw["size"] = _ints(sizes)[2:]
    else:
        s = [float(v) for v in scales.float().tolist()]
        if s[:2] != [1.0, 1.0]:
            raise BackendUnavailable("backend torch: Resize over batch/channels")
        kw["scale_factor"] = s[2:]
    if mode == "nearest":
        if ctm not in ("asymmetric", "half_pixel", "pytorch_half_pixel"):
            raise BackendUnavailable(f"backend torch: Resize nearest with {ctm}")
        tmode = "nearest" if ctm == "asymmetric" else "nearest-exact"
        return F.interpolate(x, mode=tmode, **kw)
    tmode = {"linear": "bilinear", "cubic": "bicubic"}[mode]
    if ctm == "align_corners":
        return F.interpolate(x, mode=tmode, align_corners=True, **kw)
    if ctm not in ("half_pixel", "pytorch_half_pixel"):
        raise BackendUnavailable(f"backend torch: Resize {mode} with {ctm}")
    if mode == "cubic" and abs(at.get("cubic_coeff_a", -0.75) + 0.75) > 1e-6:
        raise BackendUnavailable("backend torch: Resize cubic with a != -0.75")
    return F.interpolate(x, mode=tmode, align_corners=False, **kw)


def _slice(g: OnnxTorchGraph, a: list, at: dict) -> Any:
    x = a[0]
    starts, ends = _ints(a[1]), _ints(a[2])
    axes = _ints(a[3]) if len(a) > 3 and a[3] is not None else list(range(len(starts)))
    steps = _ints(a[4]) if len(a) > 4 and a[4] is not None else [1] * len(starts)
    idx = [slice(None)] * x.dim()
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        n = x.shape[ax]
        idx[ax] = slice(max(-n, min(s, n)), max(-n - 1, min(e, n)), st)
    return x[tuple(idx)]


def _cast(g: OnnxTorchGraph, a: list, at: dict) -> Any:
    name = _ONNX_DTYPES.get(at["to"], "float32")
    if name.startswith("float"):
        return a[0].to(g.dtype)
    return a[0].to(getattr(g.torch, name))


def _reshape(g: OnnxTorchGraph, a: list, at: dict) -> Any:
    shape = _ints(a[1])
    shape = [a[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return a[0].reshape(shape)


def _unsqueeze(g: OnnxTorchGraph, a: list, at: dict) -> Any:
    x = a[0]
    axes = _ints(a[1]) if len(a) > 1 else at["axes"]
    for ax in sorted(ax % (x.dim() + len(axes)) for ax in axes):
        x = x.unsqueeze(ax)
    return x


def _squeeze(g: OnnxTorchGraph, a: list, at: dict) -> Any:
    x = a[0]
    axes = _ints(a[1]) if len(a) > 1 and a[1] is not None else at.get("axes")
    if axes is None:
        return x.squeeze()
    for ax in sorted((ax % x.dim() for ax in axes), reverse=True):
        x = x.squeeze(ax)
    return x


def _clip(g: OnnxTorchGraph, a: list, at: dict) -> Any:
    lo = a[1] if len(a) > 1 and a[1] is not None else at.get("min")
    hi = a[2] if len(a) > 2 and a[2] is not None else at.get("max")
    lo = float(lo) if lo is not None else None
    hi = float(hi) if hi is not None else None
    return g.torch.clamp(a[0], lo, hi)


def _d2s(g: OnnxTorchGraph, a: list, at: dict) -> Any:
    if at.get("mode", "DCR") == "CRD":
        return g.torch.nn.functional.pixel_shuffle(a[0], at["blocksize"])
    n, c, h, w = a[0].shape
    b = at["blocksize"]
    x = a[0].reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(n, c // (b * b), h * b, w * b)


def _s2d(g: OnnxTorchGraph, a: list, at: dict) -> Any:
    n, c, h, w = a[0].shape
    b = at["blocksize"]
    x = a[0].reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(n, c * b * b, h // b, w // b)


def _gather(g: OnnxTorchGraph, a: list, at: dict) -> Any:
    ax = at.get("axis", 0)
    idx = a[1].long()
    out = g.torch.index_select(a[0], ax, idx.reshape(-1))
    return out.reshape(a[0].shape[:ax] + idx.shape + a[0].shape[ax + 1 :])


def _binary(fn: Callable) -> Callable:
    def op(g: OnnxTorchGraph, a: list, at: dict) -> Any:
        x, y = a
        if x.is_floating_point() != y.is_floating_point():  # shape arithmetic
            x, y = x.to(g.dtype), y.to(g.dtype)
        return fn(x, y)

    return op


def _div(x: Any, y: Any) -> Any:
    return x / y if x.is_floating_point() else x // y


_OPS: dict[str, Callable] = {
    "Conv": _conv,
    "Relu": lambda g, a, at: g.torch.relu(a[0]),
    "LeakyRelu": lambda g, a, at: g.torch.nn.functional.leaky_relu(a[0], at.get("alpha", 0.01)),
    "PRelu": lambda g, a, at: g.torch.where(a[0] >= 0, a[0], a[0] * a[1]),
    "Sigmoid": lambda g, a, at: g.torch.sigmoid(a[0]),
    "Tanh": lambda g, a, at: g.torch.tanh(a[0]),
    "Add": _binary(lambda x, y: x + y),
    "Sub": _binary(lambda x, y: x - y),
    "Mul": _binary(lambda x, y: x * y),
    "Div": _binary(_div),
    "Concat": lambda g, a, at: g.torch.cat(a, dim=at["axis"]),
    "Resize": _resize,
    "Identity": lambda g, a, at: a[0],
    "DepthToSpace": _d2s,
    "SpaceToDepth": _s2d,
    "Reshape": _reshape,
    "Transpose": lambda g, a, at: a[0].permute(*at["perm"]),
    "Shape": lambda g, a, at: g.torch.tensor(list(a[0].shape), dtype=g.torch.int64),
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Slice": _slice,
    "Cast": _cast,
    "Clip": _clip,
}


def supported_ops() -> set[str]:
    """ONNX operator types this backend runs."""
    return set(_OPS) | {"Constant"}


class TorchBackend(Backend):
    """``torch-cuda-fp16`` / ``torch-cuda-bf16`` / ``torch-cpu-fp32`` / ``torch-cpu-bf16``.

    ``model``: an ONNX ``ModelProto`` to run instead of the file (a split trunk).
    """

    def __init__(
        self,
        onnx_path: Path,
        device: str = "cuda",
        dtype: str = "float16",
        threads: int = 0,
        model: Any = None,
    ) -> None:
        try:
            import torch
        except ImportError:
            raise BackendUnavailable("backend torch: PyTorch is not installed") from None
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"backend torch: PyTorch {torch.__version__} sees no CUDA")
        if device == "cpu" and threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.dtype = getattr(torch, dtype)
        short = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}[dtype]
        self.name = f"torch-{device}-{short}"
        if device == "cuda":
            torch.backends.cudnn.benchmark = True
            if self.dtype == torch.float32:  # fp32 means fp32: no TF32 tensor-core rounding
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
        self.graph = OnnxTorchGraph(onnx_path, device, self.dtype, model)

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            x = x.to(self.graph.device, non_blocking=True).to(self.dtype)
            if self.graph.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = self.graph(x)
            return y.float().cpu().numpy()

    def close(self) -> None:
        self.graph = None
        if self.torch.cuda.is_available():
            self.torch.cuda.empty_cache()
