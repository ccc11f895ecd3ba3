"""Losses by name (BasicSR style): pixel (L1, MSE), perceptual VGG19, relativistic-average GAN,
discriminator feature matching, and the ESRGAN weighting of them.

Nothing downloads: the perceptual loss builds VGG19 here and loads a torchvision-format
state dict (``features.<i>.weight`` …) from a file the user gives.

ESRGAN defaults (:data:`ESRGAN_WEIGHTS`): pixel 1e-2, perceptual 1, GAN 5e-3. Without VGG
weights, :func:`build_esrgan_losses` puts discriminator feature matching in the perceptual
term's place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ESRGAN_WEIGHTS",
    "FeatureMatchingLoss",
    "L1Loss",
    "LOSSES",
    "MSELoss",
    "PerceptualLoss",
    "RelativisticGANLoss",
    "VGG19_LAYERS",
    "build_esrgan_losses",
    "build_loss",
    "build_vgg19_features",
]

ESRGAN_WEIGHTS: dict[str, float] = {"pixel": 1e-2, "perceptual": 1.0, "gan": 5e-3}

# torchvision's vgg19().features: layer name -> index in the Sequential.
_VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]  # fmt: skip


def _vgg19_layer_names() -> list[str]:
    names: list[str] = []
    block, conv = 1, 1
    for v in _VGG19_CFG:
        if v == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return names


VGG19_LAYERS: list[str] = _vgg19_layer_names()  # index i == torchvision features[i]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def build_vgg19_features(upto: int | None = None) -> nn.Sequential:
    """torchvision's ``vgg19().features`` layout (same indices, so its state dict loads),
    truncated after index ``upto`` (inclusive)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_ch, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            in_ch = int(v)
    if upto is not None:
        layers = layers[: upto + 1]
    return nn.Sequential(*layers)


class L1Loss(nn.Module):
    """Mean absolute error times ``loss_weight``."""

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * F.l1_loss(pred, target)


class MSELoss(nn.Module):
    """Mean squared error times ``loss_weight``."""

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * F.mse_loss(pred, target)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG19 weights not found: {path} (give a local torchvision-format vgg19 "
            "state dict, e.g. vgg19-dcbb9e9d.pth; nothing is downloaded)"
        )
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - one clear line for any unreadable file
        raise ValueError(f"VGG19 weights {path}: not a readable torch state dict ({e})") from None
    for key in ("state_dict", "model", "params"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"VGG19 weights {path}: expected a state dict, got {type(sd).__name__}")
    return sd


class PerceptualLoss(nn.Module):
    """Distance between VGG19 features of prediction and target (ESRGAN: conv5_4 before ReLU).

    Inputs are ``[N, 1 or 3, H, W]`` in [0, 1]; one channel is replicated to three, then
    ImageNet-normalised. The VGG is frozen and in eval mode. ``criterion`` is ``"l1"``
    (ESRGAN) or ``"l2"``.
    """

    def __init__(
        self,
        vgg_weights_path: str | Path,
        layer: str = "conv5_4",
        before_relu: bool = True,
        loss_weight: float = 1.0,
        criterion: str = "l1",
    ) -> None:
        super().__init__()
        if layer.startswith("relu"):
            layer, before_relu = "conv" + layer[4:], False
        if not layer.startswith("conv") or layer not in VGG19_LAYERS:
            raise ValueError(f"unknown VGG19 layer {layer!r} (conv1_1 … conv5_4)")
        if criterion not in ("l1", "l2"):
            raise ValueError(f"criterion must be 'l1' or 'l2', got {criterion!r}")
        idx = VGG19_LAYERS.index(layer) + (0 if before_relu else 1)
        self.layer, self.before_relu = layer, before_relu
        self.loss_weight, self.criterion = loss_weight, criterion

        sd = _load_state_dict(Path(vgg_weights_path))
        self.vgg = build_vgg19_features(idx)
        own = {}
        for k, v in sd.items():
            k = k.removeprefix("module.").removeprefix("vgg19.")
            if k.startswith("features."):
                own[k.removeprefix("features.")] = v
        needed = set(self.vgg.state_dict())
        missing = sorted(needed - set(own))
        if missing:
            raise ValueError(
                f"VGG19 weights {vgg_weights_path}: missing {len(missing)} tensors "
                f"(first: features.{missing[0]}); is it a torchvision vgg19 state dict?"
            )
        try:
            self.vgg.load_state_dict({k: own[k] for k in needed})
        except RuntimeError as e:
            first = str(e).strip().splitlines()[-1].strip()
            raise ValueError(f"VGG19 weights {vgg_weights_path}: shape mismatch: {first}") from None
        self.vgg.eval()
        for p in self.vgg.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.vgg.eval()  # frozen feature extractor, always
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"PerceptualLoss expects 1 or 3 channels, got {x.shape[1]}")
        return self.vgg((x - self.mean) / self.std)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fp = self.features(pred)
        with torch.no_grad():
            ft = self.features(target)
        d = F.l1_loss(fp, ft) if self.criterion == "l1" else F.mse_loss(fp, ft)
        return self.loss_weight * d


