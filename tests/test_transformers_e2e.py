"""End to end over the transformer models of models/ × both torch exporters.

Heads and FFN neurons are pruned with the exact check passing; GQA models lose whole KV
groups; the pruned models run at two batch sizes and two sequence lengths; hidden-size
pruning (`scope` with "hidden") reports its fidelity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import zoo
from zoo import new_nodes  # (importing zoo puts the repository root, models/, on sys.path)

import graphprune
import models

NAMES = list(models.TRANSFORMER_MODELS)
KV_CACHE = {"kv_llama", "kv_mha"}
"""Past/present key-values are graph inputs/outputs: heads stay unless allow_io_change (see
test_kv_cache.py); FFN neurons are pruned."""
GQA = {"llama": 2, "hf_llama": 2, "kv_llama": 2}
"""Key/value heads per layer: GQA units are KV groups. With 2 groups a ratio of 0.4 removes
none (selection never removes more than asked), so these run at 0.5."""
OUTPUT_IS_HIDDEN = {"bert", "hf_bert", "mha_encoder", "transformer_encoder"}
"""Models whose graph output is the hidden state itself: hidden units reach it and stay."""


def exported(name: str, exporter: str) -> Path:
    """The session's shared export (tests/zoo.py; test_blocks_zoo.py reads the same files)."""
    return zoo.exported(name, exporter)


