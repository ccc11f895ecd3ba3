"""Small ONNX super-resolution graphs built without torch, with valid model cards.

Used by tests until (and beside) the bundled models: an upsampling ``Resize`` followed by
a fixed 3x3 convolution, so the engine sees a real graph with spatial context at tile
edges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sr_engine.model_card import ModelCard, sha256_of


def make_sr_graph(scale: int = 2, mode: str = "cubic") -> onnx.ModelProto:
    """[N,1,H,W] float32 -> [N,1,sH,sW]: Resize (``mode``) then a mild 3x3 sharpen."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, "H", "W"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, "sH", "sW"])
    k = np.array([[0, -0.05, 0], [-0.05, 1.2, -0.05], [0, -0.05, 0]], np.float32)
    inits = [
        numpy_helper.from_array(np.array([], np.float32), "roi"),
        numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "scales"),
        numpy_helper.from_array(k.reshape(1, 1, 3, 3), "kernel"),
    ]
    nodes = [
        helper.make_node(
            "Resize",
            ["input", "roi", "scales"],
            ["up"],
            mode=mode,
            coordinate_transformation_mode="half_pixel",
        ),
        helper.make_node("Conv", ["up", "kernel"], ["output"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "test_sr", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_test_model(
    directory: Path,
    name: str = "test-x2",
    scale: int = 2,
    intensity: dict | None = None,
    modalities: list[str] | None = None,
    tile: dict | None = None,
) -> Path:
    """Write ``<name>.onnx`` and ``<name>.json`` into ``directory``; return the card path."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{name}.onnx"
    onnx.save(make_sr_graph(scale), weights)
    card = ModelCard(
        name=name,
        version="0.0-test",
        scale=scale,
        architecture={"name": "ResizeConv", "params": {"mode": "cubic"}},
        intensity=intensity or {"model": "bits_stored"},
        tile=tile or {"size": 64, "overlap": 8, "batch": 4},
        degradation={"operator": "area"},
        modalities=modalities or [],
        training_data={"summary": "none: a fixed test graph"},
        metrics={},
        weights=weights.name,
        sha256=sha256_of(weights),
        description="test graph: cubic resize + fixed 3x3 sharpen",
    )
    path = directory / f"{name}.json"
    path.write_text(card.to_json())
    return path
