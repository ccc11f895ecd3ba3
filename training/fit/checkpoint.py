"""A training run's resumable state (``ckpt_last.pt``): weights, optimisers, random state.

Written atomically (a temporary file, then a rename), so an interrupted write never
leaves a broken checkpoint behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.fit.steps import Adversary


def save_checkpoint(
    path: Path,
    g: nn.Module,
    g_ema: nn.Module,
    opt_g: torch.optim.Optimizer,
    adv: Adversary | None,
    it: int,
    elapsed_s: float,
    rng: np.random.Generator,
    config: dict[str, Any],
) -> None:
    state = {
        "g": g.state_dict(),
        "g_ema": g_ema.state_dict(),
        "opt_g": opt_g.state_dict(),
        "d": adv.d.state_dict() if adv else None,
        "opt_d": adv.opt_d.state_dict() if adv else None,
        "iter": it,
        "elapsed_s": elapsed_s,
        "sampler_rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "config": config,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(
    path: Path,
    device: torch.device,
    g: nn.Module,
    g_ema: nn.Module,
    opt_g: torch.optim.Optimizer,
    adv: Adversary | None,
    rng: np.random.Generator,
) -> tuple[int, float]:
    """Restore the state in place; returns (iteration, elapsed seconds)."""
    state = torch.load(path, map_location=device, weights_only=False)
    g.load_state_dict(state["g"])
    g_ema.load_state_dict(state["g_ema"])
    opt_g.load_state_dict(state["opt_g"])
    if adv is not None and state.get("d") is not None:
        adv.d.load_state_dict(state["d"])
        adv.opt_d.load_state_dict(state["opt_d"])
    rng.bit_generator.state = state["sampler_rng"]
    torch.set_rng_state(state["torch_rng"])
    return int(state["iter"]), float(state["elapsed_s"])
