"""VGG-style discriminator (ESRGAN / SRGAN): strided conv stages, then two linear layers.

One logit per image. The input edge must equal ``input_size`` (128 or 256): the linear head
is sized for it. Feature maps of every stage are available for feature matching.
"""

from __future__ import annotations

import torch
from torch import nn


class VGGStyleDiscriminator(nn.Module):
    """``[N, C, S, S] -> [N, 1]`` logits, ``S = input_size`` (a multiple of 32)."""

    def __init__(self, num_in_ch: int = 1, num_feat: int = 64, input_size: int = 128) -> None:
        super().__init__()
        if input_size % 32 or input_size < 32:
            raise ValueError(f"input_size must be a multiple of 32 (got {input_size})")
        self.input_size = input_size
        widths = [num_feat, num_feat * 2, num_feat * 4, num_feat * 8, num_feat * 8]
        stages: list[nn.Module] = []
        in_ch = num_in_ch
        for i, w in enumerate(widths):
            layers: list[nn.Module] = [nn.Conv2d(in_ch, w, 3, 1, 1, bias=i == 0)]
            if i:
                layers.append(nn.BatchNorm2d(w, affine=True))
            layers += [
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(w, w, 4, 2, 1, bias=False),
                nn.BatchNorm2d(w, affine=True),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            stages.append(nn.Sequential(*layers))
            in_ch = w
        self.stages = nn.ModuleList(stages)
        edge = input_size // 32
        self.linear1 = nn.Linear(widths[-1] * edge * edge, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the output of each of the five conv stages."""
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            raise ValueError(
                f"VGGStyleDiscriminator expects {self.input_size}x{self.input_size} input, "
                f"got {tuple(x.shape[-2:])}"
            )
        feats: list[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        out = self.lrelu(self.linear1(x.flatten(1)))
        return self.linear2(out), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
