"""MobileNetV3: inverted residuals with SE gating and Hardswish activations.

The SE block (pool -> 1x1 -> ReLU -> 1x1 -> Hardsigmoid -> mul) creates a
side branch whose output channels must match the gated depthwise output.
"""

from __future__ import annotations

import torch
from torch import nn

from models.cnn.common import ConvBNAct, SqueezeExcite, make_divisible

__all__ = ["MobileNetV3", "V3Block", "mobilenet_v3"]


class V3Block(nn.Module):
    """Expand 1x1 -> depthwise kxk -> optional SE -> linear 1x1 projection."""

    def __init__(
        self,
        in_ch: int,
        kernel: int,
        hidden: int,
        out_ch: int,
        use_se: bool,
        act: type[nn.Module],
        stride: int,
    ) -> None:
        super().__init__()
        self.use_res = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if hidden != in_ch:
            layers.append(ConvBNAct(in_ch, hidden, 1, act=act))
        layers.append(ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if use_se:
            squeeze = make_divisible(hidden // 4)
            layers.append(SqueezeExcite(hidden, squeeze, act=nn.ReLU, gate=nn.Hardsigmoid))
        layers.append(ConvBNAct(hidden, out_ch, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_res else out


_RE, _HS = nn.ReLU, nn.Hardswish
# (kernel, expanded, out, use_se, activation, stride), a shrunken V3-Small.
_SETTINGS: tuple[tuple[int, int, int, bool, type[nn.Module], int], ...] = (
    (3, 16, 16, True, _RE, 2),
    (3, 48, 24, False, _RE, 2),
    (3, 56, 24, False, _RE, 1),
    (5, 64, 32, True, _HS, 2),
    (5, 96, 32, True, _HS, 1),
    (5, 96, 40, True, _HS, 1),
    (5, 120, 40, True, _HS, 1),
)


class MobileNetV3(nn.Module):
    """Hardswish stem, V3 blocks, 1x1 head, pool, Linear-Hardswish-Dropout-Linear."""

    def __init__(
        self,
        settings: tuple[tuple[int, int, int, bool, type[nn.Module], int], ...] = _SETTINGS,
        stem_ch: int = 16,
        last_ch: int = 128,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, stem_ch, 3, 1, act=nn.Hardswish)]
        in_ch = stem_ch
        for kernel, hidden, out_ch, use_se, act, stride in settings:
            layers.append(V3Block(in_ch, kernel, hidden, out_ch, use_se, act, stride))
            in_ch = out_ch
        head_ch = 6 * in_ch
        layers.append(ConvBNAct(in_ch, head_ch, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(head_ch, last_ch),
            nn.Hardswish(),
            nn.Dropout(0.2),
            nn.Linear(last_ch, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v3() -> MobileNetV3:
    """Width-reduced MobileNetV3-Small for 32x32 inputs."""
    return MobileNetV3()
