"""Residual scaling: how much detail an RRDBNet with a global skip adds, set after training.

The bundled generators are ``out = bilinear(x) + r(x)``. Trained on clean or averaged
images, ``r`` can be stronger than real, noisy scans support; ``out_a = bilinear(x) +
a * r(x)`` (the last convolution's weights and bias times ``a``) trades detail for fidelity,
like ESRGAN's network interpolation but towards interpolation. ``a`` is chosen on the
validation split of the training sources with the unseen benchmark's protocol
(:func:`training.evaluate.unseen.heldout_images`), never on the benchmark itself, and recorded in
the card.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

LAST = ("conv_last.weight", "conv_last.bias")


def scale_residual(card_path: str | Path, alpha: float, out_dir: str | Path, name: str) -> Path:
    """Write ``<out_dir>/<name>.onnx`` + card with the residual scaled by ``alpha``."""
    import onnx
    from onnx import numpy_helper

    from sr_engine.model_card import ModelCard, sha256_of

    card_path, out_dir = Path(card_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = json.loads(card_path.read_text())
    if doc["architecture"]["params"].get("global_skip") is None:
        raise ValueError(f"{card_path.name}: residual scaling needs a global skip")
    model = onnx.load(str(card_path.with_name(doc["weights"])))
    found = 0
    for init in model.graph.initializer:
        if init.name in LAST:
            a = numpy_helper.to_array(init).astype(np.float32) * np.float32(alpha)
            init.CopyFrom(numpy_helper.from_array(a, init.name))
            found += 1
    if found != len(LAST):
        raise ValueError(f"{card_path.name}: no {LAST} initializers")
    onnx_path = out_dir / f"{name}.onnx"
    onnx.save(model, str(onnx_path))
    doc["name"], doc["weights"], doc["sha256"] = name, onnx_path.name, sha256_of(onnx_path)
    prev = doc.setdefault("training_data", {}).get("residual_scale", 1.0)
    doc["training_data"]["residual_scale"] = round(float(prev) * alpha, 4)
    ModelCard.model_validate(doc)
    out = out_dir / f"{name}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return out


def choose_alpha(
    card_path: str | Path,
    data_dir: str | Path,
    datasets: Sequence[str],
    alphas: Sequence[float] = (0.5, 0.75, 1.0),
    per_dataset: int = 3,
    work: str | Path = "runs/residual_scale",
) -> dict[str, Any]:
    """Mean PSNR gain over bicubic on the validation slices for each ``alpha``; the best one,
    with its images below the floor."""
    from training.evaluate.unseen import ModelRunner, heldout_images, run_benchmark, summarize

    images = heldout_images(data_dir, datasets, "val", per_dataset)
    runners = []
    for a in alphas:
        card = card_path if a == 1.0 else scale_residual(card_path, a, work, f"a{a:g}")
        r = ModelRunner(card, label=f"a={a:g}")
        r.modalities = set()  # every validation image, whatever its modality
        runners.append(r)
    rows, _ = run_benchmark(images, runners)
    table = {}
    for a, r in zip(alphas, runners, strict=True):
        gains = [x["methods"][r.label]["psnr"] - x["methods"]["bicubic"]["psnr"] for x in rows]
        below = sum(x["methods"][r.label]["psnr"] < x["methods"]["floor"]["psnr"] for x in rows)
        table[f"{a:g}"] = {"gain_mean_db": round(float(np.mean(gains)), 3), "below_floor": below}
    best = max(table, key=lambda k: (table[k]["gain_mean_db"], -table[k]["below_floor"]))
    return {
        "alpha": float(best),
        "validation": table,
        "images": [x["image"] for x in rows],
        "summary": summarize(rows),
    }
