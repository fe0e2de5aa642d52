"""Distillation for recovery without labels: the losses against their formulas, and a pruned
student healed toward its dense teacher (a frozen copy taken before pruning)."""

from __future__ import annotations

import math

import pytest
import torch
import torch_nets
from torch import nn

from graphprune.errors import InputError
from graphprune.torch import Distiller, Pruner, distill_loss


def test_losses_match_their_formulas():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 4, 7, generator=g), torch.randn(3, 4, 7, generator=g)
    temp = 2.5
    ps, pt = torch.softmax(s / temp, -1), torch.softmax(t / temp, -1)
    kl = (pt * (pt.log() - ps.log())).sum(-1).mean() * temp ** 2  # per position, averaged
    assert distill_loss(s, t, "kl", temperature=temp).item() == pytest.approx(kl.item(), rel=1e-5)
    assert distill_loss(s, t, "mse").item() == pytest.approx(((s - t) ** 2).mean().item())
    cos = (s * t).sum(-1) / (s.norm(dim=-1) * t.norm(dim=-1))
    assert distill_loss(s, t, "cosine").item() == pytest.approx((1 - cos).mean().item(), rel=1e-5)
    for kind in ("kl", "mse", "cosine"):
        assert distill_loss(t, t, kind).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InputError, match="unknown distillation kind"):
        distill_loss(s, t, "l1")
    with pytest.raises(InputError, match="differ in shape"):
        distill_loss(s, t[:, :2], "mse")


def test_teacher_is_a_frozen_copy_and_gradients_reach_only_the_student():
    torch_nets.seeded(0)
    net = torch_nets.TokenMLP()
    distiller = Distiller(net, kind="mse")
    assert distiller.teacher is not net and not distiller.teacher.training
    assert all(not p.requires_grad for p in distiller.teacher.parameters())
    x = torch_nets.tokens()
    pr = Pruner(net, x, ratio=0.5)
    pr.prune()
    assert (distiller.teacher.up.weight != 0).all()  # pruning the student leaves it alone
    loss = distiller(net(x), x)
    assert loss.item() > 0
    loss.backward()
    assert net.up.weight.grad is not None
    assert all(p.grad is None for p in distiller.teacher.parameters())


def test_distillation_heals_a_pruned_student():
    torch_nets.seeded(0)
    net = torch_nets.TokenMLP()
    distiller = Distiller(net, kind="kl", temperature=2.0)
    data = [torch_nets.tokens(8, seed=40 + k) for k in range(8)]  # unlabelled
    held_out = torch_nets.tokens(16, seed=99)
    pr = Pruner(net, data[0][:2], ratio=0.5)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    pr.attach(opt)
    pr.prune()

    def held_out_loss() -> float:
        with torch.no_grad():
            return distiller(net(held_out), held_out).item()

    before = held_out_loss()
    for _ in range(15):
        for x in data:
            distiller(net(x), x).backward()
            opt.step()
            opt.zero_grad()
    after = held_out_loss()
    assert after < 0.5 * before and math.isfinite(after)
    for name, keep in pr.masks.items():
        assert (pr.tensors[name][~keep] == 0).all()
    assert pr.export()[1].exact_check["passed"]


def test_select_picks_the_tensor_to_compare():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return {"hidden": self.lin(x), "other": x}

    torch_nets.seeded(0)
    net = Two()
    x = torch.randn(2, 4)
    d = Distiller(net, kind="cosine", select=lambda out: out["hidden"])
    with torch.no_grad():
        net.lin.weight.mul_(-1)
    assert d(net(x), x).item() > 0.5
    with torch.no_grad():  # the default: the first tensor of the output
        assert torch.equal(Distiller(net, kind="mse").targets(x), net(x)["hidden"])