class RelativisticGANLoss(nn.Module):
    """Relativistic average GAN loss (ESRGAN), BCE with logits.

    ``D_ra(a, b) = sigmoid(C(a) - mean C(b))``. The discriminator wants real more realistic
    than the average fake and fake less realistic than the average real; the generator wants
    the opposite. Logits may be ``[N, 1]`` (VGG discriminator) or per-pixel maps (U-Net); the
    average runs over the batch (and pixels).
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    @staticmethod
    def _bce(logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)

    def generator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Weighted loss for G; ``fake_logits = D(G(lr))``, ``real_logits = D(hr)`` (detached)."""
        real_logits = real_logits.detach()
        l_real = self._bce(real_logits - fake_logits.mean(), False)
        l_fake = self._bce(fake_logits - real_logits.mean(), True)
        return self.loss_weight * (l_real + l_fake) / 2

    def discriminator_loss(
        self, real_logits: torch.Tensor, fake_logits: torch.Tensor
    ) -> torch.Tensor:
        """Loss for D (unweighted); ``fake_logits = D(G(lr).detach())``."""
        l_real = self._bce(real_logits - fake_logits.mean(), True)
        l_fake = self._bce(fake_logits - real_logits.mean(), False)
        return (l_real + l_fake) / 2

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return self.generator_loss(real_logits, fake_logits)


class FeatureMatchingLoss(nn.Module):
    """Mean L1 distance between discriminator feature maps of fake and real (real detached)."""

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(
        self, real_feats: Sequence[torch.Tensor], fake_feats: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        if len(real_feats) != len(fake_feats) or not real_feats:
            raise ValueError(
                f"feature lists differ or are empty ({len(real_feats)} vs {len(fake_feats)})"
            )
        total = sum(F.l1_loss(f, r.detach()) for r, f in zip(real_feats, fake_feats, strict=True))
        return self.loss_weight * total / len(real_feats)


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "l1": L1Loss,
    "mse": MSELoss,
    "l2": MSELoss,
    "perceptual": PerceptualLoss,
    "vgg": PerceptualLoss,
    "relativistic_gan": RelativisticGANLoss,
    "gan": RelativisticGANLoss,
    "feature_matching": FeatureMatchingLoss,
}


def build_loss(name: str, **kw: Any) -> nn.Module:
    """A loss by name (case-insensitive, ``-``/``_`` alike, a ``Loss`` class name works too)."""
    key = name.strip().lower().replace("-", "_")
    aliases = {cls.__name__.lower(): k for k, cls in LOSSES.items() if isinstance(cls, type)}
    key = aliases.get(key, key)
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(sorted(LOSSES))}")
    return LOSSES[key](**kw)


def build_esrgan_losses(
    vgg_weights_path: str | Path | None = None,
    pixel_weight: float = ESRGAN_WEIGHTS["pixel"],
    perceptual_weight: float = ESRGAN_WEIGHTS["perceptual"],
    gan_weight: float = ESRGAN_WEIGHTS["gan"],
    feature_matching_weight: float | None = None,
) -> dict[str, nn.Module]:
    """The GAN-stage generator losses with ESRGAN weights, each already weighted.

    Returns ``{"pixel": L1, "perceptual" or "feature_matching": …, "gan": RelativisticGAN}``.
    Without ``vgg_weights_path`` (None), feature matching takes the perceptual term's place
    with weight ``feature_matching_weight`` (default: the perceptual weight). A path that does
    not exist is an error, not a silent fallback.
    """
    losses: dict[str, nn.Module] = {"pixel": L1Loss(pixel_weight)}
    if vgg_weights_path is not None:
        losses["perceptual"] = PerceptualLoss(vgg_weights_path, loss_weight=perceptual_weight)
    else:
        w = perceptual_weight if feature_matching_weight is None else feature_matching_weight
        losses["feature_matching"] = FeatureMatchingLoss(w)
    losses["gan"] = RelativisticGANLoss(gan_weight)
    return losses
