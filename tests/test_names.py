"""Readable, stable group names (graphprune.names) and plans that follow them across exports.

Groups are named after the torch module whose weight produces their units, the same from
both torch exporters: TorchScript folds a BatchNorm into its conv as `onnx::Conv_146` and
transposes a Linear's weight as `onnx::MatMul_327` (its node names carry the module path);
the dynamo exporter keeps parameter names but calls a transposed weight `val_56` (its nodes
carry the module scopes as metadata). A plan made on one export applies to the other, with
the same decisions; an export whose layers differ is refused in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import zoo

import graphprune
from graphprune import names
from graphprune.errors import InputError
from graphprune.plan import Plan
from models.export import export_spec

EXE = Path(sys.executable).parent / "graphprune"
EXPORTERS = ("torchscript", "dynamo")

RESNET = ["stem.0", "layers.0.0.conv1", "layers.0.1.conv1", "layers.1.0.downsample.0",
          "layers.1.0.conv1", "layers.1.1.conv1", "layers.2.0.downsample.0", "layers.2.0.conv1",
          "layers.2.1.conv1", "fc"]
BERT = ["embeddings.word_embeddings", "layers.0.query", "layers.0.attn_out",
        "layers.0.intermediate", "layers.0.output", "layers.1.query", "layers.1.attn_out",
        "layers.1.intermediate", "layers.1.output", "pooler"]


def _torch_module(name: str):
    import models

    spec = {**models.CNN_MODELS, **models.TRANSFORMER_MODELS}[name]
    return spec.build().eval(), spec


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """(model, exporter) → path: the repository's exports (names normalised at the interface
    only) and, for the CNN, torch's default export as users run it (external data)."""
    import torch

    base = tmp_path_factory.mktemp("names")
    out = {}
    for model in ("resnet_basic", "bert"):
        for exporter in EXPORTERS:
            out[model, exporter] = export_spec(model, base / f"{model}-{exporter}.onnx",
                                               exporter)
    net, spec = _torch_module("resnet_basic")
    raw = base / "raw" / "net.onnx"
    raw.parent.mkdir()
    with torch.no_grad():
        torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), str(raw), dynamo=True,
                          verbose=False)
    assert raw.with_name("net.onnx.data").exists()
    out["resnet_basic", "default"] = raw
    folded = base / "unfolded.onnx"  # TorchScript keeps each BatchNorm apart from its conv
    torch.onnx.export(net, (torch.randn(1, 3, 32, 32),), str(folded), dynamo=False,
                      do_constant_folding=False, input_names=["input"])
    out["resnet_basic", "unfolded"] = folded
    return out


@pytest.mark.parametrize("model, want", [("resnet_basic", RESNET), ("bert", BERT)])
def test_groups_named_by_module_on_both_exporters(exports, model, want):
    for exporter in (*EXPORTERS, "default") if model == "resnet_basic" else EXPORTERS:
        result = graphprune.analyze(exports[model, exporter])
        assert [g.name for g in result.groups] == want, exporter
        assert not any(g.name.startswith(("node_", "/", "onnx::")) for g in result.groups)


def test_name_sources():
    assert names.from_weight("features.0.weight") == "features.0"
    assert names.from_weight("encoder.layer.3.attention.self.query.bias") == \
        "encoder.layer.3.attention.self.query"
    assert names.from_weight("cls_token") == "cls_token"
    for made_up in ("onnx::Conv_146", "val_56", "_val_7", "123", "/stem/Constant_output_0", ""):
        assert names.from_weight(made_up) is None, made_up
    ts = names.from_torchscript
    assert ts("/layers/layers.1/layers.1.0/downsample/downsample.0/Conv") == \
        "layers.1.0.downsample.0"
    assert ts("/model/layers.0/self_attn/q_proj/MatMul") == "model.layers.0.self_attn.q_proj"
    assert ts("/Conv") is None and ts("node_Conv_28") is None
    node = onnx.helper.make_node("MatMul", ["x", "val_56"], ["y"], name="node_MatMul_55")
    node.metadata_props.add(key="pkg.torch.onnx.name_scopes",
                            value="['', 'layers.0', 'layers.0.query', 'linear']")
    assert names.layer_name(node, node.name, "val_56") == "layers.0.query"
    # a node the optimiser fused (BatchNorm into conv) carries the BatchNorm's scope
    node.metadata_props.add(key="pkg.onnxscript.rewriter.rule_name", value="FuseBatchNormIntoConv")
    assert names.layer_name(node, node.name, "val_56") == "node_MatMul_55"
    assert names.dedupe(["a", "b", "a", "a#2", "a"]) == ["a", "b", "a#3", "a#2", "a#4"]


