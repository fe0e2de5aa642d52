"""ConvNeXt: depthwise 7x7, channels-last LayerNorm + MLP, layer scale.

Covers permutes around a LayerNorm/Linear pair (channel dim moves to the
last axis and back), per-channel layer-scale multiplies, and the explicit
channels-first LayerNorm used in the stem and downsampling layers.
"""

from __future__ import annotations

import torch
from torch import nn

from models.cnn.common import LayerNorm2d

__all__ = ["ConvNeXt", "ConvNeXtBlock", "convnext"]


class ConvNeXtBlock(nn.Module):
    """dw7x7 -> permute NHWC -> LN -> Linear 4x -> GELU -> Linear -> gamma -> permute -> add."""

    def __init__(self, dim: int, layer_scale_init: float = 0.5) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        # The paper initialises gamma at 1e-6; a larger value keeps the MLP
        # branch numerically visible so export/pruning errors are not masked.
        self.gamma = nn.Parameter(layer_scale_init * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.dwconv(x)
        x = x.permute(0, 2, 3, 1)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        x = self.gamma * x
        x = x.permute(0, 3, 1, 2)
        return shortcut + x


class ConvNeXt(nn.Module):
    """Patchify stem + LN, stages separated by (LN, 2x2 stride-2 conv), pool, LN, linear."""

    def __init__(
        self,
        depths: tuple[int, ...] = (1, 1, 2, 1),
        dims: tuple[int, ...] = (16, 32, 64, 96),
        stem_patch: int = 2,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(nn.Conv2d(3, dims[0], stem_patch, stem_patch), LayerNorm2d(dims[0]))
        )
        for i in range(len(dims) - 1):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, 2))
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(dim) for _ in range(depth)))
            for depth, dim in zip(depths, dims, strict=True)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        x = self.norm(x.mean([-2, -1]))
        return self.head(x)


def convnext() -> ConvNeXt:
    """ConvNeXt with dims 16/32/64/96 for 32x32 inputs (2x2 patchify stem)."""
    return ConvNeXt()
