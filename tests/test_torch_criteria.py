"""Criteria of the torch path: the ONNX criteria through the same scoring pass (the same
choices as `graphprune.compress` on the module's export with the same weights and data), and
the gradient criteria (taylor, movement, obd with the empirical Fisher) against their
formulas computed by hand from the gradients of each batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_nets
from torch import nn

import graphprune
from graphprune.torch import Pruner

ONNX_CRITERIA = ["l1", "l2", "fpgm", "lamp", "bn-scale", "random", "activation", "apoz", "wanda"]


def _removed(plan) -> dict[str, list[int]]:
    return {g["name"]: g["removed"] for g in plan.groups}


@pytest.mark.parametrize("criterion", ONNX_CRITERIA)
def test_onnx_criteria_choose_as_compress_does(criterion):
    net = torch_nets.cnn()
    calib = torch_nets.images(16, seed=5)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x, y = torch_nets.images(8, seed=6), torch.arange(8) % 10
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()  # weights moved since the export: scores must read the current ones
    pr = Pruner(net, torch_nets.images(2), ratio=0.5, criterion=criterion, calib=calib,
                calib_samples=16)
    model = pr.onnx_model()
    pr.prune()
    _, report = graphprune.compress(model, ratio=0.5, criterion=criterion,
                                    calib={"x": calib.numpy()}, calib_samples=16)
    assert _removed(pr.plan) == _removed(report.plan)
    assert sum(len(v) for v in _removed(pr.plan).values()) > 0


def test_bn_scale_reads_the_batchnorm_the_export_kept():
    net = torch_nets.cnn()
    pr = Pruner(net, torch_nets.images(2), ratio=0.5, criterion="bn-scale")
    pr.prune()
    assert not any("no BatchNormalization" in n for n in pr.notes)
    gamma = net.features[1].weight.detach().abs().numpy()
    group = next(g for g in pr.groups if ("features.1.weight", (0,), "param") in g.tensors)
    assert sorted(group.removed) == sorted(np.argsort(gamma, kind="stable")[:4].tolist())


def _batches(n: int = 3):
    return [(torch_nets.tokens(4, seed=10 + k), torch.randn(4, 6, 5, generator=torch.Generator(
        ).manual_seed(20 + k))) for k in range(n)]


def _by_hand(net: torch_nets.TokenMLP, kind: str, batches) -> np.ndarray:
    """The `up` group's unit scores from each batch's gradients: members up.weight rows,
    up.bias, down.weight columns; summed over members, then divided by their mean."""
    total = np.zeros(32)
    for x, y in batches:
        net.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        parts = [(net.up.weight, 1), (net.up.bias, None), (net.down.weight, 0)]
        for p, other in parts:
            q = (p.detach() * p.grad).double()
            if kind == "obd":
                q = 0.5 * q * q
            s = q.sum(dim=other).numpy() if other is not None else q.numpy()
            total += {"taylor": np.abs(s), "movement": -s, "obd": s}[kind]
    if kind != "movement":
        total /= len(batches)
    return total / np.mean(np.abs(total))


@pytest.mark.parametrize("kind", ["taylor", "movement", "obd"])
def test_gradient_criteria_match_their_formulas(kind):
    torch_nets.seeded(3)
    net = torch_nets.TokenMLP()
    ref = torch_nets.TokenMLP()
    ref.load_state_dict(net.state_dict())
    batches = _batches()
    pr = Pruner(net, torch_nets.tokens(), ratio=0.25, criterion=kind)
    for x, y in batches:
        net.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        pr.accumulate()
    group = next(g for g in pr.groups if ("up.weight", (0,), "source") in g.tensors)
    got = pr.scores()[group.name]
    np.testing.assert_allclose(got, _by_hand(ref, kind, batches), rtol=1e-5, atol=1e-8)
    pr.prune()
    expected = np.argsort(got, kind="stable")[:8]
    assert sorted(next(g for g in pr.groups if g.name == group.name).removed) == sorted(
        expected.tolist())
    assert (pr.stats.batches == 0) == (kind != "movement")  # movement keeps accumulating


def test_aggregate_max_takes_the_largest_member():
    torch_nets.seeded(3)
    net = torch_nets.TokenMLP()
    pr_sum = Pruner(net, torch_nets.tokens(), ratio=0.25, criterion="taylor", normalize="none")
    pr_max = Pruner(net, torch_nets.tokens(), ratio=0.25, criterion="taylor", normalize="none",
                    aggregate="max")
    x, y = _batches(1)[0]
    nn.functional.mse_loss(net(x), y).backward()
    pr_sum.accumulate()
    pr_max.accumulate()
    name = next(g.name for g in pr_sum.groups if ("up.weight", (0,), "source") in g.tensors)
    w, g = net.up.weight.detach(), net.up.weight.grad
    rows = (w * g).sum(dim=1).abs().numpy()
    bias = (net.up.bias.detach() * net.up.bias.grad).abs().numpy()
    cols = (net.down.weight.detach() * net.down.weight.grad).sum(dim=0).abs().numpy()
    np.testing.assert_allclose(pr_sum.scores()[name], rows + bias + cols, rtol=1e-5)
    np.testing.assert_allclose(pr_max.scores()[name], np.maximum(np.maximum(rows, bias), cols),
                               rtol=1e-5)
