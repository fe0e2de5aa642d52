"""VGG-style plain CNN whose classifier flattens a 4x4 feature map.

The flatten -> Linear step couples each conv output channel to a block of
H*W consecutive Linear input features; pruning the last conv must slice
those blocks, not single columns.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["VGG", "vgg"]

# Integers are conv widths, "M" is a 2x2 max pool.
_CFG: tuple[int | str, ...] = (16, 16, "M", 32, 32, "M", 64, 64, "M")


class VGG(nn.Module):
    """conv-BN-ReLU stacks with max pools, then a two-layer MLP classifier."""

    def __init__(
        self,
        cfg: tuple[int | str, ...] = _CFG,
        input_size: int = 32,
        hidden: int = 64,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch, size = 3, input_size
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                size //= 2
            else:
                assert isinstance(item, int)
                layers += [
                    nn.Conv2d(in_ch, item, 3, padding=1, bias=False),
                    nn.BatchNorm2d(item),
                    nn.ReLU(inplace=True),
                ]
                in_ch = item
        if size < 2:
            raise ValueError("flatten must see spatial size > 1 to couple channels with H*W")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(in_ch * size * size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def vgg() -> VGG:
    """Six convs (16/32/64 wide) on 32x32 input, flattening 64x4x4."""
    return VGG()
