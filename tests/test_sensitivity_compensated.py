"""Compensated sensitivity trials (passes/compensation.py): each trial of the sensitivity scan
measured after recovery's bias compensation, so a group whose units carry mostly a constant
(cheap to remove once compensated, costly when zeroed) is ranked as recovery will leave it.

The model is a torch CNN exported as users do (dynamo, net.onnx + net.onnx.data): two conv
branches concatenated into one conv. Branch `a`'s channels are nearly constant (tiny weights,
bias 3), branch `b`'s carry the input (no bias, no ReLU). Every number the scan reports is
recomputed here in torch (float64) from the definition: the removed channels zeroed and, when
compensated, the sink conv's bias moved by W[:, P]·E[x_P] per kernel tap of its padded input.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from graphprune.passes import scoring, sensitivity
from graphprune.passes.calibration import Calibration
from graphprune.passes.options import Options
from graphprune.passes.selection import ranked
from torch import nn
from torch.nn import functional as F

import graphprune
from graphprune.analysis import analyze_graph
from graphprune.cli import main
from graphprune.context import RunContext
from graphprune.errors import InputError
from graphprune.ir import Graph

SAMPLES = 16


class Branches(nn.Module):
    """cat(relu(a(x)), b(x)) → out (k×k, zero padding) → relu → mean → head."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.out = nn.Conv2d(16, 8, k, padding=k // 2)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.out(self.cat(x))).mean(dim=(2, 3)))

    def cat(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.relu(self.a(x)), self.b(x)], 1)


def branches(k: int) -> Branches:
    torch.manual_seed(0)
    net = Branches(k).eval()
    with torch.no_grad():
        net.a.weight.mul_(0.02)  # a: nearly constant channels (3 ± a little)
        net.a.bias.fill_(3.0)
        net.b.weight.mul_(3.0)  # b: the signal, mean about 0
    return net


@pytest.fixture(scope="module", params=[1, 3], ids=["1x1", "3x3"])
def exported(request, tmp_path_factory) -> tuple[Branches, Path]:
    net = branches(request.param)
    path = tmp_path_factory.mktemp(f"branches{request.param}") / "net.onnx"
    torch.onnx.export(net, (torch.randn(2, 3, 12, 12),), str(path), dynamo=True,
                      dynamic_shapes={"x": {0: "batch"}})
    assert path.with_name("net.onnx.data").is_file()
    return net, path


def images(n: int = 40) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, 12, 12)).astype(np.float32)


def reference(net: Branches, x: np.ndarray, channels: list[int], compensated: bool) -> float:
    """‖f_trial − f‖ / ‖f‖ over the samples, in float64: the `channels` of the concatenation
    zeroed, and with `compensated` the sink conv's bias moved by Σ_{p,t} W[o, p, t]·E[x_p,t],
    the means of the zero-padded input per kernel tap over every sample and position."""
    net = branches(net.out.kernel_size[0]).double()  # the same weights, in float64
    with torch.no_grad():
        xt = torch.from_numpy(x).double()
        h = net.cat(xt)
        base = net(xt)
        k, pad = net.out.kernel_size[0], net.out.padding[0]
        cols = F.unfold(h, k, padding=pad)  # [N, C·k·k, L], channel-major then taps
        means = cols.mean(dim=(0, 2)).reshape(16, k * k)
        w = net.out.weight.reshape(8, 16, k * k)
        bias = net.out.bias.clone()
        if compensated:
            bias += torch.einsum("opt,pt->o", w[:, channels], means[channels])
        masked = h.clone()
        masked[:, channels] = 0.0
        y = net.head(torch.relu(F.conv2d(masked, net.out.weight, bias,
                                         padding=pad)).mean(dim=(2, 3)))
    return float(torch.linalg.norm(y - base) / torch.linalg.norm(base))


def scan(path: Path, trials: str) -> tuple[dict[str, list[tuple[int, float]]], dict, list[str]]:
    model = onnx.load(str(path))
    an = analyze_graph(Graph(model))
    scores = scoring.score_units(an, "l1")
    free = [gi for gi, g in enumerate(an.groups) if g.prunable and len(g.units) > 1]
    ctx = RunContext()
    calib = Calibration(model, {"x": images(SAMPLES)}, samples=SAMPLES)
    curves = sensitivity.scan(model, an, scores, free, Options(sensitivity_trials=trials),
                              calib, ctx)
    orders = {an.groups[gi].name: [an.groups[gi].units.index(u)
                                   for u in ranked(an.groups[gi], scores)] for gi in free}
    return {an.groups[gi].name: sorted(curves[gi]) for gi in free}, orders, ctx.notes


