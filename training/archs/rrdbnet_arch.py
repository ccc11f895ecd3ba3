"""RRDBNet: the ESRGAN generator (Wang et al. 2018), one image channel, x2 or x4.

Written after BasicSR's ``archs/rrdbnet_arch.py`` and the ESRGAN paper:

* Residual-in-Residual Dense Blocks (RRDB): three dense blocks of five 3x3 convolutions
  each, dense blocks and RRDBs scaled by 0.2 before the residual addition;
* no batch normalisation; LeakyReLU(0.2);
* Kaiming-normal initialisation scaled by 0.1 (keeps the deep residual stack near the
  identity at the start of training);
* upsampling by nearest-neighbour interpolation followed by a convolution, once per
  factor of two (no pixel-unshuffle trick: the trunk runs at the input resolution, so a
  tile of any size in, ``scale`` times that size out).

``global_skip`` (default ``None`` = exactly ESRGAN) adds a fixed interpolation of the
input to the output, so the trunk learns only the residual detail; it changes neither the
parameter count nor the cost, and exports to ONNX as a Resize node.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torch.nn import init


def default_init_weights(module: nn.Module | list[nn.Module], scale: float = 1.0) -> None:
    """Kaiming-normal (fan_in) weights times ``scale``, zero biases, for every conv/linear."""
    modules = module if isinstance(module, list) else [module]
    for m in modules:
        for sub in m.modules():
            if isinstance(sub, nn.Conv2d | nn.Linear):
                init.kaiming_normal_(sub.weight)
                sub.weight.data.mul_(scale)
                if sub.bias is not None:
                    sub.bias.data.zero_()


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convolutions; output = x + 0.2 * conv5(...)."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        g = num_grow_ch
        self.conv1 = nn.Conv2d(num_feat, g, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + g, g, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * g, g, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * g, g, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * g, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        default_init_weights([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x + 0.2 * x5


class RRDB(nn.Module):
    """Residual in Residual Dense Block: three dense blocks, residual scaled by 0.2."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rdb3(self.rdb2(self.rdb1(x)))
        return x + 0.2 * out


class RRDBNet(nn.Module):
    """ESRGAN generator. ``[N, num_in_ch, H, W] -> [N, num_out_ch, scale*H, scale*W]``.

    Args:
        num_in_ch / num_out_ch: image channels (1 for medical images).
        scale: 2 or 4.
        num_feat (nf): trunk width; num_block (nb): number of RRDBs; num_grow_ch (gc):
            growth channels of the dense blocks. ESRGAN uses 64/23/32; the bundled CPU
            models use a much smaller trunk (see the README).
        global_skip: ``None`` (ESRGAN), ``"nearest"`` or ``"bilinear"``: add that
            interpolation of the input to the output.
    """

    def __init__(
        self,
        num_in_ch: int = 1,
        num_out_ch: int = 1,
        scale: int = 2,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        global_skip: str | None = None,
    ) -> None:
        super().__init__()
        if scale not in (2, 4):
            raise ValueError(f"RRDBNet: scale must be 2 or 4, got {scale}")
        if global_skip not in (None, "nearest", "bilinear"):
            raise ValueError(
                f"RRDBNet: global_skip must be None, nearest or bilinear, got {global_skip!r}"
            )
        if global_skip is not None and num_in_ch != num_out_ch:
            raise ValueError("RRDBNet: global_skip needs num_in_ch == num_out_ch")
        self.scale = scale
        self.global_skip = global_skip
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1) if scale == 4 else None
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        if self.conv_up2 is not None:
            feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        out = self.conv_last(self.lrelu(self.conv_hr(feat)))
        if self.global_skip == "nearest":
            out = out + F.interpolate(x, scale_factor=float(self.scale), mode="nearest")
        elif self.global_skip == "bilinear":
            out = out + F.interpolate(
                x, scale_factor=float(self.scale), mode="bilinear", align_corners=False
            )
        return out
