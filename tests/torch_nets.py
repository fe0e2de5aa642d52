"""Small seeded torch modules for the torch-path tests (tests/test_torch_*.py)."""

from __future__ import annotations

import torch
from torch import nn


def seeded(seed: int = 0) -> None:
    torch.manual_seed(seed)


class CNN(nn.Module):
    """Conv-BN-ReLU twice, a pool, a BatchNorm after a ReLU, a linear head (8×8 images)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def cnn(seed: int = 0) -> CNN:
    """The CNN with BatchNorm statistics that are not the identity."""
    seeded(seed)
    net = CNN()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.2, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return net


def images(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


class TokenMLP(nn.Module):
    """Linear layers on [batch, tokens, features] (the exporter's Transpose → MatMul)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(12, 32)
        self.down = nn.Linear(32, 12)
        self.out = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x + self.down(torch.relu(self.up(x))))


def tokens(n: int = 3, seed: int = 2) -> torch.Tensor:
    return torch.randn(n, 6, 12, generator=torch.Generator().manual_seed(seed))


class SlicedWeight(nn.Module):
    """One parameter read through slices of it (a fused weight the forward splits)."""

    def __init__(self) -> None:
        super().__init__()
        self.fused = nn.Parameter(torch.randn(40, 12) * 0.3)
        self.proj = nn.Linear(16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.nn.functional.linear(x, self.fused[:16])
        b = torch.nn.functional.linear(x, self.fused[24:])
        return self.proj(torch.relu(a) * b)


class ForwardConstant(nn.Module):
    """A weight made in forward (a constant of the export, no parameter)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(12, 16)
        self.b = nn.Linear(12, 8)
        self.c = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fixed = torch.arange(16 * 4, dtype=torch.float32).reshape(4, 16) / 64.0
        h = torch.nn.functional.linear(torch.relu(self.a(x)), fixed)
        return h + self.c(torch.relu(self.b(x)))


class LiteralView(nn.Module):
    """A flatten with a literal width in forward: a sliced copy cannot run it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).reshape(x.shape[0], 8 * 8 * 8))
