"""KV-cache decoders (past/present key-values as graph inputs/outputs) × both torch exporters.

By default the heads stay, and the reasons name the graph input and output. With
`allow_io_change` the past inputs and present outputs shrink along their (static) head axis:
the exact check passes, and here, independently of graphprune, the pruned model is run in
onnxruntime at two batch sizes and two past lengths on the kept heads' past, and compared
with the torch model whose removed heads' o_proj columns are zeroed (the masked original)
on the kept positions, at the exact check's tolerances.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import zoo  # noqa: F401 - puts the repository root (models/) on sys.path
from graphprune.passes import validation

import graphprune
import models
from graphprune.errors import ValidationError
from models.export import export_spec

EXPORTERS = ("torchscript", "dynamo")
KV_HEADS = {"kv_llama": 2, "kv_mha": 4}
HEADS, HEAD_DIM, HIDDEN, LAYERS = 4, 16, 64, 2
PAST = [f"past.{i}.{kv}" for i in range(LAYERS) for kv in ("key", "value")]
PRESENT = [f"present.{i}.{kv}" for i in range(LAYERS) for kv in ("key", "value")]


@functools.cache
def _dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="graphprune-kv-"))
    import atexit

    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def exported(name: str, exporter: str) -> Path:
    return export_spec(name, _dir() / f"{name}-{exporter}.onnx", exporter)


@functools.cache
def pruned_io(name: str, exporter: str, scope: str = "heads,ffn"):
    return graphprune.compress(exported(name, exporter), ratio=0.5, scope=scope,
                               allow_io_change=True)


def _heads(groups) -> list:
    return [g for g in groups if g.kind == "heads"]


def _declared(model: onnx.ModelProto, name: str) -> list:
    for vi in (*model.graph.input, *model.graph.output):
        if vi.name == name:
            return [d.dim_value if d.HasField("dim_value") else d.dim_param
                    for d in vi.type.tensor_type.shape.dim]
    raise KeyError(name)


# -- default: heads frozen, reason shown ----------------------------------------------------------
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", sorted(KV_HEADS))
def test_default_keeps_heads_and_says_why(name: str, exporter: str) -> None:
    path = exported(name, exporter)
    heads = _heads(graphprune.analyze(path).groups)
    assert len(heads) == LAYERS and all(g.units and not g.prunable for g in heads)
    for layer, g in enumerate(heads):
        why = " ".join(r for rs in g.frozen.values() for r in rs)
        assert f"reaches graph output 'present.{layer}.key'" in why, why
        assert f"graph input 'past.{layer}.key'" in why, why
    pruned, report = graphprune.compress(path, ratio=0.5)
    assert report.exact_check["passed"] and report.io_changes == []
    assert all(d.units_after == d.units_before for d in report.group_details
               if d.kind == "heads")
    assert any("reaches graph output 'present." in r for r in report.frozen_reasons)
    original = onnx.load(path)
    for n in [*PAST, *PRESENT]:
        assert _declared(pruned, n) == _declared(original, n)


# -- allow_io_change: heads pruned, interface shrinks, proven --------------------------------
def _removed(report, kind: str) -> list[list[int]]:
    """Per layer (groups come in graph order), the removed units of `kind`: a heads unit is
    a KV head with its query heads, an ffn unit a SwiGLU gate/up neuron (the lm_head's
    vocabulary, an ffn group after the layers, stays: it reaches the logits)."""
    groups = {g["name"]: g for g in report.plan.groups}
    out = [sorted(groups[d.name]["removed"]) if d.name in groups else []
           for d in report.group_details if d.kind == kind]
    assert len(out) >= LAYERS and not any(out[LAYERS:])
    return out[:LAYERS]


def _masked_torch(name: str, heads: list[list[int]], ffn: list[list[int]]):
    """The torch model with the removed units' sink weights zeroed (the masked original):
    o_proj columns of the removed heads, down_proj columns of the removed neurons."""
    import torch

    model = models.get(name).build()
    rep = HEADS // KV_HEADS[name]
    with torch.no_grad():
        for layer, kv, neurons in zip(model.layers, heads, ffn, strict=True):
            for h in kv:
                for q in range(h * rep, (h + 1) * rep):
                    layer.self_attn.o_proj.weight[:, q * HEAD_DIM:(q + 1) * HEAD_DIM] = 0
            layer.down_proj.weight[:, neurons] = 0
    return model


def _feeds(name: str, batch: int, seq: int, past: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {"input_ids": rng.integers(0, 100, (batch, seq)).astype(np.int64)}
    for n in PAST:
        feeds[n] = rng.standard_normal((batch, KV_HEADS[name], past, HEAD_DIM)).astype(np.float32)
    return feeds


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", sorted(KV_HEADS))
def test_allow_io_change_prunes_heads_exactly(name: str, exporter: str) -> None:
    import torch

    original = onnx.load(exported(name, exporter))
    pruned, report = pruned_io(name, exporter)
    assert report.exact_check["passed"]
    kinds = report.units_by_kind()
    assert kinds["heads"] == (LAYERS * KV_HEADS[name], LAYERS * KV_HEADS[name] // 2)
    removed = _removed(report, "heads")
    assert all(d.units_before == KV_HEADS[name] for d in report.group_details
               if d.kind == "heads")
    kept = [[h for h in range(KV_HEADS[name]) if h not in r] for r in removed]
    # the report lists every past input and present output, head axis halved
    changes = {(c["kind"], c["name"]): c for c in report.io_changes}
    assert set(changes) == {("input", n) for n in PAST} | {("output", n) for n in PRESENT}
    for (_, n), c in changes.items():
        assert c["before"] == _declared(original, n)
        assert c["after"] == _declared(pruned, n)
        assert c["before"][1] == KV_HEADS[name] and c["after"][1] == KV_HEADS[name] // 2
        assert c["after"][0] == c["before"][0] == "batch"  # dynamic dims stay dynamic
        assert isinstance(c["after"][2], str) and c["after"][3] == HEAD_DIM
    assert _declared(pruned, "logits") == _declared(original, "logits")

    reference = _masked_torch(name, removed, _removed(report, "ffn"))
    sess = ort.InferenceSession(pruned.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    assert names == ["logits", *PRESENT]
    for batch in (1, 3):
        for past in (4, 9):
            seq = 5
            feeds = _feeds(name, batch, seq, past, seed=batch * 100 + past)
            with torch.no_grad():
                want = [t.numpy() for t in reference(
                    torch.from_numpy(feeds["input_ids"]),
                    *(torch.from_numpy(feeds[n]) for n in PAST))]
            small = dict(feeds)
            for layer in range(LAYERS):
                for kv in ("key", "value"):
                    n = f"past.{layer}.{kv}"
                    small[n] = np.ascontiguousarray(feeds[n][:, kept[layer]])
            got = sess.run(None, small)
            # output shapes as reported (symbols resolved at these sizes)
            assert got[0].shape == (batch, seq, 100)
            for g in got[1:]:
                assert g.shape == (batch, KV_HEADS[name] // 2, past + seq, HEAD_DIM)
            # kept positions equal the masked original's, at the exact check's tolerances
            want = [want[0], *(w[:, kept[int(n.split(".")[1])]]
                               for n, w in zip(PRESENT, want[1:], strict=True))]
            for d in validation.compare(want, got, names):
                assert d.passed, (d.name, d.max_abs_err, d.scale, batch, past)
            # the past does matter: feeding the removed heads' past breaks the kept outputs
            wrong = dict(small)
            for layer in range(LAYERS):
                for kv in ("key", "value"):
                    n = f"past.{layer}.{kv}"
                    wrong[n] = np.ascontiguousarray(feeds[n][:, removed[layer]])
            bad = validation.compare(want, sess.run(None, wrong), names)
            assert not all(d.passed for d in bad)


def test_gqa_removes_kv_head_with_its_query_heads() -> None:
    """kv_llama: 4 query heads share 2 KV heads; a heads unit is a KV head and its 2 query
    heads: q/o lose 2 heads' rows/columns, k/v one head's, per layer."""
    for exporter in EXPORTERS:
        _, report = pruned_io("kv_llama", exporter, scope="heads")
        assert report.exact_check["passed"]
        per_layer = 2 * HIDDEN * 2 * HEAD_DIM + 2 * HIDDEN * HEAD_DIM  # q+o: 2 heads; k+v: 1
        assert report.params_before - report.params_after == LAYERS * per_layer
        assert [c["after"][1] for c in report.io_changes] == [1] * 8


def test_exact_check_sees_wrongly_fed_past(monkeypatch) -> None:
    """Sanity of the proof: feeding the pruned model other heads' past fails the check."""
    real = validation.shrink_feeds

    def swapped(feeds, io):
        io = {n: {a: m[::-1] for a, m in axes.items()} for n, axes in (io or {}).items()}
        return real(feeds, io)

    monkeypatch.setattr(validation, "shrink_feeds", swapped)
    with pytest.raises(ValidationError, match="exact check failed"):
        graphprune.compress(exported("kv_mha", "torchscript"), ratio=0.5, scope="heads",
                            criterion="random", allow_io_change=True)


