"""EfficientNet-B0-style MBConv network: depthwise convs, SE, SiLU.

Unlike MobileNetV3, the SE squeeze width derives from the *block input*
channels, not the expanded width, and every activation is SiLU.
"""

from __future__ import annotations

import torch
from torch import nn

from models.cnn.common import ConvBNAct, SqueezeExcite

__all__ = ["EfficientNet", "MBConv", "efficientnet"]


class MBConv(nn.Module):
    """Expand 1x1 -> depthwise kxk -> SE(sigmoid) -> project 1x1, residual if shapes match."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        expand_ratio: int,
        se_ratio: float = 0.25,
    ) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        self.use_res = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_ch, hidden, 1, act=nn.SiLU))
        layers += [
            ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, act=nn.SiLU),
            SqueezeExcite(hidden, max(1, int(in_ch * se_ratio)), act=nn.SiLU, gate=nn.Sigmoid),
            ConvBNAct(hidden, out_ch, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        # Stochastic depth is a no-op in eval mode, so the residual is a plain add.
        return x + out if self.use_res else out


# (expand ratio, kernel, stride, out channels, repeats)
_SETTINGS: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 32, 2),
    (6, 3, 2, 48, 2),
    (6, 5, 1, 64, 1),
)


class EfficientNet(nn.Module):
    """SiLU stem, MBConv stages, 1x1 head conv, pool, dropout, linear."""

    def __init__(
        self,
        settings: tuple[tuple[int, int, int, int, int], ...] = _SETTINGS,
        stem_ch: int = 16,
        head_ch: int = 160,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, stem_ch, 3, 1, act=nn.SiLU)]
        in_ch = stem_ch
        for t, k, s, c, n in settings:
            for i in range(n):
                layers.append(MBConv(in_ch, c, k, s if i == 0 else 1, t))
                in_ch = c
        layers.append(ConvBNAct(in_ch, head_ch, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(head_ch, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def efficientnet() -> EfficientNet:
    """Width/depth-reduced EfficientNet-B0 for 32x32 inputs."""
    return EfficientNet()
