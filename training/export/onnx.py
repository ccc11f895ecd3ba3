"""Export a trained generator to ONNX and everything the node loads beside it.

* :func:`export_onnx`: ``generator.pt`` -> ``<name>.onnx`` with input ``input``
  ``[N, 1, H, W]`` and output ``output`` ``[N, 1, sH, sW]`` (float32, the network's [0, 1]
  space), any H and W. The ONNX Runtime output is compared with PyTorch at three sizes,
  odd ones included; a difference above ``tol`` (1e-4) is an error.
* :func:`export_all`: the ONNX, its parity, the held-out metrics and the model card
  (:mod:`training.export.card`). TensorRT engines: :mod:`training.export.tensorrt`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.export.card import licence_text, summary, test_metrics, write_card

PARITY_SIZES: tuple[tuple[int, int], ...] = ((32, 32), (47, 61), (64, 41))


def export_onnx(
    generator_path: str | Path,
    onnx_path: str | Path,
    opset: int = 17,
    sizes: Sequence[tuple[int, int]] = PARITY_SIZES,
    tol: float = 1e-4,
    dynamo: bool = False,
) -> dict[str, Any]:
    """Export and check parity; returns ``{"max_abs_diff": {size: d}, "opset": ...}``.

    The TorchScript exporter (``dynamo=False``, deprecated in PyTorch but still shipped) is
    the default: on 2 CPU cores it takes seconds where the torch.export-based one took
    ~100 s for the bundled RRDBNet, with the same parity (3.6e-7 measured).
    """
    import warnings

    import onnx
    import onnxruntime as ort
    import torch

    from training.fit.generator import load_generator

    model, info = load_generator(generator_path)
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.rand(1, 1, 32, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (x,),
            str(onnx_path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={
                "input": {0: "N", 2: "H", 3: "W"},
                "output": {0: "N", 2: "sH", 3: "sW"},
            },
            opset_version=opset,
            dynamo=dynamo,
        )
    m = onnx.load(str(onnx_path))
    onnx.checker.check_model(m)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    diffs: dict[str, float] = {}
    rng = np.random.default_rng(0)
    for h, w in sizes:
        a = rng.random((2, 1, h, w), dtype=np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(a)).numpy()
        got = sess.run(["output"], {"input": a})[0]
        if got.shape != ref.shape:
            raise RuntimeError(f"ONNX output shape {got.shape} != PyTorch {ref.shape} at {h}x{w}")
        d = float(np.abs(got - ref).max())
        diffs[f"{h}x{w}"] = d
        if d > tol:
            raise RuntimeError(f"ONNX/PyTorch parity {d:.2e} > {tol:g} at input {h}x{w}")
    return {"max_abs_diff": diffs, "opset": opset, "tol": tol, "info": info}


def export_all(
    generator_path: str | Path,
    out_dir: str | Path,
    name: str,
    modalities: list[str],
    data_dir: str | Path | None = None,
    baselines: dict[str, str | Path] | None = None,
    training_data_extra: dict[str, Any] | None = None,
    description: str = "",
    license: str = "",
    tile: dict[str, int] | None = None,
) -> tuple[Path, Path, dict[str, Any]]:
    """ONNX + parity + (held-out metrics when ``data_dir``) + card. Returns paths, report.

    Without ``license`` the card's licence names the weights' (the project's, Apache-2.0)
    and every training source's."""
    out_dir = Path(out_dir)
    onnx_path = out_dir / f"{name}.onnx"
    par = export_onnx(generator_path, onnx_path)
    info = par.pop("info")
    metrics: dict[str, Any] = {}
    if data_dir is not None:
        names = [d["name"] for d in info.get("datasets", [])]
        metrics = test_metrics(
            onnx_path, data_dir, names, info["intensity"], info["scale"],
            degradation=info.get("degradation", "area"), baselines=baselines,
        )  # fmt: skip
    metrics["onnx_parity_max_abs_diff"] = par["max_abs_diff"]
    td = {
        "summary": summary(info),
        "datasets": info.get("datasets", []),
        "split": "slab split per single-subject volume (train | val | test | train, 70/15/15, "
        "gap between slabs) or patient-level 70/15/15, seed recorded per dataset",
        "stage": info.get("stage"),
        "iterations": info.get("iters"),
        "batch": info.get("batch"),
        "patch": info.get("patch"),
        "wall_s": info.get("wall_s"),
        "device": info.get("device"),
        "n_params": info.get("n_params"),
        "val_psnr_db": info.get("val_psnr"),
        "val_psnr_bicubic_db": info.get("val_psnr_bicubic"),
        **(training_data_extra or {}),
    }
    if "interpolation" in info:
        td["interpolation"] = info["interpolation"]
    if command := info.get("config", {}).get("command"):
        td.setdefault("command", command)
    license = license or licence_text(info.get("datasets", []))
    card = write_card(
        onnx_path, name, info, modalities, metrics, json.loads(json.dumps(td, default=str)),
        description=description, license=license, tile=tile,
    )  # fmt: skip
    return onnx_path, card, metrics
