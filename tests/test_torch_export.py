"""From the masked module to deployment: `export()` (the rewrite and exact check of
`graphprune apply`, plus a check that the masked module is the masked original of its own
export) and `shrink()` (a sliced torch copy, checked against the masked module, or a refusal
with the reason)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch_nets

import graphprune
from graphprune.errors import ValidationError
from graphprune.metrics import count_params
from graphprune.torch import CannotShrink, Pruner


def _ort(model: onnx.ModelProto | str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)


def _torch(net: torch.nn.Module, *args: torch.Tensor) -> np.ndarray:
    was = net.training
    net.eval()
    with torch.no_grad():
        out = net(*args).numpy()
    net.train(was)
    return out


def test_export_equals_the_masked_module_in_onnxruntime(tmp_path):
    net = torch_nets.cnn()
    x = torch_nets.images(4)
    pr = Pruner(net, x, target_macs=0.5, criterion="l1")
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    pr.attach(opt)
    pr.prune()
    for k in range(3):  # fine-tune a little: BatchNorm statistics move, masks stay
        xb = torch_nets.images(8, seed=30 + k)
        torch.nn.functional.cross_entropy(net(xb), torch.arange(8) % 10).backward()
        opt.step()
        opt.zero_grad()
    path = tmp_path / "cnn.onnx"
    dense, report = pr.export(str(path), external=True)
    assert report.exact_check["passed"]
    assert any(n.startswith("masked module = masked original") for n in report.notes)
    assert (tmp_path / "cnn.onnx.data").exists()
    assert report.macs_ratio == pytest.approx(0.5, abs=0.02)
    assert count_params(dense) == report.params_after < report.params_before
    want = _torch(net, x)
    got = _ort(str(path), {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    assert net.training  # export leaves the module's mode alone


def test_export_with_a_dynamic_batch():
    net = torch_nets.TokenMLP()
    x = torch_nets.tokens(3)
    batch = torch.export.Dim("batch")
    pr = Pruner(net, x, ratio=0.5, dynamic_shapes=({0: batch},))
    pr.prune()
    dense, report = pr.export()
    assert sorted({r["batch"] for r in report.exact_check["runs"]}) == [1, 2]
    x5 = torch_nets.tokens(5, seed=9)
    np.testing.assert_allclose(_ort(dense, {"x": x5.numpy()})[0], _torch(net, x5), rtol=1e-4,
                               atol=1e-5)


def test_a_mask_one_position_off_fails_the_check():
    net = torch_nets.cnn()
    pr = Pruner(net, torch_nets.images(2), ratio=0.5)
    pr.prune()
    group = next(g for g in pr.groups if ("features.0.weight", (0,), "source") in g.tensors)
    good = pr.masks
    original = torch_nets.cnn().state_dict()
    net.load_state_dict(original)  # unmasked again; a mapping bug that puts every member of
    for name, axes, _ in group.tensors:  # the group one position off then masks the wrong
        pr._keep[name] = torch.roll(good[name], 1, dims=axes)  # noqa: SLF001 - channels
    with pytest.raises(ValidationError, match="masked module does not match"):
        pr.export()
    pr._keep.update(good)  # noqa: SLF001
    net.load_state_dict(original)
    pr.apply_masks()
    assert pr.export()[1].exact_check["passed"]


def test_shrink_slices_layers_and_matches_the_masked_module():
    net = torch_nets.cnn()
    x = torch_nets.images(4)
    pr = Pruner(net, x, ratio=0.5)
    pr.prune()
    small = pr.shrink()
    assert small.features[0].out_channels == 4 and small.features[3].in_channels == 4
    assert small.features[1].num_features == 4 and small.head.in_features == 8
    stats = sum(b.numel() for n, b in small.named_buffers() if "running" in n)
    assert sum(p.numel() for p in small.parameters()) + stats == pr.export()[1].params_after
    np.testing.assert_allclose(_torch(small, x), _torch(net, x), rtol=1e-4, atol=1e-6)
    assert net.features[0].out_channels == 8  # the masked module is unchanged
    small(torch_nets.images(2)).sum().backward()  # and the copy trains


def test_shrink_refuses_what_it_cannot_slice_safely():
    torch_nets.seeded(0)
    net = torch_nets.LiteralView()
    pr = Pruner(net, torch_nets.images(2), ratio=0.5)
    pr.prune()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(CannotShrink, match="fails on the example inputs"):
        pr.shrink()
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    assert pr.masks and pr.export()[1].exact_check["passed"]
    grouped = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, groups=2), torch.nn.ReLU(),
                                  torch.nn.Conv2d(8, 4, 1))
    pg = Pruner(grouped, torch.randn(2, 4, 6, 6), ratio=0.5)
    pg.prune()
    with pytest.raises(CannotShrink, match="grouped convolution"):
        pg.shrink()


def test_exported_plan_applies_to_the_masked_module_file(tmp_path):
    net = torch_nets.TokenMLP()
    pr = Pruner(net, torch_nets.tokens(), ratio=0.5, criterion="fpgm")
    pr.prune()
    masked = tmp_path / "masked.onnx"
    graphprune.save_atomic(pr.onnx_model(), masked)
    dense, report = graphprune.apply_plan(str(masked), pr.plan)
    assert report.exact_check["passed"]
    assert count_params(dense) == count_params(pr.export()[0])


@pytest.mark.parametrize("name", ["resnet_basic", "mobilenet_v2"])
def test_zoo_cnns_export_and_shrink(name):
    """Residual couplings, bias-free convolutions (the exporter's zero-bias constants are
    sliced in ONNX, nothing to mask), depthwise convolutions."""
    import models

    spec = models.get(name)
    net = spec.build()
    x = torch.as_tensor(spec.example_inputs(seed=0)[0])
    pr = Pruner(net, x, ratio=0.4)
    pr.prune()
    dense, report = pr.export()
    assert report.exact_check["passed"] and report.params_after < 0.6 * report.params_before
    small = pr.shrink()
    state = {k: v for k, v in small.state_dict().items() if "num_batches" not in k}
    in_onnx = {t.name: int(np.prod(t.dims)) for t in dense.graph.initializer if t.name in state}
    assert in_onnx == {k: v.numel() for k, v in state.items()}  # same tensors, same sizes
    got = _ort(dense, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, _torch(small, x), rtol=1e-4, atol=1e-4 * np.abs(got).max())
