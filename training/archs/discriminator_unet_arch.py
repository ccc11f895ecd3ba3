"""U-Net discriminator with spectral normalisation (Real-ESRGAN).

Per-pixel logits at the input resolution, so the realism judgement is local; spectral norm
keeps it stable. Any input size works (skips are resized to match on odd edges).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


class UNetDiscriminatorSN(nn.Module):
    """``[N, C, H, W] -> [N, 1, H, W]`` logits."""

    def __init__(self, num_in_ch: int = 1, num_feat: int = 64, skip_connection: bool = True):
        super().__init__()
        self.skip_connection = skip_connection
        sn = spectral_norm
        nf = num_feat
        self.conv0 = nn.Conv2d(num_in_ch, nf, 3, 1, 1)
        # downsample
        self.conv1 = sn(nn.Conv2d(nf, nf * 2, 4, 2, 1, bias=False))
        self.conv2 = sn(nn.Conv2d(nf * 2, nf * 4, 4, 2, 1, bias=False))
        self.conv3 = sn(nn.Conv2d(nf * 4, nf * 8, 4, 2, 1, bias=False))
        # upsample
        self.conv4 = sn(nn.Conv2d(nf * 8, nf * 4, 3, 1, 1, bias=False))
        self.conv5 = sn(nn.Conv2d(nf * 4, nf * 2, 3, 1, 1, bias=False))
        self.conv6 = sn(nn.Conv2d(nf * 2, nf, 3, 1, 1, bias=False))
        # extra
        self.conv7 = sn(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
        self.conv8 = sn(nn.Conv2d(nf, nf, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(nf, 1, 3, 1, 1)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the feature maps of the encoder and decoder levels."""
        act = F.leaky_relu
        x0 = act(self.conv0(x), 0.2)
        x1 = act(self.conv1(x0), 0.2)
        x2 = act(self.conv2(x1), 0.2)
        x3 = act(self.conv3(x2), 0.2)

        x4 = act(self.conv4(self._up(x3, x2)), 0.2)
        if self.skip_connection:
            x4 = x4 + x2
        x5 = act(self.conv5(self._up(x4, x1)), 0.2)
        if self.skip_connection:
            x5 = x5 + x1
        x6 = act(self.conv6(self._up(x5, x0)), 0.2)
        if self.skip_connection:
            x6 = x6 + x0

        out = act(self.conv7(x6), 0.2)
        out = act(self.conv8(out), 0.2)
        return self.conv9(out), [x1, x2, x3, x4, x5, x6]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
