"""Residual blocks over the model zoo × both torch exporters, and torch's default export.

The expected blocks are counted from the torch modules themselves, not from the graph:
an identity-shortcut block (ResNet `downsample is None`, RegNet `proj is None`,
MobileNet/EfficientNet `use_res`, YOLO `add`, every ConvNeXt block) is one removable
block, a projection shortcut one join (no block); a transformer layer is two blocks
(attention and FFN), of which a KV-cache decoder's attention is frozen (its present
key/values are graph outputs). Half the blocks are then removed: the exact check passes,
and here, independently, the pruned model equals the original with those branches
multiplied by zero (onnxruntime with its optimisations, other inputs and batch size), and
loses exactly the blocks' nodes and parameters.
"""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import zoo
from graphprune.passes import rewrite

import graphprune
import models
from graphprune.metrics import count_params

EXPORTERS = ("torchscript", "dynamo")
CNN_RESIDUAL = ["resnet_basic", "resnet_bottleneck", "mobilenet_v2", "mobilenet_v3",
                "efficientnet", "convnext", "regnet", "resnext", "yolo_csp"]
NON_RESIDUAL = ["vgg", "densenet", "inception", "shufflenet_v2", "unet"]
TRANSFORMERS = list(models.TRANSFORMER_MODELS)
KV_CACHE = {"kv_llama", "kv_mha"}
LAYER_CLASSES = ("Layer", "Block")
"""Transformer layers are the modules whose class name ends so (BertLayer, GPT2Block,
LlamaDecoderLayer, TransformerEncoderLayer, ViTBlock, …; LayerNorm ends otherwise)."""


@functools.cache
def expected(name: str) -> tuple[int, int, int]:
    """(blocks, removable blocks, joins), counted from the torch module."""
    module = models.get(name).build()
    if name in models.TRANSFORMER_MODELS:
        layers = sum(1 for m in module.modules() if type(m).__name__.endswith(LAYER_CLASSES))
        return 2 * layers, layers if name in KV_CACHE else 2 * layers, 0
    blocks = joins = 0
    for m in module.modules():
        if type(m).__name__ == "ConvNeXtBlock":
            blocks += 1
        for flag in ("use_res", "add"):
            if isinstance(getattr(m, flag, None), bool):
                blocks += getattr(m, flag)
        for shortcut in ("downsample", "proj"):
            if shortcut in m.__dict__ or shortcut in m._modules:
                projection = getattr(m, shortcut) is not None
                blocks += not projection
                joins += projection
    return blocks, blocks, joins


def _feeds(model: onnx.ModelProto, batch: int = 3, seq: int = 5) -> dict[str, np.ndarray]:
    """Inputs the tool never saw: token ids below 50, masks of ones, normal floats."""
    rng = np.random.default_rng(11)
    out = {}
    for vi in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else None
                for d in vi.type.tensor_type.shape.dim]
        shape = [batch if k == 0 and d is None else seq if d is None else d
                 for k, d in enumerate(dims)]
        if vi.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            out[vi.name] = (np.ones(shape, np.int64) if "mask" in vi.name
                            else rng.integers(0, 50, shape).astype(np.int64))
        else:
            out[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return out


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", CNN_RESIDUAL + TRANSFORMERS)
def test_blocks_found_and_removed(name: str, exporter: str) -> None:
    path = str(zoo.exported(name, exporter))
    model = onnx.load(path)
    an = graphprune.analyze(path, scope="blocks").analysis
    found = (len(an.blocks), sum(1 for b in an.blocks if not b.reasons), len(an.joins))
    assert found == expected(name)
    if name in KV_CACHE:
        assert {r for b in an.blocks for r in b.reasons} == {
            f"'present.{i}.key' computed in the branch is a graph output" for i in range(2)}

    pruned, report = graphprune.compress(path, scope="blocks", ratio=0.5, calib_samples=4)
    assert report.exact_check["passed"]
    gone = [b for b in report.blocks["list"] if b["removed"]]
    assert len(gone) == min(math.floor(0.5 * found[0]), found[1])
    if found[0] == 1:  # resnext: a group keeps one unit, and a block is one
        return
    # what went is what the blocks took together: each alone, and what only they read
    # (TorchScript's HF GPT-2 shares one c_attn bias and the causal mask between layers)
    b = report.blocks
    assert count_params(pruned) == count_params(model) - b["params_removed"]
    assert len(pruned.graph.node) == len(model.graph.node) - b["nodes_removed"]
    assert b["params_removed"] >= sum(x["params"] for x in gone)
    assert b["nodes_removed"] >= sum(x["nodes"] + 1 for x in gone)
    assert report.macs_before - report.macs_after == b["macs_removed"]

    removed = np.zeros(len(an.roots), dtype=bool)
    removed[[an.blocks[b["index"]].unit for b in gone]] = True
    masked = rewrite.masked_model(model, an, removed)
    feeds = _feeds(model)
    got, want = zoo.session(pruned).run(None, feeds), zoo.session(masked).run(None, feeds)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(w).max()))


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", NON_RESIDUAL)
def test_non_residual_models_have_no_blocks(name: str, exporter: str) -> None:
    result = graphprune.analyze(str(zoo.exported(name, exporter)), scope="blocks")
    assert expected(name) == (0, 0, 0)
    assert result.analysis.blocks == [] and "blocks" in result.to_dict()
    assert result.to_dict()["blocks"] == []


def _default_export(folder: Path) -> Path:
    """The tiny LLaMA as users export it: `torch.onnx.export(..., dynamo=True)`, names as
    torch chose them, weights in `net.onnx.data`."""
    import torch

    spec = models.get("llama")
    path = folder / "net.onnx"
    torch.onnx.export(spec.build(), spec.example_inputs(seed=0), str(path), dynamo=True,
                      dynamic_shapes=({0: "batch", 1: "sequence"},), external_data=True)
    return path


def test_default_export_with_external_data_through_the_cli(tmp_path: Path) -> None:
    path = _default_export(tmp_path)
    assert (tmp_path / "net.onnx.data").exists()
    out, plan = tmp_path / "out.onnx", tmp_path / "plan.json"
    cmd = [sys.executable, "-m", "graphprune.cli", "compress", str(path), "-o", str(out),
           "--scope", "blocks,ffn", "--ratio", "0.5", "--calib-samples", "4", "--plan-out",
           str(plan), "--quiet"]
    subprocess.run(cmd, check=True)
    assert (tmp_path / "out.onnx.data").exists()
    listing = subprocess.run([sys.executable, "-m", "graphprune.cli", "analyze", str(path),
                              "--scope", "blocks"], check=True, capture_output=True,
                             text=True).stdout
    assert "residual blocks: 4 found, 4 removable" in listing
    assert "layers.0: input_layernorm, self_attn" in listing  # dynamo's module scopes
    again = tmp_path / "again.onnx"
    subprocess.run([sys.executable, "-m", "graphprune.cli", "apply", str(path), str(plan),
                    "-o", str(again), "--quiet"], check=True)
    model, pruned = onnx.load(str(path)), onnx.load(str(out))
    assert (tmp_path / "again.onnx.data").read_bytes() == (tmp_path / "out.onnx.data").read_bytes()
    assert onnx.load(str(again)).graph.node == pruned.graph.node
    feeds = _feeds(model)
    assert zoo.session(pruned).run(None, feeds)[0].shape == zoo.session(model).run(
        None, feeds)[0].shape
