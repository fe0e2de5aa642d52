"""Schedules, regularisation and lottery tickets in the torch path, by the numbers: sparsity
at each step (Zhu & Gupta's cubic formula, equal and geometric steps), units removed at the
scheduled steps only and never restored, scores taken again from the current weights, the
regularisers' values and gradients, and rewinding to a snapshot with the masks kept."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch_nets
from torch import nn

from graphprune.errors import InputError
from graphprune.torch import Pruner, Schedule


def test_cubic_schedule_is_zhu_and_gupta():
    s = Schedule("cubic", final=0.8, steps=4, every=10, start=5, initial=0.1)
    for t in range(0, 70):
        if t < 5:
            want = 0.0
        else:
            k = min((t - 5) // 10, 4)
            want = 0.8 + (0.1 - 0.8) * (1 - (k * 10) / (4 * 10)) ** 3
        assert s.at(t) == pytest.approx(want), t
    assert s.at(5) == pytest.approx(0.1) and s.at(45) == pytest.approx(0.8) and s.last == 45


def test_iterative_geometric_and_oneshot():
    it = Schedule("iterative", final=0.6, steps=3, every=2, start=1)
    assert [it.at(t) for t in range(8)] == pytest.approx([0, 0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.6])
    geo = Schedule("geometric", final=0.75, steps=2)
    assert [geo.at(t) for t in range(3)] == pytest.approx([0.5, 0.75, 0.75])
    one = Schedule("oneshot", final=0.3, start=2)
    assert [one.at(t) for t in range(4)] == [0.0, 0.0, 0.3, 0.3]
    with pytest.raises(InputError, match="steps"):
        Schedule("cubic", final=0.5, steps=0)
    with pytest.raises(InputError, match="initial"):
        Schedule("cubic", final=0.5, initial=0.7)


def _up_group(pr: Pruner):
    return next(g for g in pr.groups if ("up.weight", (0,), "source") in g.tensors)


def test_pruner_prunes_at_the_scheduled_steps_and_never_restores():
    torch_nets.seeded(0)
    net = torch_nets.TokenMLP()
    x = torch_nets.tokens()
    pr = Pruner(net, x, ratio=0.5, schedule="cubic", steps=4, every=2, start=1)
    history, seen = [], set()
    for t in range(12):
        pruned = pr.step()
        removed = set(_up_group(pr).removed)
        assert seen <= removed  # never restored
        seen = removed
        history.append((t, pruned, len(removed)))
        with torch.no_grad():  # training moves weights between steps
            net.up.weight.mul_(1 + 0.3 * torch.randn_like(net.up.weight))
    pruned_at = [t for t, p, _ in history if p]
    assert pruned_at == [3, 5, 7, 9]
    counts = {t: n for t, _, n in history}
    for t in pruned_at:
        assert counts[t] == math.floor(pr.schedule.at(t) * 32 + 1e-9)
    assert pr.done and counts[11] == 16


def test_scores_are_taken_again_from_the_current_weights():
    torch_nets.seeded(0)
    net = torch_nets.TokenMLP()
    pr = Pruner(net, torch_nets.tokens(), ratio=0.5, schedule="iterative", steps=2)
    pr.step()
    first = set(_up_group(pr).removed)
    kept = [k for k in range(32) if k not in first]
    victims = kept[-3:]  # the largest indices left: nothing about them was small before
    with torch.no_grad():
        net.up.weight[victims] *= 1e-4
        net.up.bias[victims] *= 1e-4
        net.down.weight[:, victims] *= 1e-4
    pr.step()
    second = set(_up_group(pr).removed)
    assert first < second and set(victims) <= second and len(second) == 16


def _norms(net: torch_nets.TokenMLP) -> np.ndarray:
    w, b, d = net.up.weight.detach(), net.up.bias.detach(), net.down.weight.detach()
    return torch.sqrt((w * w).sum(1) + b * b + (d * d).sum(0)).numpy()


def test_group_lasso_value_gradient_and_effect():
    torch_nets.seeded(0)
    net = torch_nets.TokenMLP()
    x = torch_nets.tokens(8, seed=4)
    y = torch.randn(8, 6, 5, generator=torch.Generator().manual_seed(5))
    pr = Pruner(net, x[:2], ratio=0.25)
    reg = pr.regularization(group=0.5)
    # only the up group is prunable: down's units meet the input, out's the output
    assert reg.item() == pytest.approx(0.5 * float(np.sqrt(_norms(net) ** 2 + 1e-12).sum()),
                                       rel=1e-5)
    reg.backward()
    assert net.up.weight.grad.abs().sum() > 0 and net.out.weight.grad is None
    net.zero_grad()
    pr.prune()
    gone = _up_group(pr).removed
    left = np.delete(_norms(net), gone)
    assert pr.regularization(group=1.0).item() == pytest.approx(float(left.sum()), rel=1e-5)

    def train(strength: float) -> np.ndarray:
        torch_nets.seeded(0)
        model = torch_nets.TokenMLP()
        p = Pruner(model, x[:2], ratio=0.25)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        for _ in range(60):
            loss = nn.functional.mse_loss(model(x), y)
            if strength:
                loss = loss + p.regularization(group=strength)
            loss.backward()
            opt.step()
            opt.zero_grad()
        return _norms(model)

    plain, lasso = train(0.0), train(0.3)
    assert np.sort(lasso)[:8].mean() < 0.1 * np.sort(plain)[:8].mean()  # units driven to 0


def test_bn_l1_sums_the_scales_of_prunable_channels():
    net = torch_nets.cnn()
    pr = Pruner(net, torch_nets.images(2), ratio=0.5)
    want = sum(float(m.weight.detach().abs().sum()) for m in net.modules()
               if isinstance(m, nn.BatchNorm2d))
    assert pr.regularization(bn=1e-2).item() == pytest.approx(1e-2 * want, rel=1e-5)
    pr.prune()
    gone = next(g for g in pr.groups if ("features.1.weight", (0,), "param") in g.tensors).removed
    assert gone and (net.features[1].weight[gone] == 0).all()
    with pytest.raises(InputError, match="bn > 0"):
        pr.regularization()


def test_lottery_ticket_rounds_rewind_kept_weights_and_keep_masks():
    torch_nets.seeded(0)
    net = torch_nets.TokenMLP()
    x = torch_nets.tokens(8, seed=4)
    y = torch.randn(8, 6, 5, generator=torch.Generator().manual_seed(5))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    pr = Pruner(net, x[:2], ratio=0.75, schedule="geometric", steps=2, optimizer=opt)
    pr.snapshot()  # k = 0: the initialisation
    init = {k: v.clone() for k, v in net.state_dict().items()}
    removed_counts = []
    for _ in range(2):
        for _ in range(5):
            nn.functional.mse_loss(net(x), y).backward()
            opt.step()
            opt.zero_grad()
        assert pr.step()
        removed_counts.append(len(_up_group(pr).removed))
        pr.rewind()
        assert not opt.state  # the attached optimizer starts again
        for name, value in net.state_dict().items():
            keep = pr.masks.get(name)
            if keep is None:
                assert torch.equal(value, init[name]), name
            else:
                assert torch.equal(value[keep], init[name][keep]), name
                assert (value[~keep] == 0).all(), name
    assert removed_counts == [16, 24]  # half of what remains, each round
    with pytest.raises(InputError, match="snapshot"):
        Pruner(net, x[:2], ratio=0.5).rewind()
