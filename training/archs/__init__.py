"""Generator architectures by name: ``build_generator("RRDBNet", scale=2, num_feat=32)``.

One file per architecture (``<name>_arch.py``). Discriminators live beside them and are
built by the losses/evaluation code.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

# name -> (module, class)
_GENERATORS: dict[str, tuple[str, str]] = {
    "RRDBNet": ("training.archs.rrdbnet_arch", "RRDBNet"),
    "SRCNN": ("training.archs.srcnn_arch", "SRCNN"),
    "SRResNet": ("training.archs.srresnet_arch", "SRResNet"),
}


def generator_names() -> list[str]:
    return sorted(_GENERATORS)


def build_generator(name: str, **params: Any) -> nn.Module:
    """Instantiate the generator registered as ``name`` with ``params``."""
    try:
        module_name, cls_name = _GENERATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown generator {name!r}; known: {', '.join(generator_names())}"
        ) from None
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**params)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
