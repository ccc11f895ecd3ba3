"""A bundled model's ONNX weights back into a ``generator.pt`` (to fine-tune from).

The bundled models were exported by :mod:`training.export.onnx` from this package's own
architectures, so the ONNX initializers carry the PyTorch parameter names; the card gives
the architecture. The result is checked against ONNX Runtime before it is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def generator_from_onnx(card_path: str | Path, out: str | Path, tol: float = 1e-4) -> Path:
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper

    from sr_engine.model_card import load_card
    from training.archs import build_generator
    from training.fit.generator import save_generator

    card_path = Path(card_path)
    card = load_card(card_path, verify=True)
    onnx_path = card.weights_path(card_path)
    params = {"num_in_ch": 1, "num_out_ch": 1, **card.architecture.params}
    model = build_generator(card.architecture.name, **params)
    sd = model.state_dict()
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(onnx_path)).graph.initializer}
    missing = [k for k in sd if k not in inits]
    if missing:
        raise ValueError(f"{onnx_path.name}: no initializer for {missing[:3]}...")
    model.load_state_dict({k: torch.from_numpy(np.array(inits[k])) for k in sd})
    model.eval()
    x = np.random.default_rng(0).random((1, 1, 24, 32), np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(got - ref).max())
    if diff > tol:
        raise ValueError(f"{onnx_path.name}: PyTorch differs from ONNX Runtime by {diff:.3g}")
    info = {
        "arch": card.architecture.name,
        "arch_params": params,
        "scale": card.scale,
        "stage": "psnr",
        "intensity": card.intensity.model_dump(),
        "degradation": card.degradation.operator,
        "warm_start": {"card": card.name, "version": card.version, "sha256": card.sha256},
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_generator(out, model, info)
    return out


def change_depth(generator: str | Path, num_block: int, out: str | Path, seed: int = 0) -> Path:
    """An RRDBNet ``generator.pt`` with ``num_block`` RRDBs instead of its own number: the
    first blocks are kept, blocks beyond the end are dropped, and new blocks are added so
    that the network still computes exactly the same function (their dense blocks' last
    convolution zero, so each new RRDB multiplies by 1.2, and the trunk's closing
    convolution divided by 1.2 per new block); training then uses them. To compare model
    sizes on equal terms (the quality/cost frontier), each starts from one trained model."""
    import torch

    from training.archs import build_generator
    from training.fit.generator import load_generator, save_generator

    model, info = load_generator(generator)
    if info.get("arch") != "RRDBNet":
        raise ValueError(f"{generator}: change_depth needs an RRDBNet, not {info.get('arch')}")
    params = dict(info["arch_params"])
    old = int(params["num_block"])
    params["num_block"] = int(num_block)
    torch.manual_seed(seed)
    new = build_generator("RRDBNet", **params)
    sd, src = new.state_dict(), model.state_dict()
    for k in sd:
        if not k.startswith("body.") or int(k.split(".")[1]) < old:
            sd[k] = src[k].clone()
    added = max(0, num_block - old)
    for i in range(old, num_block):
        for r in ("rdb1", "rdb2", "rdb3"):
            sd[f"body.{i}.{r}.conv5.weight"].zero_()
            sd[f"body.{i}.{r}.conv5.bias"].zero_()
    sd["conv_body.weight"] = sd["conv_body.weight"] / 1.2**added
    new.load_state_dict(sd)
    info = {
        **info,
        "arch_params": params,
        "resized_from": {"num_block": old, "path": str(generator)},
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_generator(out, new, info)
    return out
