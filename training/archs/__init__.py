"""Generator architectures by name: ``build_generator("RRDBNet", scale=2, num_feat=32)``.

One file per architecture (``<name>_arch.py``). The GAN stage's discriminators live beside
them: ``build_discriminator("vgg", num_feat=64, patch=96)`` (or ``"unet"``).
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


def build_discriminator(kind: str, num_feat: int, patch: int) -> nn.Module:
    """The VGG-style discriminator (``vgg``, for ``patch``² inputs) or the U-Net with
    spectral norm (``unet``, any size), on one channel."""
    if kind == "vgg":
        from training.archs.discriminator_vgg_arch import VGGStyleDiscriminator

        return VGGStyleDiscriminator(num_in_ch=1, num_feat=num_feat, input_size=patch)
    if kind == "unet":
        from training.archs.discriminator_unet_arch import UNetDiscriminatorSN

        return UNetDiscriminatorSN(num_in_ch=1, num_feat=num_feat, skip_connection=True)
    raise ValueError(f"unknown discriminator {kind!r} (vgg or unet)")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gflop_per_slice(name: str, params: dict[str, Any], lr_edge: int = 512, scale: int = 2) -> float:
    """GFLOP (2 x multiply-adds of the convolutions) to super-resolve one ``lr_edge``² input
    slice (a 512² CT slice by default) by ``scale``."""
    import torch

    model = build_generator(name, **{"num_in_ch": 1, "num_out_ch": 1, "scale": scale, **params})
    macs = 0

    def hook(mod: nn.Module, inp: Any, out: Any) -> None:
        nonlocal macs
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        macs += k * out.numel() // out.shape[0]

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    edge = 32
    with torch.no_grad():
        model(torch.zeros(1, 1, edge, edge))
    for h in hooks:
        h.remove()
    return 2.0 * macs * (lr_edge / edge) ** 2 / 1e9