def test_allow_io_change_leaves_stateless_models_alone(tmp_path: Path) -> None:
    """Without state (no input that leaves as an output) nothing differs: the same groups
    and the same pruned model, byte for byte (a CNN, and GPT-2 whose logits stay)."""
    cnn = zoo.copy_example(tmp_path)
    gpt2 = export_spec("gpt2", tmp_path / "gpt2.onnx", "torchscript")
    for path in (cnn, gpt2):
        a, b = graphprune.analyze(path), graphprune.analyze(path, allow_io_change=True)
        ad, bd = a.to_dict(), b.to_dict()
        assert ad.pop("preview")["allow_io_change"] != bd.pop("preview")["allow_io_change"]
        assert ad == bd
        pa, _ = graphprune.compress(path, ratio=0.4)
        pb, rb = graphprune.compress(path, ratio=0.4, allow_io_change=True)
        assert pa.SerializeToString() == pb.SerializeToString() and rb.io_changes == []


def test_plan_replays_io_change(tmp_path: Path) -> None:
    pruned, report = pruned_io("kv_llama", "dynamo")
    assert report.plan.settings["allow_io_change"] is True
    again, rep2 = graphprune.apply_plan(exported("kv_llama", "dynamo"), report.plan.to_dict())
    assert again.SerializeToString() == pruned.SerializeToString()
    assert rep2.io_changes == report.io_changes


