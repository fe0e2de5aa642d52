"""Hugging Face models built from configs (models/transformers/hf.py; nothing downloaded):
BERT, GPT-2 (Conv1D layers, a tied LM head) and LLaMA with grouped-query attention are
pruned with a gradient criterion, fine-tuned with AdamW, exported through the torch path and
proven exact; the removed heads are counted in every projection they touch."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn
from zoo import ROOT  # noqa: F401 - puts the repository root (models/) on sys.path

from graphprune.torch import Pruner

pytest.importorskip("transformers", reason="the Hugging Face tests need transformers")
from models.transformers.hf import hf_bert, hf_gpt2, hf_llama  # noqa: E402

BUILDERS = {"bert": hf_bert, "gpt2": hf_gpt2, "llama": hf_llama}


def _inputs(seed: int, batch: int = 2, seq: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 100, (batch, seq), generator=g), torch.ones(batch, seq,
                                                                       dtype=torch.int64)


def _loss(name: str, out, ids: torch.Tensor) -> torch.Tensor:
    if name == "bert":
        return out[0].pow(2).mean() + out[1].pow(2).mean()
    return nn.functional.cross_entropy(out[:, :-1].reshape(-1, out.shape[-1]),
                                       ids[:, 1:].reshape(-1))


def _heads(pr: Pruner, weight: str):
    return next(g for g in pr.groups if g.kind == "heads"
                and any(t == weight for t, _, _ in g.tensors))


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_prune_finetune_export(name):
    torch.manual_seed(0)
    net = BUILDERS[name]()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    example = _inputs(0)
    pr = Pruner(net, example, ratio=0.5, criterion="taylor", optimizer=opt)
    net.train()
    for step in range(4):
        ids, mask = _inputs(10 + step)
        _loss(name, net(ids, mask), ids).backward()
        pr.accumulate()
        opt.step()
        opt.zero_grad()
        if step == 1:
            assert pr.step()
    for tensor, keep in pr.masks.items():
        assert (pr.tensors[tensor][~keep] == 0).all(), tensor
    dense, report = pr.export()
    assert report.exact_check["passed"]
    assert report.params_after < 0.8 * report.params_before
    kinds = {g.kind for g in pr.groups if g.removed}
    assert kinds == {"ffn", "heads"}
    sess = ort.InferenceSession(dense.SerializeToString(), providers=["CPUExecutionProvider"])
    ids, mask = example
    got = sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), (ids, mask),
                                                             strict=True)})
    net.eval()
    with torch.no_grad():
        want = net(ids, mask)
    want = list(want) if isinstance(want, tuple) else [want]
    for g, w in zip(got, want, strict=True):
        w = w.numpy()
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * np.abs(w).max())


def test_llama_gqa_removes_a_kv_head_with_its_query_heads():
    torch.manual_seed(0)
    net = hf_llama()
    pr = Pruner(net, _inputs(0), ratio=0.5, criterion="l2", scope="heads")
    pr.prune()
    layer = "model.model.layers.0.self_attn"
    group = _heads(pr, f"{layer}.k_proj.weight")
    assert group.units == 2 and len(group.removed) == 1
    masks = pr.masks
    rows = {p: int((~masks[f"{layer}.{p}.weight"].all(dim=1)).sum())
            for p in ("q_proj", "k_proj", "v_proj")}
    assert rows == {"q_proj": 32, "k_proj": 16, "v_proj": 16}  # 2 query heads share the KV head
    assert int((~masks[f"{layer}.o_proj.weight"].all(dim=0)).sum()) == 32
    assert not any("mlp" in t for t in masks)  # scope: heads only
    assert pr.export()[1].exact_check["passed"]


def test_gpt2_conv1d_and_tied_embedding():
    torch.manual_seed(0)
    net = hf_gpt2()
    pr = Pruner(net, _inputs(0), ratio=0.5, criterion="l1")
    pr.prune()
    attn = "model.transformer.h.0.attn"
    group = _heads(pr, f"{attn}.c_attn.weight")
    assert (f"{attn}.c_attn.weight", (1,), "source") in group.tensors  # Conv1D is [in, out]
    assert (f"{attn}.c_proj.weight", (0,), "sink") in group.tensors
    assert len(group.removed) == 2
    keep = pr.masks[f"{attn}.c_attn.weight"]
    assert int((~keep.all(dim=0)).sum()) == 3 * 2 * 16  # q, k and v of two heads
    tied = [n for n in pr.tensors if n.endswith("wte.weight") or n.endswith("lm_head.weight")]
    assert len(tied) == 1  # one tensor under one name; its units (vocabulary) stay
    assert pr.export()[1].exact_check["passed"]


def test_llama_hidden_scope_is_inexact_with_fidelity():
    torch.manual_seed(0)
    net = hf_llama()
    pr = Pruner(net, _inputs(0), ratio=0.25, scope="hidden")
    pr.prune()
    hidden = [g for g in pr.groups if g.kind == "hidden" and g.removed]
    assert len(hidden) == 1 and len(hidden[0].removed) == 16  # 64 residual units at 0.25
    norms = [t for t, _, _ in hidden[0].tensors if "norm" in t]
    assert norms and all(int((~pr.masks[t]).sum()) == 16 for t in norms)  # RMSNorm weights
    dense, report = pr.export()
    assert report.exact_check["passed"] and report.fidelity
