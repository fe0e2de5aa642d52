"""End to end over the model zoo: every reference model × both torch exporters.

Each pruned model must pass the tool's own exact check, and is then checked independently
here: onnx.checker with full shape inference, a run in onnxruntime (default optimisations, at
batch 1 and 3 through the dynamic batch axis, on inputs the tool never saw), and its interface
(names, opset, dynamic batch dims) compared with the original's.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import zoo
from onnx import numpy_helper
from zoo import MODEL_NAMES, exported

import graphprune

EXPORTERS = ("torchscript", "dynamo")
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
REGEN_ENV = "GRAPHPRUNE_REGEN_GOLDEN"


# -- helpers ------------------------------------------------------------------------------------
@functools.cache
def _at_ratio_04(name: str, exporter: str) -> graphprune.Report:
    """The report of compress(ratio=0.4); shared by the tests that only read reports."""
    _, report = graphprune.compress(str(exported(name, exporter)), 0.4)
    assert report.exact_check["passed"], report.exact_check
    return report


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {(o.domain or "ai.onnx"): o.version for o in model.opset_import}


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value
            for d in vi.type.tensor_type.shape.dim]


def assert_interface_kept(original: onnx.ModelProto, pruned: onnx.ModelProto) -> None:
    """Same input/output names, element types and shapes (dynamic dims by name), same opset."""
    assert [v.name for v in _graph_inputs(pruned)] == [v.name for v in _graph_inputs(original)]
    assert [v.name for v in pruned.graph.output] == [v.name for v in original.graph.output]
    assert _opsets(pruned) == _opsets(original)
    assert pruned.ir_version == original.ir_version
    for before, after in zip([*_graph_inputs(original), *original.graph.output],
                             [*_graph_inputs(pruned), *pruned.graph.output], strict=True):
        assert after.type.tensor_type.elem_type == before.type.tensor_type.elem_type, after.name
        assert _dims(after) == _dims(before), after.name
    # the exporters name the batch axis "batch" on the input and on every output
    for vi in [*_graph_inputs(pruned), *pruned.graph.output]:
        assert _dims(vi)[0] == "batch", (vi.name, _dims(vi))


def assert_runs_at_batches(name: str, original: onnx.ModelProto, pruned: onnx.ModelProto,
                           batches: tuple[int, ...] = (1, 3)) -> None:
    """The pruned model runs in onnxruntime with the original's output shapes at each batch."""
    for batch in batches:
        x = zoo.random_input(zoo.input_shape(name, batch))
        want = [o.shape for o in zoo.run(original, x)]
        got = zoo.run(pruned, x)
        assert [o.shape for o in got] == want, f"batch {batch}"
        assert all(o.shape[0] == batch for o in got), f"batch {batch}"
        assert all(np.isfinite(o).all() for o in got), f"batch {batch}: non-finite output"


FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
          onnx.TensorProto.BFLOAT16)


def _weights(model: onnx.ModelProto) -> int:
    """Floating-point elements of initializers and Constant nodes: counted independently of
    the report, which leaves out scalars and settings (Resize scales); pruning never touches
    those, so the weights *removed* must agree."""
    tensors = list(model.graph.initializer) + [
        a.t for n in model.graph.node if n.op_type == "Constant"
        for a in n.attribute if a.name == "value"]
    return sum(int(np.prod(t.dims)) for t in tensors if t.data_type in FLOATS)


def _group_by_name(report: graphprune.Report) -> dict[str, graphprune.report.GroupReport]:
    names = [g.name for g in report.group_details]
    assert len(set(names)) == len(names), "group names are not unique"
    return {g.name: g for g in report.group_details}


def _stem_conv(model: onnx.ModelProto) -> str:
    """Name of the first Conv that reads the graph input."""
    (inp,) = _graph_inputs(model)
    for node in model.graph.node:
        if node.op_type == "Conv" and inp.name in node.input:
            return node.name
    raise AssertionError("no Conv reads the graph input")


