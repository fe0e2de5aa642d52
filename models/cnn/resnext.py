"""ResNeXt: bottleneck blocks whose 3x3 conv is grouped (cardinality 8).

Grouped convs constrain pruning: channels can only be removed in a way that
keeps every group the same size (or whole groups at once).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResNeXt", "ResNeXtBlock", "resnext"]


class ResNeXtBlock(nn.Module):
    """1x1 -> grouped 3x3 (cardinality x group_width) -> 1x1, projection shortcut if needed."""

    def __init__(
        self, in_ch: int, out_ch: int, cardinality: int, group_width: int, stride: int
    ) -> None:
        super().__init__()
        width = cardinality * group_width
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNeXt(nn.Module):
    """3x3 stem, ResNeXt stages (group width doubles per stage), pool, linear."""

    def __init__(
        self,
        depths: tuple[int, ...] = (1, 2, 1),
        out_widths: tuple[int, ...] = (64, 128, 256),
        cardinality: int = 8,
        base_group_width: int = 4,
        stem_ch: int = 16,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_ch, 3, 1, 1, bias=False),
            nn.BatchNorm2d(stem_ch),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        in_ch = stem_ch
        for i, (depth, out_ch) in enumerate(zip(depths, out_widths, strict=True)):
            group_width = base_group_width * 2**i
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(ResNeXtBlock(in_ch, out_ch, cardinality, group_width, stride))
                in_ch = out_ch
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnext() -> ResNeXt:
    """ResNeXt with cardinality 8 and group widths 4/8/16."""
    return ResNeXt()
