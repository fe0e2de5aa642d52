"""U-Net encoder/decoder with skip concatenations.

Uses ConvTranspose2d for two decoder levels and bilinear nn.Upsample + conv
for another, so both upsampling styles (one with weights whose *input*
channel dim comes first, one parameter-free) appear in the graph.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DoubleConv", "UNet", "unet"]


class DoubleConv(nn.Sequential):
    """(3x3 conv -> BN -> ReLU) x 2."""

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int | None = None) -> None:
        mid = mid_ch or out_ch
        super().__init__(
            nn.Conv2d(in_ch, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


class UpTransposed(nn.Module):
    """2x2 stride-2 transposed conv halving channels, concat skip, DoubleConv."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, in_ch // 2, 2, stride=2)
        self.conv = DoubleConv(in_ch // 2 + skip_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], 1))


class UpBilinear(nn.Module):
    """Bilinear 2x upsample (no weights), concat skip, DoubleConv."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv = DoubleConv(in_ch + skip_ch, out_ch, mid_ch=(in_ch + skip_ch) // 2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], 1))


class UNet(nn.Module):
    """Three 2x downsamplings, a bottleneck, and three upsampling levels to a 1x1 head."""

    def __init__(self, in_ch: int = 3, num_classes: int = 2, base: int = 8) -> None:
        super().__init__()
        c1, c2, c3, c4 = base, base * 2, base * 4, base * 8
        self.inc = DoubleConv(in_ch, c1)
        self.pool = nn.MaxPool2d(2)
        self.down1 = DoubleConv(c1, c2)
        self.down2 = DoubleConv(c2, c3)
        self.down3 = DoubleConv(c3, c4)
        self.up1 = UpTransposed(c4, c3, c3)
        self.up2 = UpBilinear(c3, c2, c2)
        self.up3 = UpTransposed(c2, c1, c1)
        self.outc = nn.Conv2d(c1, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)
        x2 = self.down1(self.pool(x1))
        x3 = self.down2(self.pool(x2))
        x4 = self.down3(self.pool(x3))
        x = self.up1(x4, x3)
        x = self.up2(x, x2)
        x = self.up3(x, x1)
        return self.outc(x)


def unet() -> UNet:
    """U-Net with widths 8/16/32/64 for 64x64 segmentation (2 classes)."""
    return UNet()
