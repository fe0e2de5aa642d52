"""CIFAR-sized ResNets with BasicBlock and Bottleneck (expansion 4) blocks.

Covers the residual-add coupling a pruner must respect: the identity path
ties the block output channels to its input, and a 1x1 conv + BN projection
shortcut is used whenever stride or width changes.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet_basic", "resnet_bottleneck"]


def _projection(in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    """1x1 conv + BN shortcut, or None when the identity already matches."""
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
        nn.BatchNorm2d(out_ch),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual add (ResNet-18/34 style)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride here, as in torchvision v1.5) -> 1x1 expand x4."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """3x3 stem, stages of residual blocks, global average pool, linear classifier."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        depths: tuple[int, ...],
        widths: tuple[int, ...],
        stem_ch: int = 16,
        num_classes: int = 10,
        imagenet_stem: bool = False,
    ) -> None:
        super().__init__()
        if imagenet_stem:  # torchvision's 7x7/2 conv + 3x3/2 max pool
            self.stem = nn.Sequential(
                nn.Conv2d(3, stem_ch, 7, 2, 3, bias=False),
                nn.BatchNorm2d(stem_ch),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, stem_ch, 3, 1, 1, bias=False),
                nn.BatchNorm2d(stem_ch),
                nn.ReLU(inplace=True),
            )
        stages: list[nn.Module] = []
        in_ch = stem_ch
        for i, (depth, planes) in enumerate(zip(depths, widths, strict=True)):
            blocks: list[nn.Module] = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(in_ch, planes, stride))
                in_ch = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet_basic() -> ResNet:
    """ResNet-14-ish: three stages of two BasicBlocks, widths 16/32/64."""
    return ResNet(BasicBlock, depths=(2, 2, 2), widths=(16, 32, 64))


def resnet_bottleneck() -> ResNet:
    """Bottleneck ResNet, planes 8/16/32 (outputs 32/64/128 after expansion)."""
    return ResNet(Bottleneck, depths=(2, 2, 2), widths=(8, 16, 32))


def resnet50() -> ResNet:
    """Full-size ResNet-50 layout (25.6M parameters), for benchmarks rather than tests."""
    return ResNet(Bottleneck, depths=(3, 4, 6, 3), widths=(64, 128, 256, 512), stem_ch=64,
                  num_classes=1000, imagenet_stem=True)
