"""The torch path's foundation: the export keeps every parameter and buffer under its name,
members land on the right axes of the right tensors, and masks stay zero through training.

Each test checks numbers: initializer names and values against the module's state, the
position of every removed unit in every tensor, exact zeros after optimizer steps (SGD with
momentum and weight decay, Adam, AdamW), and a plan that `graphprune apply` replays.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
import torch_nets
from onnx import numpy_helper
from torch import nn
from zoo import ROOT

import graphprune
from graphprune.errors import InputError
from graphprune.metrics import count_params
from graphprune.torch import Pruner, export_module


def test_import_graphprune_does_not_import_torch():
    code = ("import sys, graphprune, graphprune.cli, graphprune.pipeline; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_export_keeps_parameter_and_buffer_names_and_batchnorm():
    net = torch_nets.cnn()
    exported = export_module(net, torch_nets.images())
    inits = {t.name: numpy_helper.to_array(t) for t in exported.model.graph.initializer}
    state = net.state_dict()
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        assert name in inits, name  # BatchNorm weight/bias/running_mean/running_var included
        np.testing.assert_array_equal(inits[name], value.numpy())
    ops = [n.op_type for n in exported.model.graph.node]
    assert ops.count("BatchNormalization") == 3  # not folded into the convolutions
    assert net.training  # the mode is restored


def _slices(pruner: Pruner) -> dict[tuple[str, str], tuple[int, ...]]:
    return {(s.tensor, s.role): s.axes for s in pruner.mapping.slices}


def test_members_map_to_documented_axes():
    net = torch_nets.cnn()
    pr = Pruner(net, torch_nets.images(), ratio=0.5)
    axes = _slices(pr)
    assert axes[("features.0.weight", "source")] == (0,)
    assert axes[("features.3.weight", "sink")] == (1,)  # conv weight [out, in, kh, kw]
    assert axes[("head.weight", "sink")] == (1,)  # linear weight [out, in]
    for stat in ("weight", "bias", "running_mean", "running_var"):
        assert axes[(f"features.1.{stat}", "param")] == (0,)
    mlp = Pruner(torch_nets.TokenMLP(), torch_nets.tokens(), ratio=0.5)
    ops = [n.op_type for n in mlp.exported.model.graph.node]
    assert "Transpose" in ops  # 3-D input: the exporter's Transpose → MatMul
    axes = _slices(mlp)
    assert axes[("up.weight", "source")] == (0,)
    assert axes[("down.weight", "sink")] == (1,)


def test_masks_zero_every_member_of_removed_units():
    net = torch_nets.cnn()
    pr = Pruner(net, torch_nets.images(), ratio=0.5)
    pr.prune()
    group = next(g for g in pr.groups if "features.0.weight" in [t for t, _, _ in g.tensors])
    gone = group.removed
    assert len(gone) == 4  # 8 channels at 0.5
    for name in ("features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias",
                 "features.1.running_mean", "features.1.running_var"):
        t = pr.tensors[name]
        assert (t[gone] == 0).all() and (t[[k for k in range(8) if k not in gone]] != 0).all()
    sink = pr.tensors["features.3.weight"]
    rows = next(g for g in pr.groups if ("features.3.weight", (0,), "source") in g.tensors)
    live = sink[[r for r in range(16) if r not in rows.removed]]
    assert len(rows.removed) == 8 and (sink[rows.removed] == 0).all()
    assert (live[:, gone] == 0).all()
    assert (live[:, [k for k in range(8) if k not in gone]] != 0).all()
    keep = pr.masks["features.3.weight"]
    assert keep.shape == sink.shape
    assert int(keep.sum()) == 8 * 4 * 9  # kept rows × kept columns × taps


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True),
    lambda p: torch.optim.Adam(p, lr=1e-2),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, amsgrad=True),
], ids=["sgd-momentum", "adam", "adamw-amsgrad"])
def test_masked_entries_stay_zero_through_optimizer_steps(make):
    net = torch_nets.cnn()
    opt = make(net.parameters())
    x = torch_nets.images(8)
    y = torch.arange(8) % 10
    pr = Pruner(net, x[:2], ratio=0.4, optimizer=opt)
    for step in range(6):  # moments build up before the pruning step, then must be cleared
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        if step == 3:
            for name, keep in pr.masks.items():  # hook: gradients of masked entries are 0
                t = pr.tensors[name]
                if t.grad is not None:
                    assert (t.grad[~keep] == 0).all()
        opt.step()
        opt.zero_grad()
        if step == 2:
            pr.prune()
    assert pr.masks
    for name, keep in pr.masks.items():
        t = pr.tensors[name]
        assert (t[~keep] == 0).all(), name
        assert (t[keep] != 0).any(), name
        for v in opt.state.get(t, {}).values():
            if isinstance(v, torch.Tensor) and v.shape == t.shape:
                assert (v[~keep] == 0).all(), name


def test_apply_masks_without_attached_optimizer():
    net = torch_nets.TokenMLP()
    x = torch_nets.tokens()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(x).sum().backward()
    opt.step()  # momentum now nonzero everywhere
    pr = Pruner(net, x, ratio=0.5)
    pr.prune()
    pr.apply_masks(opt)
    for _ in range(3):
        net(x).sum().backward()
        opt.step()
        opt.zero_grad()
        pr.apply_masks(opt)
    for name, keep in pr.masks.items():
        assert (pr.tensors[name][~keep] == 0).all()


def test_traced_members_of_a_sliced_parameter():
    torch_nets.seeded(0)
    pr = Pruner(torch_nets.SlicedWeight(), torch_nets.tokens(), ratio=0.5)
    fused = [s for s in pr.mapping.slices if s.tensor == "fused"]
    assert sorted(s.region[0].tolist() for s in fused) == [list(range(16)), list(range(24, 40))]
    pr.prune()
    keep = pr.masks["fused"]
    removed_rows = sorted(np.flatnonzero(~keep.numpy().all(axis=1)).tolist())
    group = next(g for g in pr.groups if ("fused", (0,), "source") in g.tensors)
    # unit k is row k of the first slice and row 24+k of the second
    assert removed_rows == sorted(group.removed + [24 + k for k in group.removed])
    assert keep[16:24].all()  # rows no slice reads are never masked
    _, report = pr.export()
    assert report.exact_check["passed"]


def test_member_not_on_the_module_freezes_its_units():
    torch_nets.seeded(0)
    pr = Pruner(torch_nets.ForwardConstant(), torch_nets.tokens(), ratio=0.5)
    group = next(g for g in pr.groups if ("a.weight", (0,), "source") in g.tensors)
    assert len(group.frozen) == group.units
    assert any("is no parameter or buffer of the module" in r
               for rs in group.frozen.values() for r in rs)
    pr.prune()
    assert "a.weight" not in pr.masks and "b.weight" in pr.masks


def test_plan_is_keyed_by_parameter_names_and_replays_with_apply(tmp_path):
    net = torch_nets.cnn()
    pr = Pruner(net, torch_nets.images(), target_macs=0.5, criterion="l2")
    pr.prune()
    plan = pr.plan
    assert plan.settings["target"] == {"metric": "macs", "value": 0.5}
    assert plan.settings["torch"]["criterion"] == "l2"
    first = plan.groups[0]
    assert first["params"]["features.0.weight"] == [0]
    assert first["params"]["features.3.weight"] == [1]
    model_path, plan_path = tmp_path / "masked.onnx", tmp_path / "plan.json"
    onnx.save(pr.onnx_model(), str(model_path), save_as_external_data=True,
              location="masked.onnx.data")
    plan_path.write_text(plan.to_json())
    out = subprocess.run([sys.executable, "-m", "graphprune.cli", "apply", str(model_path),
                          str(plan_path), "-o", str(tmp_path / "pruned.onnx"), "--json"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["exact_check"]["passed"]
    dense, rep = pr.export()
    replayed = graphprune.load(tmp_path / "pruned.onnx")
    assert count_params(replayed) == count_params(dense) == rep.params_after
    assert count_params(dense) < count_params(pr.onnx_model())


def test_bad_options_are_one_line_input_errors():
    net = torch_nets.TokenMLP()
    x = torch_nets.tokens()
    with pytest.raises(InputError, match="unknown criterion"):
        Pruner(net, x, criterion="nope")
    with pytest.raises(InputError, match="not both"):
        Pruner(net, x, ratio=0.3, target_macs=0.5)
    with pytest.raises(InputError, match="unknown schedule"):
        Pruner(net, x, schedule="linear")
    with pytest.raises(InputError, match="example inputs"):
        Pruner(net, [])
    pr = Pruner(net, x, criterion="taylor")
    with pytest.raises(InputError, match="accumulate"):
        pr.prune()
