"""DenseNet-BC: each layer's output is concatenated onto a growing feature map.

Concatenation makes one tensor's channels come from many producers, so a
pruner must map channel ranges of every consumer back to the right layer.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DenseLayer", "DenseNet", "Transition", "densenet"]


class DenseLayer(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-1x1 then BN-ReLU-3x3 producing ``growth`` maps."""

    def __init__(self, in_ch: int, growth: int, bn_size: int = 4) -> None:
        super().__init__()
        mid = bn_size * growth
        self.norm1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, growth, 3, padding=1, bias=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.norm1(x)))
        return self.conv2(self.relu(self.norm2(out)))


class DenseBlock(nn.Module):
    """Stack of dense layers; each one sees the concatenation of all previous outputs."""

    def __init__(self, num_layers: int, in_ch: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_ch + i * growth, growth) for i in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return x


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv (channel compression) then 2x2 average pool."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_ch),
            nn.ReLU(),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.AvgPool2d(2, 2),
        )


class DenseNet(nn.Module):
    """3x3 stem, dense blocks separated by transitions, final BN-ReLU, pool, linear."""

    def __init__(
        self,
        block_layers: tuple[int, ...] = (3, 4, 3),
        growth: int = 12,
        stem_ch: int = 24,
        compression: float = 0.5,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, stem_ch, 3, padding=1, bias=False)]
        ch = stem_ch
        for i, n in enumerate(block_layers):
            layers.append(DenseBlock(n, ch, growth))
            ch += n * growth
            if i != len(block_layers) - 1:
                out_ch = int(ch * compression)
                layers.append(Transition(ch, out_ch))
                ch = out_ch
        layers += [nn.BatchNorm2d(ch), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def densenet() -> DenseNet:
    """DenseNet-BC with growth 12 and (3, 4, 3) layers per block."""
    return DenseNet()
