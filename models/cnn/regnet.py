"""RegNetY-style network: grouped convs with a fixed group width, plus SE.

Differs from ResNeXt in that the *group width* (channels per group) is the
constant, so the number of groups varies per stage; bottleneck ratio is 1.
"""

from __future__ import annotations

import torch
from torch import nn

from models.cnn.common import ConvBNAct, SqueezeExcite

__all__ = ["RegNet", "RegNetBlock", "regnet"]


class RegNetBlock(nn.Module):
    """1x1 -> grouped 3x3 (groups = width / group_width) -> optional SE -> 1x1, residual."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        group_width: int,
        se_ratio: float | None,
        bottleneck_ratio: float = 1.0,
    ) -> None:
        super().__init__()
        width = int(round(out_ch * bottleneck_ratio))
        if width % group_width:
            raise ValueError(f"width {width} is not a multiple of group width {group_width}")
        layers: list[nn.Module] = [
            ConvBNAct(in_ch, width, 1),
            ConvBNAct(width, width, 3, stride, groups=width // group_width),
        ]
        if se_ratio:
            # RegNetY sizes the squeeze from the block *input* width.
            layers.append(SqueezeExcite(width, max(1, int(round(in_ch * se_ratio)))))
        layers.append(ConvBNAct(width, out_ch, 1, act=None))
        self.f = nn.Sequential(*layers)
        self.proj: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.proj = ConvBNAct(in_ch, out_ch, 1, stride, act=None)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.proj is None else self.proj(x)
        return self.relu(shortcut + self.f(x))


class RegNet(nn.Module):
    """Stride-1 stem, stages that each start with a stride-2 block, pool, linear."""

    def __init__(
        self,
        depths: tuple[int, ...] = (1, 2, 2),
        widths: tuple[int, ...] = (24, 56, 152),
        group_width: int = 8,
        se_ratio: float | None = 0.25,
        stem_ch: int = 16,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, stem_ch, 3, 1)
        blocks: list[nn.Module] = []
        in_ch = stem_ch
        for depth, out_ch in zip(depths, widths, strict=True):
            for j in range(depth):
                blocks.append(RegNetBlock(in_ch, out_ch, 2 if j == 0 else 1, group_width, se_ratio))
                in_ch = out_ch
        self.trunk = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trunk(self.stem(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def regnet() -> RegNet:
    """RegNetY-like: group width 8, SE ratio 0.25, widths 24/56/152."""
    return RegNet()