def test_cli_allow_io_change(tmp_path: Path) -> None:
    src = tmp_path / "kv.onnx"
    shutil.copy(exported("kv_mha", "torchscript"), src)
    digest = zoo.sha256(src)
    out = tmp_path / "kv.pruned.onnx"

    def cli(*args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "graphprune.cli", *map(str, args)],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)

    r = cli("analyze", src)
    assert r.returncode == 0 and "graph input 'past.0.key'" in r.stdout, r.stdout
    r = cli("analyze", src, "--allow-io-change", "--json")
    heads = [g for g in json.loads(r.stdout)["groups"] if g["kind"] == "heads"]
    assert r.returncode == 0 and all(g["prunable"] == 4 for g in heads)
    r = cli("compress", src, "-o", out, "--ratio", "0.5", "--allow-io-change")
    assert r.returncode == 0, r.stderr
    assert "interface changed (--allow-io-change)" in r.stdout
    assert "past.0.key" in r.stdout and "[batch, 4, past, 16] -> [batch, 2, past, 16]" in r.stdout
    assert "exact check vs masked original: passed" in r.stdout
    assert _declared(onnx.load(out), "present.1.value")[1] == 2
    r = cli("compress", src, "-o", out, "--ratio", "0.5", "--allow-io-change", "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 0 and len(report["io_changes"]) == 8
    assert {c["name"] for c in report["io_changes"]} == {*PAST, *PRESENT}
    r = cli("compress", src, "-o", out, "--ratio", "0.5")  # default: interface untouched
    assert r.returncode == 0 and "interface changed" not in r.stdout
    assert _declared(onnx.load(out), "present.1.value")[1] == 4
    r = cli("compress", src, "-o", out, "--allow-io-change", "--ratio", "1.5")
    assert r.returncode == 2 and r.stderr.startswith("graphprune: error:")
    assert len(r.stderr.strip().splitlines()) == 1
    assert zoo.sha256(src) == digest


def test_state_with_static_batch_axis() -> None:
    """A recurrent state [2, 8] (static batch) added to a linear layer's output and returned:
    its 8 channels are the layer's units and shrink with them (the batch axis stays); the
    plain input X does not change. Checked against numpy with the removed rows of B zeroed."""
    import helpers

    b = helpers.Builder()
    x, s = b.input("X", [2, 4]), b.input("S", [2, 8])
    z = b.op("Add", [b.op("MatMul", [x, b.weight([4, 8], name="WA")], name="A"), s], name="Z")
    out = b.op("MatMul", [z, b.weight([8, 3], name="WB")], name="B")
    model = b.build([out, z])
    default = graphprune.analyze(model).groups
    assert [len(g.prunable) for g in default] == [0, 0]
    pruned, report = graphprune.compress(model, ratio=0.5, allow_io_change=True)
    assert report.exact_check["passed"]
    assert [(c["name"], c["before"], c["after"]) for c in report.io_changes] == [
        ("S", [2, 8], [2, 4]), ("Z_out", [2, 8], [2, 4])]
    gone = next(g["removed"] for g in report.plan.groups if g["name"] == "WA")
    keep = [c for c in range(8) if c not in gone]
    wa, wb = (onnx.numpy_helper.to_array(t) for t in model.graph.initializer)
    rng = np.random.default_rng(3)
    xv, sv = (rng.standard_normal(shape).astype(np.float32) for shape in ([2, 4], [2, 8]))
    zv = xv @ wa + sv
    masked_wb = wb.copy()
    masked_wb[gone] = 0
    got = ort.InferenceSession(pruned.SerializeToString()).run(
        None, {"X": xv, "S": np.ascontiguousarray(sv[:, keep])})
    for d in validation.compare([zv @ masked_wb, zv[:, keep]], got, ["B_out", "Z_out"]):
        assert d.passed, d


def test_static_kv_cache_stays_frozen(tmp_path: Path) -> None:
    """A KV cache exported with every dim static (past length included): the past's
    sequence axis has no unit layout the concat can follow, so heads stay (with a reason)
    and the interface is unchanged. (Limit: only dynamic past lengths shrink today.)"""
    path = export_spec("kv_mha", tmp_path / "static.onnx", "torchscript", dynamic_batch=False)
    pruned, report = graphprune.compress(path, ratio=0.5, allow_io_change=True)
    assert report.exact_check["passed"] and report.io_changes == []
    heads = [d for d in report.group_details if d.kind == "heads"]
    assert heads and all(d.units_after == d.units_before and d.reasons for d in heads)
