"""The same command on the same model gives the same result in every process.

Python salts the hash of strings per process (PYTHONHASHSEED), so iterating a set or a dict
built from a set of names gives another order in another process. Nothing graphprune decides
may depend on it. Each test runs the real command line in fresh processes under several hash
seeds and requires byte-identical output: the pruned model (and its external data), the plan,
the JSON report with its clock readings (`seconds`, `timings`) removed, and `analyze --json`.

The models are torch's default dynamo exports, written as torch writes them (`net.onnx` plus
`net.onnx.data`): a CNN, and a Hugging Face BERT whose two inputs get separately named batch
dims (`input_ids[s72, s53]`, `attention_mask[s43, s53]`): which of them the validation took
for the batch used to follow a set's order, and the model failed under some seeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import helpers
import onnx
import pytest
import torch
from graphprune.passes import validation
from zoo import ROOT  # noqa: F401 - puts the repository root (models/) on sys.path

import models

SEEDS = ("0", "1", "2", "3")
"""Hash seeds, one process each (they give both orders of the BERT's two batch symbols, which
`test_seeds_cover_both_orders` checks)."""
CLOCKS = ("seconds", "timings")
EXE = Path(sys.executable).parent / "graphprune"


def _graphprune(*args: str | Path, seed: str, cwd: Path) -> subprocess.CompletedProcess:
    """The console script (or `python -m graphprune.cli` without one) under hash seed `seed`."""
    head = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "graphprune.cli"]
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*head, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def _export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], axes: list[list[int]],
            path: Path) -> Path:
    """torch's default export: dynamo, the given axes of each input dynamic with names torch
    chooses (Dim.AUTO), the weights in `path.data`."""
    auto = torch.export.Dim.AUTO
    shapes = tuple({a: auto for a in dims} for dims in axes)
    torch.onnx.export(module.eval(), args, str(path), dynamo=True, dynamic_shapes=shapes)
    assert path.with_name(path.name + ".data").is_file(), "torch wrote no external data"
    return path


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HF BertModel (hidden 64, 2 layers, 4 heads): input_ids and attention_mask, both
    [batch, sequence], every axis dynamic."""
    pytest.importorskip("transformers", reason="the HF BERT case needs `transformers`")
    spec = models.get("hf_bert")
    path = tmp_path_factory.mktemp("bert") / "bert.onnx"
    return _export(spec.build(), spec.example_inputs(seed=0), [[0, 1], [0, 1]], path)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference ResNet (basic blocks), dynamic batch."""
    spec = models.get("resnet_basic")
    path = tmp_path_factory.mktemp("cnn") / "resnet.onnx"
    return _export(spec.build(), spec.example_inputs(seed=0), [[0]], path)


def _leads(path: Path) -> list[str]:
    model = onnx.load(str(path), load_external_data=False)
    return [dims[0] for _, _, dims in validation.input_specs(model)]


def test_bert_export_names_batch_dims_apart(bert: Path) -> None:
    """The case of the issue: the inputs' batch dims have different names, their sequence
    dims one name; the validation takes the first input's (input_ids') for the batch."""
    model = onnx.load(str(bert), load_external_data=False)
    specs = validation.input_specs(model)
    assert [name for name, _, _ in specs] == ["input_ids", "attention_mask"]
    (_, _, ids), (_, _, mask) = specs
    assert all(isinstance(d, str) for d in ids + mask), specs
    assert ids[0] != mask[0] and ids[1] == mask[1], specs
    assert validation.batch_symbol(specs) == ids[0]
    assert validation.batch_symbol(specs[::-1]) == mask[0]  # the first input's, not a set's


def test_seeds_cover_both_orders(bert: Path) -> None:
    """The seeds iterate the set of the two batch symbols in both orders (else this file
    would not see the failure it guards against)."""
    code = "import sys; print(next(iter(set(sys.argv[1:]))))"
    firsts = {subprocess.run([sys.executable, "-c", code, *_leads(bert)], capture_output=True,
                             text=True, env={**os.environ, "PYTHONHASHSEED": s},
                             check=True).stdout.strip() for s in SEEDS}
    assert firsts == set(_leads(bert))


def _compress_everywhere(model: Path, tmp_path: Path, *extra: str) -> list[dict[str, bytes]]:
    """`compress` with a plan and a report, once per hash seed, each in its own folder (the
    same file names: the model names its data file); the files each run wrote."""
    results = []
    for seed in SEEDS:
        where = tmp_path / f"seed{seed}"
        where.mkdir()
        r = _graphprune("compress", model, "-o", "out.onnx", "--ratio", "0.4", "--plan-out",
                        "plan.json", "--report", "report.json", "--quiet", *extra,
                        seed=seed, cwd=where)
        assert r.returncode == 0, f"PYTHONHASHSEED={seed}: {r.stderr}"
        files = {p.name: p.read_bytes() for p in sorted(where.iterdir())}
        report = json.loads(files.pop("report.json"))
        assert report["exact_check"]["passed"]
        assert set(CLOCKS) <= set(report)
        for key in CLOCKS:
            del report[key]
        files["report.json"] = json.dumps(report, indent=2).encode()  # key order as written
        results.append(files)
    return results


def _assert_same(results: list[dict[str, bytes]]) -> None:
    first = results[0]
    for seed, other in zip(SEEDS[1:], results[1:], strict=True):
        assert sorted(other) == sorted(first), f"PYTHONHASHSEED={seed} wrote other files"
        for name, data in first.items():
            assert other[name] == data, (f"{name} differs between PYTHONHASHSEED={SEEDS[0]} "
                                         f"and {seed}")


def _analyze_everywhere(model: Path, tmp_path: Path, *extra: str) -> None:
    outputs = []
    for seed in SEEDS:
        r = _graphprune("analyze", model, "--json", *extra, seed=seed, cwd=tmp_path)
        assert r.returncode == 0, f"PYTHONHASHSEED={seed}: {r.stderr}"
        outputs.append(r.stdout)
    assert json.loads(outputs[0])["groups"]
    assert all(out == outputs[0] for out in outputs[1:])


def test_compress_bert_same_in_every_process(bert: Path, tmp_path: Path) -> None:
    results = _compress_everywhere(bert, tmp_path)
    _assert_same(results)
    assert {"out.onnx", "out.onnx.data", "plan.json"} <= set(results[0])
    plan = json.loads(results[0]["plan.json"])
    assert plan["groups"], "nothing was pruned"
    report = json.loads(results[0]["report.json"])
    assert report["params_after"] < report["params_before"]
    assert {r["batch"] for r in report["exact_check"]["runs"]} == {1, 2}


def test_compress_cnn_same_in_every_process(cnn: Path, tmp_path: Path) -> None:
    results = _compress_everywhere(cnn, tmp_path)
    _assert_same(results)
    assert {"out.onnx", "out.onnx.data", "plan.json"} <= set(results[0])
    assert json.loads(results[0]["plan.json"])["groups"], "nothing was pruned"


def test_compress_with_refit_same_in_every_process(cnn: Path, tmp_path: Path) -> None:
    """Recovery (a sequential refit: statistics sessions, float64 sums, eigendecompositions,
    cross-validated ridges) writes the same model in every process."""
    import numpy as np

    (name, _, dims), = validation.input_specs(onnx.load(str(cnn), load_external_data=False))
    calib = tmp_path / "calib.npz"
    np.savez(calib, **{name: np.random.default_rng(0).standard_normal(
        (8, *dims[1:])).astype(np.float32)})
    results = _compress_everywhere(cnn, tmp_path, "--calib", calib, "--calib-samples", "8")
    _assert_same(results)
    report = json.loads(results[0]["report.json"])
    assert report["recovery"]["method"] == "refit" and report["recovery"]["sinks_refit"]


def test_compensated_sensitivity_same_in_every_process(cnn: Path, tmp_path: Path) -> None:
    """The sensitivity scan with compensated trials (the sinks' input means, shifts added to
    their outputs in the probe) chooses the same units in every process."""
    import numpy as np

    (name, _, dims), = validation.input_specs(onnx.load(str(cnn), load_external_data=False))
    calib = tmp_path / "calib.npz"
    np.savez(calib, **{name: np.random.default_rng(0).standard_normal(
        (8, *dims[1:])).astype(np.float32)})
    results = _compress_everywhere(cnn, tmp_path, "--calib", calib, "--calib-samples", "8",
                                   "--allocation", "sensitivity", "--recover", "bias")
    _assert_same(results)
    report = json.loads(results[0]["report.json"])
    assert any("trials compensated" in n for n in report["notes"]), report["notes"]
    assert json.loads(results[0]["plan.json"])["settings"]["sensitivity_trials"] == \
        "compensated"


def test_report_counts_reasons_in_one_order(tmp_path: Path) -> None:
    """Units frozen for several reasons (conv A's channels reach three graph outputs): the
    report's `frozen_reasons` used to be counted in a set's order. `apply` of the plan
    writes compress's file again, in every process."""
    b = helpers.Builder()
    a = b.conv(b.input("X", [1, 3, 8, 8]), 3, 8, name="A")
    outs = [b.op(op, [a], name=op) for op in ("Relu", "Sigmoid", "Tanh")]
    d = b.conv(b.conv(a, 8, 8, name="C"), 8, 4, name="D")
    path = tmp_path / "three_outputs.onnx"
    onnx.save(b.build([*outs, d]), str(path))
    results = _compress_everywhere(path, tmp_path)
    _assert_same(results)
    reasons = json.loads(results[0]["report.json"])["frozen_reasons"]
    assert set(reasons) == {f"reaches graph output '{o}'" for o in [*outs, d]}, reasons
    assert json.loads(results[0]["plan.json"])["groups"][0]["name"] == "C_W"
    for seed in SEEDS:  # the plan replayed gives the same file, in every process too
        where = tmp_path / f"seed{seed}"
        r = _graphprune("apply", path, "plan.json", "-o", "applied.onnx", "--quiet", seed=seed,
                        cwd=where)
        assert r.returncode == 0, f"PYTHONHASHSEED={seed}: {r.stderr}"
        assert (where / "applied.onnx").read_bytes() == results[0]["out.onnx"]


def test_shapes_same_in_every_process(tmp_path: Path) -> None:
    """Dims ONNX's inference leaves unknown go to onnxruntime's symbolic inference, which
    merges the differently named dims that Adds broadcast together (`a`, `b`, `c` here);
    which name survived followed a set's order. It is the first input's now."""
    dims = {"A": "a", "B": "b", "C": "c"}
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["A", "B"], ["AB"]),
         onnx.helper.make_node("Add", ["AB", "C"], ["Y"])], "adds",
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [d, 4])
         for n, d in dims.items()],
        [onnx.helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)])
    path = tmp_path / "adds.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]),
              str(path))
    code = ("import json, sys, onnx; from graphprune.ir import Graph; "
            "print(json.dumps(Graph(onnx.load(sys.argv[1])).shapes))")
    outputs = [subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                              text=True, env={**os.environ, "PYTHONHASHSEED": s},
                              check=True).stdout for s in SEEDS]
    assert all(out == outputs[0] for out in outputs[1:])
    shapes = json.loads(outputs[0])
    assert shapes["AB"] == shapes["Y"] == ["a", 4], shapes


def test_analyze_same_in_every_process(bert: Path, cnn: Path, tmp_path: Path) -> None:
    _analyze_everywhere(bert, tmp_path)
    _analyze_everywhere(cnn, tmp_path)


def test_blocks_same_in_every_process(bert: Path, tmp_path: Path) -> None:
    """Residual blocks (found over sets of nodes, joined by networkx's dominators, scored by
    influence) and width units in one run: the same files in every process."""
    (tmp_path / "compress").mkdir()
    results = _compress_everywhere(bert, tmp_path / "compress", "--scope", "heads,ffn,blocks")
    _assert_same(results)
    plan = json.loads(results[0]["plan.json"])
    assert plan["blocks"] and plan["groups"]
    _analyze_everywhere(bert, tmp_path, "--scope", "blocks")
