"""SRCNN (Dong et al. 2014): three convolutions on the bicubic-upsampled image.

The 9-5-5 variant (64 and 32 feature maps) with "same" padding so the output has the
upsampled size. Bicubic upsampling is part of ``forward`` (an ONNX Resize), so SRCNN takes
the same LR input as every other generator here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


class SRCNN(nn.Module):
    def __init__(
        self,
        num_in_ch: int = 1,
        num_out_ch: int = 1,
        scale: int = 2,
        num_feat: int = 64,
        num_feat2: int = 32,
        kernels: tuple[int, int, int] = (9, 5, 5),
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.residual = residual
        k1, k2, k3 = kernels
        self.conv1 = nn.Conv2d(num_in_ch, num_feat, k1, padding=k1 // 2)
        self.conv2 = nn.Conv2d(num_feat, num_feat2, k2, padding=k2 // 2)
        self.conv3 = nn.Conv2d(num_feat2, num_out_ch, k3, padding=k3 // 2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=float(self.scale), mode="bicubic", align_corners=False)
        out = self.conv3(self.relu(self.conv2(self.relu(self.conv1(up)))))
        return out + up if self.residual else out