def _run_pruned(pruned: onnx.ModelProto, feeds: list[np.ndarray]) -> list[np.ndarray]:
    sess = zoo.session(pruned)
    return sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), feeds, strict=True)})


def _feeds(model: str) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    if model == "bert":
        return [rng.integers(0, 50, (2, 7)).astype(np.int64), np.ones((2, 7), np.int64)]
    return [rng.standard_normal((1, 3, 32, 32)).astype(np.float32)]  # the default export's


@pytest.mark.parametrize("source, target", [
    (("resnet_basic", "torchscript"), ("resnet_basic", "dynamo")),
    (("resnet_basic", "dynamo"), ("resnet_basic", "torchscript")),
    (("resnet_basic", "torchscript"), ("resnet_basic", "default")),
    (("bert", "torchscript"), ("bert", "dynamo")),
    (("bert", "dynamo"), ("bert", "torchscript")),
])
def test_plan_applies_to_the_other_export(exports, source, target):
    """The same decisions: the two pruned models have the same parameters and compute the
    same function (their weights differ by the exporters' BatchNorm folding, ~3e-8)."""
    made, report = graphprune.compress(exports[source], criterion="l2", ratio=0.5)
    plan = Plan.from_dict(json.loads(report.plan.to_json()))
    applied, again = graphprune.apply_plan(exports[target], plan)
    assert again.exact_check["passed"], again.exact_check
    assert again.params_after == report.params_after < report.params_before
    assert [(d.name, d.units_after) for d in again.group_details] == \
        [(d.name, d.units_after) for d in report.group_details]
    feeds = _feeds(source[0])
    for a, b in zip(_run_pruned(made, feeds), _run_pruned(applied, feeds), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(a).max()))


def test_plan_refused_where_a_batchnorm_is_folded_on_one_side(exports, tmp_path):
    src = exports["resnet_basic", "torchscript"]
    _, report = graphprune.compress(src, ratio=0.5)
    (tmp_path / "plan.json").write_text(report.plan.to_json())
    with pytest.raises(InputError, match="not another export of this one: group 'stem.0'"):
        graphprune.apply_plan(exports["resnet_basic", "unfolded"], report.plan)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([str(EXE), "apply", str(exports["resnet_basic", "unfolded"]),
                        "plan.json", "-o", "out.onnx", "--quiet"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "BatchNorm" in r.stderr and "weights" in r.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_version_1_plans_still_apply(exports):
    """Plans written before groups had readable names named them by node; they apply to the
    model they were made for, with the same result."""
    src = exports["resnet_basic", "torchscript"]
    pruned, report = graphprune.compress(src, ratio=0.4)
    by_name = {g.name: g.node for g in graphprune.analyze(src).groups}
    old = report.plan.to_dict()
    old.update(version=1)
    del old["structure"]
    old["groups"] = [{"name": by_name[g["name"]], "units": g["units"], "removed": g["removed"]}
                     for g in old["groups"]]
    assert old["groups"][0]["name"] == "/stem/stem.0/Conv"
    again, _ = graphprune.apply_plan(src, old)
    assert again.SerializeToString() == pruned.SerializeToString()
    with pytest.raises(InputError, match="different model"):
        graphprune.apply_plan(exports["resnet_basic", "dynamo"], old)