# -- every model × exporter × ratio ---------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.2, 0.5])
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_compress_zoo(name: str, exporter: str, ratio: float) -> None:
    path = exported(name, exporter)
    original = onnx.load(str(path))
    pruned, report = graphprune.compress(str(path), ratio)

    assert report.exact_check["passed"], report.exact_check
    # a dynamic batch axis means the tool proved the rewrite at two batch sizes
    assert len({r["batch"] for r in report.exact_check["runs"]}) == 2, report.exact_check
    assert report.params_after < report.params_before
    assert report.macs_after < report.macs_before
    assert report.groups["pruned"] > 0
    onnx.checker.check_model(pruned, full_check=True)
    assert_interface_kept(original, pruned)
    assert_runs_at_batches(name, original, pruned)
    assert report.params_before - report.params_after == _weights(original) - _weights(pruned)
    assert report.params_before <= _weights(original)
    # channel counts in computed shapes here are static: they become constants, no node added
    assert zoo.new_nodes(original, pruned) == {}
    assert len(pruned.graph.node) <= len(original.graph.node)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_fraction_at_ratio_04(name: str, exporter: str) -> None:
    """Uniform 40 % removal leaves 30–50 % of the parameters (a conv's weight shrinks on both
    axes: 0.6² = 0.36, plus frozen input/output channels)."""
    report = _at_ratio_04(name, exporter)
    ratio = report.params_after / report.params_before
    if name == "convnext":
        # LayerNorm over channels couples the whole residual stream: those units stay
        assert any("normalisation" in r for r in report.frozen_reasons), report.frozen_reasons
        assert ratio < 0.8, ratio
    else:
        assert 0.30 <= ratio <= 0.50, ratio


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_exporters_find_the_same_groups(name: str) -> None:
    """TorchScript and dynamo lower the model differently; the groups, and so the weights
    removed at a fixed ratio, must not depend on which exporter wrote the graph.

    Parameter counts leave scalars out (TorchScript writes every Clip's min/max as its own
    Constant where dynamo shares two initializers), so they must agree too.
    """
    ts, dyn = _at_ratio_04(name, "torchscript"), _at_ratio_04(name, "dynamo")

    def plan(r: graphprune.Report) -> list[tuple[int, int, int]]:
        return sorted((g.units_before, g.units_after, g.frozen) for g in r.group_details)

    assert plan(ts) == plan(dyn)
    assert ts.groups == dyn.groups
    assert (ts.macs_before, ts.macs_after) == (dyn.macs_before, dyn.macs_after)
    assert (ts.params_before, ts.params_after) == (dyn.params_before, dyn.params_after)


# -- older opsets ---------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("name", ["resnet_basic", "shufflenet_v2", "yolo_csp", "densenet"])
def test_torchscript_old_opsets(name: str, opset: int) -> None:
    path = exported(name, "torchscript", opset)
    original = onnx.load(str(path))
    assert _opsets(original)["ai.onnx"] == opset
    pruned, report = graphprune.compress(str(path), 0.4)
    assert report.exact_check["passed"], report.exact_check
    assert report.params_after < report.params_before
    onnx.checker.check_model(pruned, full_check=True)
    assert_interface_kept(original, pruned)
    assert_runs_at_batches(name, original, pruned)


# -- round_to ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_round_to_8(name: str) -> None:
    """Groups with at least 8 units keep a multiple of 8 (or all their units), the multiple
    nearest to the unrounded keep count, never fewer than 8.

    Groups with frozen units are exempt: selection removes only prunable units, so such a group
    may keep more than the rounded count (passes/selection.py caps the removal).
    """
    ratio = 0.3
    path = exported(name, "torchscript")
    pruned, report = graphprune.compress(str(path), ratio, round_to=8)
    assert report.exact_check["passed"], report.exact_check
    checked = 0
    for g in report.group_details:
        n, kept = g.units_before, g.units_after
        if n < 8 or g.frozen:
            continue
        checked += 1
        assert kept % 8 == 0 or kept == n, (g.name, n, kept)
        plain = n - int(np.floor(ratio * n + 1e-9))
        if 8 < kept < n:
            assert abs(kept - plain) <= 4, (g.name, n, kept, plain)
        assert kept >= min(n, 8), (g.name, n, kept)
    assert checked > 0
    assert report.params_after < report.params_before
    onnx.checker.check_model(pruned, full_check=True)


