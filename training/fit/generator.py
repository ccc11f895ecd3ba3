"""The generator file a run writes (``generator.pt``: EMA weights plus everything export
needs) and ESRGAN network interpolation between a PSNR and a GAN generator."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training.archs import build_generator


def load_generator(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict]:
    """A ``generator.pt`` -> (model in eval mode, its info dict without the weights)."""
    blob = torch.load(path, map_location=map_location, weights_only=False)
    model = build_generator(blob["arch"], **blob["arch_params"])
    model.load_state_dict(blob["state_dict"])
    model.eval()
    info = {k: v for k, v in blob.items() if k != "state_dict"}
    return model, info


def save_generator(path: Path, model: nn.Module, info: dict) -> None:
    blob = dict(info)
    blob["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def interpolate(
    psnr_path: str | Path, gan_path: str | Path, alpha: float, out_path: str | Path
) -> Path:
    """ESRGAN network interpolation: ``(1 - alpha) * PSNR + alpha * GAN`` weights."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    a = torch.load(psnr_path, map_location="cpu", weights_only=False)
    b = torch.load(gan_path, map_location="cpu", weights_only=False)
    if a["arch"] != b["arch"] or a["arch_params"] != b["arch_params"]:
        raise ValueError("the two generators have different architectures")
    sd = {}
    for k, va in a["state_dict"].items():
        vb = b["state_dict"][k]
        sd[k] = (1 - alpha) * va + alpha * vb if va.is_floating_point() else vb
    out = dict(b)
    out["state_dict"] = sd
    out["stage"] = "interp"
    out["interpolation"] = {"alpha": alpha, "psnr": str(psnr_path), "gan": str(gan_path)}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, out_path)
    return out_path
