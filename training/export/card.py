"""The model card of an exported generator (``sr_engine.model_card.ModelCard``, validated):
its held-out metrics through ONNX Runtime, its licence, its one-line summary.

* :func:`test_metrics`: PSNR / MSE of the exported model through ONNX Runtime (as the node
  runs it) on the held-out split, beside bicubic, with the data range stated.
* :func:`write_card`: the model card beside the ONNX.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def test_metrics(
    onnx_path: str | Path,
    data_dir: str | Path,
    datasets: Sequence[str],
    intensity: dict[str, Any],
    scale: int = 2,
    split: str = "test",
    degradation: str = "area",
    baselines: dict[str, str | Path] | None = None,
) -> dict[str, Any]:
    """Mean PSNR/MSE on the held-out split via ONNX Runtime; bicubic (and given ONNX
    baselines, e.g. SRCNN) on the same inputs, and the model's gain over bicubic per source.
    Data range 1.0 in the card's [0, 1] space; outputs are clipped as the engine clips them."""
    import onnxruntime as ort
    import torch

    from training.data.dataset import split_images
    from training.data.degradations import crop_to_multiple, degrade
    from training.data.prepare import load_prepared
    from training.fit.validate import clamp_output, upsample_bicubic

    prepared = load_prepared(data_dir, datasets)
    imgs = [(doc["name"], im) for doc in prepared
            for im in split_images([doc], split, intensity, axes=(0,))]  # fmt: skip
    sessions = {"model": ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])}
    for k, p in (baselines or {}).items():
        sessions[k] = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    scores: dict[str, list[float]] = {k: [] for k in [*sessions, "bicubic"]}
    gains: dict[str, list[float]] = {}
    for source, im in imgs:
        hr = crop_to_multiple(torch.from_numpy(im)[None, None], scale)
        lr = degrade(hr, degradation, scale)
        bi = clamp_output(upsample_bicubic(lr, scale), intensity["model"]).numpy()
        scores["bicubic"].append(_psnr(bi, hr.numpy()))
        for k, s in sessions.items():
            out = torch.from_numpy(s.run(["output"], {"input": lr.numpy()})[0])
            scores[k].append(_psnr(clamp_output(out, intensity["model"]).numpy(), hr.numpy()))
        gains.setdefault(source, []).append(scores["model"][-1] - scores["bicubic"][-1])
    res: dict[str, Any] = {
        "split": split,
        "degradation": f"{degradation} x{scale}",
        "n_images": len(imgs),
        "data_range": "1.0 in the card's [0, 1] intensity space",
    }
    for k, v in scores.items():
        res[f"psnr_{k}_db"] = round(float(np.mean(v)), 3)
    res["psnr_gain_over_bicubic_db"] = round(res["psnr_model_db"] - res["psnr_bicubic_db"], 3)
    res["gain_over_bicubic_by_source"] = {
        k: {"n_images": len(v), "gain_db": round(float(np.mean(v)), 3)} for k, v in gains.items()
    }
    return res


def write_card(
    onnx_path: str | Path,
    name: str,
    info: dict[str, Any],
    modalities: list[str],
    metrics: dict[str, Any] | None = None,
    training_data: dict[str, Any] | None = None,
    version: str = "1.0.0",
    tile: dict[str, int] | None = None,
    description: str = "",
    license: str = "",
) -> Path:
    """Write ``<name>.json`` beside the ONNX with sr_engine's schema (validated)."""
    from sr_engine.model_card import ModelCard, sha256_of

    onnx_path = Path(onnx_path)
    params = {k: v for k, v in info["arch_params"].items() if k not in ("num_in_ch", "num_out_ch")}
    card = ModelCard(
        name=name,
        version=version,
        scale=info["scale"],
        architecture={"name": info["arch"], "params": params},
        intensity=info["intensity"],
        tile=tile or {"size": 288, "overlap": 16, "batch": 2},  # ~2 % overhead on 512²
        degradation={"operator": info.get("degradation", "area")},
        modalities=modalities,
        training_data=training_data or {},
        metrics=metrics or {},
        weights=onnx_path.name,
        sha256=sha256_of(onnx_path),
        license=license,
        description=description,
    )
    path = onnx_path.with_suffix(".json")
    path.write_text(card.to_json())
    return path


def licence_text(datasets: Sequence[dict[str, Any]]) -> str:
    """A card's licence: the weights' (the project's) and every training source's."""
    sources = sorted({d["license"] for d in datasets if d.get("license")})
    return "Apache-2.0 weights" + (f"; trained on {'; '.join(sources)}" if sources else "")


def summary(info: dict[str, Any]) -> str:
    names = ", ".join(d["name"] for d in info.get("datasets", []))
    return (
        f"{info['arch']} {info.get('stage', '')} stage, x{info['scale']}, "
        f"{info.get('degradation', 'area')} degradation, trained on {names}"
    )