def feeds(model: onnx.ModelProto, batch: int, seq: int, seed: int = 7) -> dict[str, np.ndarray]:
    """Inputs at (batch, seq): token ids below 50 (every vocab here has 100), masks of ones."""
    rng = np.random.default_rng(seed)
    out = {}
    for vi in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else None
                for d in vi.type.tensor_type.shape.dim]
        shape = [batch if k == 0 and d is None else seq if d is None else d
                 for k, d in enumerate(dims)]
        if vi.type.tensor_type.elem_type == onnx.TensorProto.INT64:
            high = 1 if "mask" in vi.name or "type" in vi.name else 50
            out[vi.name] = (np.ones(shape, np.int64) if "mask" in vi.name
                            else rng.integers(0, high, shape).astype(np.int64))
        else:
            out[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def _kinds(report) -> dict[str, tuple[int, int]]:
    kinds: dict[str, list[int]] = {}
    for d in report.group_details:
        k = kinds.setdefault(d.kind, [0, 0])
        k[0] += d.units_before
        k[1] += d.units_after
    return {k: (a, b) for k, (a, b) in kinds.items()}


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("name", NAMES)
def test_heads_and_ffn(name: str, exporter: str) -> None:
    path = exported(name, exporter)
    original = onnx.load(path)
    pruned, report = graphprune.compress(original, ratio=0.5 if name in GQA else 0.4)
    assert report.exact_check["passed"]
    assert report.params_after < report.params_before
    kinds = _kinds(report)
    assert kinds["ffn"][1] < kinds["ffn"][0]
    before, after = kinds["heads"]  # nn.MultiheadAttention: heads folded into the batch too
    if name in KV_CACHE:
        assert after == before and report.io_changes == []
    else:
        assert after < before, f"no head pruned: {kinds}"
    if name in GQA and name not in KV_CACHE:
        heads = [d for d in report.group_details if d.kind == "heads"]
        assert all(d.units_before == GQA[name] for d in heads)
    # the pruned model runs at two batch sizes and two sequence lengths
    sess = ort.InferenceSession(pruned.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
    seqs = (7, 11) if "sequence" in str(original.graph.input) else (None,)
    for batch in (1, 3):
        for seq in seqs:
            f = feeds(original, batch, seq or 0)
            got, want = sess.run(None, f), ref.run(None, f)
            assert [g.shape for g in got] == [w.shape for w in want]
            assert all(np.isfinite(g).all() for g in got)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("name", ["llama", "bert", "gpt2", "hf_llama", "hf_bert", "hf_gpt2"])
def test_ffn_pruning_adds_no_node(name: str, exporter: str) -> None:
    """FFN neurons only: no head goes, no attention reshape changes, and an FFN size read
    from a shape (a view's computed target) is edited where it is static. The pruned graph
    gains no node; it may lose nodes that went dead (shape arithmetic turned constant)."""
    original = onnx.load(exported(name, exporter))
    pruned, report = graphprune.compress(original, ratio=0.5, scope="ffn")
    assert report.exact_check["passed"]
    assert _kinds(report)["ffn"][1] < _kinds(report)["ffn"][0]
    assert new_nodes(original, pruned) == {}
    assert len(pruned.graph.node) <= len(original.graph.node)


@pytest.mark.parametrize("name", ["llama", "bert", "gpt2", "hf_llama", "hf_bert", "hf_gpt2"])
def test_static_shape_edits_add_no_node(name: str) -> None:
    """Heads and FFN pruned in dynamo exports, whose computed shapes' changed entries sit in
    static pieces: they become constants, no Where is added."""
    original = onnx.load(exported(name, "dynamo"))
    pruned, report = graphprune.compress(original, ratio=0.5)
    assert report.exact_check["passed"]
    assert _kinds(report)["heads"][1] < _kinds(report)["heads"][0]
    assert new_nodes(original, pruned) == {}


@pytest.mark.parametrize("name", ["gpt2", "llama", "vit"])
def test_hidden_scope_reports_fidelity(name: str) -> None:
    pruned, report = graphprune.compress(exported(name, "torchscript"), ratio=0.25,
                                         scope="heads,ffn,hidden")
    assert report.exact_check["passed"]  # the exact part of the plan
    kinds = _kinds(report)
    assert kinds["hidden"][1] < kinds["hidden"][0]
    assert report.fidelity, "hidden units removed but no fidelity reported"
    for stats in report.fidelity.values():
        assert 0.0 < stats["cosine"] <= 1.0 + 1e-9 and stats["rel_l2"] > 0.0
    onnx.checker.check_model(pruned, full_check=True)


@pytest.mark.parametrize("name", sorted(OUTPUT_IS_HIDDEN & set(NAMES)))
def test_hidden_state_outputs_keep_hidden_units(name: str) -> None:
    _, report = graphprune.compress(exported(name, "torchscript"), ratio=0.4,
                                    scope="heads,ffn,hidden")
    assert report.exact_check["passed"]
    hidden = [d for d in report.group_details if d.kind == "hidden"]
    assert hidden and all(d.units_after == d.units_before for d in hidden)
    assert any("graph output" in r for d in hidden for r in d.reasons)


def test_exporters_agree_on_units() -> None:
    """Both exporters' graphs of one model must give the same unit counts."""
    for name in ("gpt2", "llama", "vit", "mha_encoder", "transformer_encoder"):
        reports = [graphprune.compress(exported(name, e), ratio=0.4)[1]
                   for e in ("torchscript", "dynamo")]
        assert _kinds(reports[0]) == _kinds(reports[1]), name
        assert reports[0].params_after == reports[1].params_after, name


def test_wide_attention_heads_found(tmp_path: Path) -> None:
    """Regression: weight-free copies used for shape inference once emptied biases wider than
    256; onnxruntime's symbolic inference then failed on an HF BERT and every head froze."""
    import torch
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=100, hidden_size=384, num_hidden_layers=1,
                     num_attention_heads=6, intermediate_size=512, attn_implementation="eager")

    class Bert(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(cfg)

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=ids, attention_mask=mask).last_hidden_state

    torch.manual_seed(0)
    path = tmp_path / "wide.onnx"
    ids, mask = torch.randint(0, 100, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    torch.onnx.export(Bert().eval(), (ids, mask), str(path), dynamo=False,
                      input_names=["input_ids", "attention_mask"], output_names=["h"],
                      dynamic_axes={"input_ids": {0: "b", 1: "s"},
                                    "attention_mask": {0: "b", 1: "s"}})
    heads = [g for g in graphprune.analyze(path).groups if g.kind == "heads"]
    assert len(heads) == 1 and len(heads[0].prunable) == 6
    _, report = graphprune.compress(path, ratio=0.5)
    assert report.exact_check["passed"] and _kinds(report)["heads"] == (6, 3)
