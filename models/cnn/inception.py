"""GoogLeNet-style network built from four-branch Inception modules.

Each module concatenates 1x1, 1x1->3x3, 1x1->5x5 and maxpool->1x1 branches,
so one output tensor's channel ranges belong to four independent convs.
"""

from __future__ import annotations

import torch
from torch import nn

from models.cnn.common import ConvBNAct

__all__ = ["Inception", "InceptionNet", "inception"]


def _conv(in_ch: int, out_ch: int, kernel: int) -> ConvBNAct:
    """GoogLeNet's BasicConv2d: conv (no bias) + BN(eps=1e-3) + ReLU."""
    return ConvBNAct(in_ch, out_ch, kernel, bn_eps=1e-3)


class Inception(nn.Module):
    """Four parallel branches concatenated along channels."""

    def __init__(
        self,
        in_ch: int,
        ch1x1: int,
        ch3x3_red: int,
        ch3x3: int,
        ch5x5_red: int,
        ch5x5: int,
        pool_proj: int,
    ) -> None:
        super().__init__()
        self.branch1 = _conv(in_ch, ch1x1, 1)
        self.branch2 = nn.Sequential(_conv(in_ch, ch3x3_red, 1), _conv(ch3x3_red, ch3x3, 3))
        self.branch3 = nn.Sequential(_conv(in_ch, ch5x5_red, 1), _conv(ch5x5_red, ch5x5, 5))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), _conv(in_ch, pool_proj, 1))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(branches, 1)


class InceptionNet(nn.Module):
    """Conv stem, inception 3a/3b, max pool, inception 4a/4b, pool, dropout, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(3, 16, 3), _conv(16, 32, 3), nn.MaxPool2d(2, 2))
        self.inception3a = Inception(32, 16, 16, 24, 4, 8, 8)
        self.inception3b = Inception(56, 24, 24, 32, 8, 16, 16)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inception4a = Inception(88, 32, 16, 40, 4, 12, 12)
        self.inception4b = Inception(96, 32, 24, 48, 8, 16, 16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(self.inception4b.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.inception3b(self.inception3a(x))
        x = self.maxpool(x)
        x = self.inception4b(self.inception4a(x))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.dropout(x))


def inception() -> InceptionNet:
    """GoogLeNet-like net at roughly 1/8 of the original widths."""
    return InceptionNet()
