"""SRResNet, the SRGAN generator (Ledig et al. 2017).

9x9 head with PReLU, ``num_block`` residual blocks (conv-BN-PReLU-conv-BN), a long skip,
sub-pixel (PixelShuffle) upsampling per factor of two, 9x9 tail. ``use_bn=False`` gives
BasicSR's MSRResNet-like variant without batch normalisation.
"""

from __future__ import annotations

import torch
from torch import nn


class _ResidualBlock(nn.Module):
    def __init__(self, num_feat: int, use_bn: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(num_feat, num_feat, 3, 1, 1)]
        if use_bn:
            layers.append(nn.BatchNorm2d(num_feat))
        layers += [nn.PReLU(num_feat), nn.Conv2d(num_feat, num_feat, 3, 1, 1)]
        if use_bn:
            layers.append(nn.BatchNorm2d(num_feat))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    def __init__(
        self,
        num_in_ch: int = 1,
        num_out_ch: int = 1,
        scale: int = 2,
        num_feat: int = 64,
        num_block: int = 16,
        use_bn: bool = True,
    ) -> None:
        super().__init__()
        if scale not in (2, 4):
            raise ValueError(f"SRResNet: scale must be 2 or 4, got {scale}")
        self.head = nn.Sequential(nn.Conv2d(num_in_ch, num_feat, 9, 1, 4), nn.PReLU(num_feat))
        self.body = nn.Sequential(*[_ResidualBlock(num_feat, use_bn) for _ in range(num_block)])
        tail: list[nn.Module] = [nn.Conv2d(num_feat, num_feat, 3, 1, 1)]
        if use_bn:
            tail.append(nn.BatchNorm2d(num_feat))
        self.body_tail = nn.Sequential(*tail)
        ups: list[nn.Module] = []
        for _ in range(scale // 2):
            ups += [
                nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1),
                nn.PixelShuffle(2),
                nn.PReLU(num_feat),
            ]
        self.upsample = nn.Sequential(*ups)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 9, 1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        feat = feat + self.body_tail(self.body(feat))
        return self.conv_last(self.upsample(feat))