# -- protect ----------------------------------------------------------------------------------
@pytest.mark.parametrize("exporter", EXPORTERS)
def test_protect_keeps_stem_group(exporter: str) -> None:
    path = exported("resnet_basic", exporter)
    stem = _stem_conv(onnx.load(str(path)))
    touching = [g["name"] for g in graphprune.analyze(str(path)).to_dict()["groups"]
                if any(m.startswith(f"{stem}[") for m in g["members"])]
    assert touching, f"no group has a member in {stem}"

    _, free = graphprune.compress(str(path), 0.5)
    pruned, kept = graphprune.compress(str(path), 0.5, protect=f"^{re.escape(stem)}$")
    assert kept.exact_check["passed"], kept.exact_check
    free_groups, kept_groups = _group_by_name(free), _group_by_name(kept)
    for name in touching:
        assert free_groups[name].units_after < free_groups[name].units_before, name
        g = kept_groups[name]
        assert g.units_after == g.units_before, name
        assert any("protect" in r for r in g.reasons), g.reasons
    # everything else is pruned exactly as without --protect
    for name, g in free_groups.items():
        if name not in touching:
            assert kept_groups[name].units_after == g.units_after, name
    assert free.params_after < kept.params_after < kept.params_before
    # the stem conv still has all its filters
    stem_w = next(n for n in pruned.graph.node if n.name == stem).input[1]
    w = next(t for t in pruned.graph.initializer if t.name == stem_w)
    assert w.dims[0] == max(kept_groups[name].units_before for name in touching)


# -- golden plan ------------------------------------------------------------------------------
def _kept_filters(original: onnx.ModelProto, pruned: onnx.ModelProto) -> dict[str, list[int]]:
    """Per Conv, the original output channels the pruned model kept, found by matching bias
    values (the rewrite slices biases without arithmetic, and these biases have no repeats)."""
    def biases(model: onnx.ModelProto) -> dict[str, np.ndarray]:
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        return {n.name: inits[n.input[2]] for n in model.graph.node
                if n.op_type == "Conv" and len(n.input) > 2 and n.input[2] in inits}

    before, after = biases(original), biases(pruned)
    assert set(after) == set(before)
    kept = {}
    for name, b in before.items():
        assert len(np.unique(b)) == len(b), f"{name}: repeated bias values"
        idx = [int(np.flatnonzero(b == v)[0]) for v in after[name]]
        assert idx == sorted(idx), f"{name}: kept channels are reordered"
        kept[name] = idx
    return kept


def _dump(obj: object, depth: int = 0) -> str:
    """JSON with one line per key and each list on one line (diffs stay readable)."""
    if not isinstance(obj, dict):
        return json.dumps(obj)
    pad = " " * (depth + 1)
    body = ",\n".join(f"{pad}{json.dumps(k)}: {_dump(v, depth + 1)}" for k, v in obj.items())
    return "{\n" + body + "\n" + " " * depth + "}"


def test_golden_resnet_basic_l1_05() -> None:
    """resnet_basic, TorchScript, ratio 0.5, l1, seed 0: the plan equals the stored one.

    The plan is the number of groups, each group's units before/after, and which output
    channels every Conv keeps. A refactor that changes which units go shows up here as a diff.
    When a change of plan is intended, regenerate the file and commit it with the change::

        GRAPHPRUNE_REGEN_GOLDEN=1 python -m pytest tests/test_models_e2e.py -k golden
    """
    golden = GOLDEN_DIR / "resnet_basic_l1_0.5.json"
    path = exported("resnet_basic", "torchscript")
    pruned, report = graphprune.compress(str(path), 0.5, criterion="l1", seed=0)
    assert report.exact_check["passed"], report.exact_check
    plan = {
        "model": "resnet_basic", "exporter": "torchscript", "ratio": 0.5, "criterion": "l1",
        "groups": len(report.group_details),
        "group_names": [g.name for g in report.group_details],
        "units_before": [g.units_before for g in report.group_details],
        "units_after": [g.units_after for g in report.group_details],
        "params_after": report.params_after,
        "kept_filters": _kept_filters(onnx.load(str(path)), pruned),
    }
    if os.environ.get(REGEN_ENV):
        GOLDEN_DIR.mkdir(exist_ok=True)
        golden.write_text(_dump(plan) + "\n")
    assert golden.exists(), f"{golden} is missing; see this test's docstring to generate it"
    want = json.loads(golden.read_text())
    assert plan["groups"] == want["groups"]
    assert plan["units_after"] == want["units_after"]
    assert plan["units_before"] == want["units_before"]
    assert plan["params_after"] == want["params_after"]
    assert plan["kept_filters"] == want["kept_filters"]
    assert plan["group_names"] == want["group_names"]
