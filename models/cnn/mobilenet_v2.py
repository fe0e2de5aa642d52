"""MobileNetV2: inverted residuals with depthwise 3x3 and linear bottlenecks.

Exercises depthwise convs (groups == channels, so input and output channels
must be pruned together) and residual adds that appear only when stride is 1
and widths match.
"""

from __future__ import annotations

import torch
from torch import nn

from models.cnn.common import ConvBNAct, make_divisible

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenet_v2"]


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6) -> depthwise 3x3 (ReLU6) -> 1x1 project (no activation)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        self.use_res = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_ch, hidden, 1, act=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res:
            return x + self.conv(x)
        return self.conv(x)


# (expand ratio t, output channels c, repeats n, first stride s)
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 8, 1, 1),
    (6, 16, 2, 2),
    (6, 24, 3, 2),
    (6, 32, 2, 1),
    (6, 48, 2, 2),
)


class MobileNetV2(nn.Module):
    """Stem conv, inverted-residual stages, 1x1 head conv, pool, dropout, linear."""

    def __init__(
        self,
        settings: tuple[tuple[int, int, int, int], ...] = _SETTINGS,
        stem_ch: int = 16,
        last_ch: int = 128,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, stem_ch, 3, 1, act=nn.ReLU6)]
        in_ch = stem_ch
        for t, c, n, s in settings:
            out_ch = make_divisible(c)
            for i in range(n):
                layers.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        layers.append(ConvBNAct(in_ch, last_ch, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last_ch, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2() -> MobileNetV2:
    """Width-reduced MobileNetV2 for 32x32 inputs (three stride-2 stages)."""
    return MobileNetV2()
