"""Building blocks shared by several reference CNNs.

Kept deliberately plain (no fused or scripted modules) so both ONNX exporters
see the textbook op sequence: Conv -> BatchNorm -> activation.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "ConvBNAct",
    "LayerNorm2d",
    "SqueezeExcite",
    "count_params",
    "make_divisible",
    "randomize_bn",
]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (MobileNet rule).

    Never rounds down by more than 10%, matching the reference implementations.
    """
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + optional activation, 'same' padding."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
        bn_eps: float = 1e-5,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch, eps=bn_eps),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel gating: global pool -> 1x1 reduce -> act -> 1x1 expand -> gate -> mul.

    The gate multiplies the block input, so the pruner must keep the expand
    conv's output channels aligned with the gated tensor.
    """

    def __init__(
        self,
        channels: int,
        squeeze: int,
        act: type[nn.Module] = nn.ReLU,
        gate: type[nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))
        return x * scale


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dim of an NCHW tensor, written out explicitly.

    Mirrors the ConvNeXt reference "channels_first" LayerNorm: mean/variance
    over dim 1, then a per-channel affine broadcast with ``[:, None, None]``.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


@torch.no_grad()
def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm layer non-trivial statistics and affine params.

    Freshly built BN layers are the identity in eval mode (mean 0, var 1,
    weight 1, bias 0), which would hide bugs in BN folding or channel
    slicing. A private generator keeps this deterministic and independent of
    the global RNG state.
    """
    gen = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=gen) * (hi - lo) + lo)

    def normal(t: torch.Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=gen) * std)

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.running_mean is not None and module.running_var is not None:
                normal(module.running_mean, 0.2)
                uniform(module.running_var, 0.5, 2.0)
            if module.affine:
                uniform(module.weight, 0.5, 1.5)
                normal(module.bias, 0.2)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm, LayerNorm2d)):
            if module.weight is not None:
                uniform(module.weight, 0.5, 1.5)
            if module.bias is not None:
                normal(module.bias, 0.2)
    return model


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (buffers such as BN stats excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