@pytest.mark.parametrize("trials", ["plain", "compensated"])
def test_every_trial_is_the_model_it_says(exported, trials: str) -> None:
    """Each measured point of the `a` and `b` curves equals the torch reference of that removal
    (the concatenation's channels 0-7 are a's, 8-15 b's), plain or compensated, a 3×3 sink
    with zero padding included."""
    net, path = exported
    curves, orders, notes = scan(path, trials)
    assert set(curves) == {"a", "b", "out"}
    x = images(SAMPLES)
    for name, offset in (("a", 0), ("b", 8)):
        assert len(curves[name]) == 8  # 0 and the 7 counts a group of 8 may lose
        for c, err in curves[name][1:]:
            channels = [offset + i for i in orders[name][:c]]
            want = reference(net, x, channels, trials == "compensated")
            assert err == pytest.approx(want, rel=1e-4, abs=1e-6), (name, c)
    (note,) = [n for n in notes if n.startswith("sensitivity:")]
    if trials == "plain":
        assert note.endswith("trials plain (removed units zeroed, no bias compensation)")
    else:
        assert ("trials compensated (each sink's bias += W[:, P]·E[x_P], as --recover bias "
                f"writes it: 2 sinks, input means of {SAMPLES} samples)") in note


def test_compensation_ranks_the_constant_group_as_cheap(exported) -> None:
    """Plainly, zeroing `a`'s nearly constant channels costs more than as many of `b`'s;
    compensated, less: what is left of `a`'s cost is their variation (and, behind a 3×3 sink,
    the zero-padded border, where the compensated bias reads a mean the conv did not see).
    `b`'s error is nearly the same either way (its mean is about 0)."""
    _, path = exported
    k = 3 if "branches3" in str(path) else 1
    plain, _, _ = scan(path, "plain")
    comp, _, _ = scan(path, "compensated")
    a_plain, a_comp = dict(plain["a"]), dict(comp["a"])
    b_plain, b_comp = dict(plain["b"]), dict(comp["b"])
    for c in range(1, 8):
        assert a_plain[c] > b_plain[c] and a_comp[c] < b_comp[c], c
        assert a_comp[c] < (0.11 if k == 3 else 0.002) * a_plain[c], c
        assert b_comp[c] == pytest.approx(b_plain[c], rel=0.1), c


def test_compensated_scan_prunes_the_constant_group_more(exported) -> None:
    """The same run with plain and compensated trials (bias recovery on both): compensated
    trials move the cut from `b` to `a`, and the recovered model is closer to the original on
    the held-back samples. Both pass the exact check; the plan and the note say which."""
    _, path = exported
    runs = {}
    for trials in ("plain", "compensated"):
        pruned, rep = graphprune.compress(str(path), ratio=0.4, allocation="sensitivity",
                                          calib={"x": images()}, recover="bias",
                                          sensitivity_trials=trials)
        assert rep.exact_check["passed"]
        assert rep.plan.settings["sensitivity_trials"] == trials
        lost = {d.name: d.units_before - d.units_after for d in rep.group_details}
        runs[trials] = lost, rep.recovery["fidelity_after"]["linear"]["rel_l2"]
    (plain, plain_err), (comp, comp_err) = runs["plain"], runs["compensated"]
    assert sum(plain.values()) == sum(comp.values())  # the same number of units
    assert plain["a"] < plain["b"] and comp["a"] > comp["b"], runs
    assert comp["a"] == 7  # all but one of the constant channels (max-group-ratio 0.9)
    assert comp_err < 0.5 * plain_err, runs


def test_default_follows_recovery_and_the_flag(exported, tmp_path: Path, capsys) -> None:
    """Compensated when recovery runs, plain without it; --sensitivity-trials overrides, and
    the plan's settings record the trials used (sensitivity allocation only)."""
    _, path = exported
    assert Options().trials == "plain"
    assert Options(calib={"x": images(4)}).trials == "compensated"  # refit by default
    assert Options(recover="bias").trials == "compensated"
    assert Options(recover="refit", sensitivity_trials="plain").trials == "plain"
    assert "sensitivity_trials" not in Options().to_dict()
    d = Options(allocation="sensitivity", recover="refit").to_dict()
    assert d["sensitivity_trials"] == "compensated"
    assert Options.from_dict(d).trials == "compensated"
    with pytest.raises(InputError, match="unknown sensitivity trials 'zero'"):
        Options(sensitivity_trials="zero")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=images())
    plan = tmp_path / "plan.json"
    for flags, want in (([], "compensated"), (["--recover", "none"], "plain"),
                        (["--sensitivity-trials", "plain"], "plain")):
        assert main(["compress", str(path), "-o", str(tmp_path / "o.onnx"), "--calib",
                     str(calib), "--allocation", "sensitivity", "--ratio", "0.3",
                     "--plan-out", str(plan), *flags]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert f"trials {want}" in text
        assert json.loads(plan.read_text())["settings"]["sensitivity_trials"] == want
    with pytest.raises(SystemExit) as exc:
        main(["compress", str(path), "--sensitivity-trials", "zero"])
    assert exc.value.code == 2
    assert "invalid choice: 'zero'" in capsys.readouterr().err
