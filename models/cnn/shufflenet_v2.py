"""ShuffleNetV2: channel split, two-branch units and channel shuffle.

The chunk/concat/shuffle sequence permutes channels between units, which a
pruner must either track through the Reshape-Transpose-Reshape or treat as
a boundary.
"""

from __future__ import annotations

import torch
from torch import nn

from models.cnn.common import ConvBNAct

__all__ = ["ShuffleNetV2", "ShuffleUnit", "channel_shuffle", "shufflenet_v2"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channels across ``groups`` via view -> transpose -> view."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


class ShuffleUnit(nn.Module):
    """Stride 1: split channels, transform one half. Stride 2: two downsampling branches."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch % 2:
            raise ValueError("ShuffleUnit needs an even number of output channels")
        self.stride = stride
        half = out_ch // 2
        if stride == 1 and in_ch != out_ch:
            raise ValueError("stride-1 ShuffleUnit keeps the channel count")
        branch_in = in_ch if stride > 1 else half
        if stride > 1:
            self.branch1 = nn.Sequential(
                ConvBNAct(in_ch, in_ch, 3, stride, groups=in_ch, act=None),
                ConvBNAct(in_ch, half, 1),
            )
        else:
            self.branch1 = nn.Identity()
        self.branch2 = nn.Sequential(
            ConvBNAct(branch_in, half, 1),
            ConvBNAct(half, half, 3, stride, groups=half, act=None),
            ConvBNAct(half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """Conv stem, three shuffle stages (stride-2 unit first), 1x1 head, pool, linear."""

    def __init__(
        self,
        repeats: tuple[int, ...] = (2, 3, 2),
        widths: tuple[int, ...] = (24, 48, 96, 192),
        head_ch: int = 256,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, widths[0], 3, 1)
        stages: list[nn.Module] = []
        in_ch = widths[0]
        for n, out_ch in zip(repeats, widths[1:], strict=True):
            units = [ShuffleUnit(in_ch, out_ch, 2)]
            units += [ShuffleUnit(out_ch, out_ch, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*units))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.head = ConvBNAct(in_ch, head_ch, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(head_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.stages(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def shufflenet_v2() -> ShuffleNetV2:
    """ShuffleNetV2 0.5x-like widths for 32x32 inputs."""
    return ShuffleNetV2()
