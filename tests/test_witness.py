"""An exact check is never vacuous (passes/witness.py), and integer outputs compare exactly.

PP-OCRv4's detector, 40% of its channels masked, gives a sigmoid map of exactly 0.0 on the
check's inputs: zeros were compared with zeros, and a rewrite with one convolution's output
channels reversed passed. Here the smallest such model: a bias of -200 before the sigmoid.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from graphprune.passes import rewrite, validation, witness
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune import cli
from graphprune.errors import ValidationError

RNG = np.random.default_rng(0)


def _w(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def saturating(chain: int = 0, floor: float = 0.0, mute: bool = False) -> onnx.ModelProto:
    """x → Conv A (8 channels) → Relu [→ + floor → Relu] [→ `chain` × Abs] [→ × 0] → Conv B
    (1 channel, bias -200) → Sigmoid → y: exactly 0.0 everywhere (the sigmoid underflows).
    With a floor of -1e6 every tensor after A is constant too; `mute`d, B's output is."""
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="A", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu")]
    last = "r"
    if floor:
        nodes += [helper.make_node("Add", ["r", "floor"], ["f"], name="floor"),
                  helper.make_node("Relu", ["f"], ["f0"], name="relu0")]
        last = "f0"
    for k in range(chain):
        nodes.append(helper.make_node("Abs", [last], [f"abs{k}"], name=f"abs{k}"))
        last = f"abs{k}"
    if mute:
        nodes.append(helper.make_node("Mul", [last, "mute"], ["muted"], name="mute"))
        last = "muted"
    nodes += [helper.make_node("Conv", [last, "wb", "bb"], ["b"], name="B"),
              helper.make_node("Sigmoid", ["b"], ["y"], name="sigmoid")]
    inits = [_w("wa", 8, 3, 3, 3), _w("ba", 8), _w("wb", 1, 8, 1, 1),
             numpy_helper.from_array(np.array([-200.0], np.float32), "bb"),
             numpy_helper.from_array(np.array(floor, np.float32), "floor"),
             numpy_helper.from_array(np.array(0.0, np.float32), "mute")]
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _reverse_a(monkeypatch) -> list:
    """The pruned model with conv A's kept output channels in reverse order (B's input
    channels left as they are): a wrong-order rewrite."""
    real, hits = rewrite.prune_model, []

    def wrong(model, an, removed, spill=None):
        pruned = real(model, an, removed, spill)
        for t in pruned.graph.initializer:
            if t.name in ("wa", "ba"):
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t)[::-1].copy(), t.name))
                hits.append(t.name)
        return pruned

    monkeypatch.setattr(rewrite, "prune_model", wrong)
    return hits


def test_a_constant_output_is_backed_by_the_tensor_before_it():
    _, report = graphprune.compress(saturating(), 0.5)
    check = report.exact_check
    assert check["passed"]
    assert check["vacuous"] == [{"output": "y", "why": "it is 0 at all 64 positions",
                                 "compared": ["b"]}]
    [out_run, b_run] = check["runs"]
    assert out_run["output"] == "y" and out_run["scale"] == 0.0
    assert b_run["output"] == "b" and b_run["for"] == "y" and b_run["passed"]
    assert 190 < b_run["scale"] < 210  # the logits, far below zero but varying
    assert ("output 'y' proves nothing on these inputs (it is 0 at all 64 positions): "
            "compared 'b' before it") in report.render()


def test_a_wrong_order_rewrite_of_a_constant_output_fails(monkeypatch):
    hits = _reverse_a(monkeypatch)
    with pytest.raises(ValidationError) as info:
        graphprune.compress(saturating(), 0.5)
    assert hits == ["wa", "ba"]
    text = str(info.value)
    assert text.startswith("exact check failed: tensor 'b' (compared for output 'y')"), text
    err = float(text.split("differs from the masked original by ")[1].split(" ")[0])
    assert err > 1e-2


def test_without_the_witness_the_wrong_rewrite_would_pass(monkeypatch):
    """The same wrong rewrite, the output alone: it passes (what the witness is for)."""
    _reverse_a(monkeypatch)
    monkeypatch.setattr(witness, "prove", lambda check, *a, **k: check)
    _, report = graphprune.compress(saturating(), 0.5)
    assert report.exact_check["passed"] and report.exact_check["max_abs_err"] == 0.0


def test_sliced_tensors_are_compared_on_their_kept_positions(monkeypatch):
    """B's output is constant too (its input is muted); the nearest varying tensor carries
    the removed channels: compared on the kept ones (the masked original keeps their values
    there). A wrong order of A's channels shows in it."""
    _, report = graphprune.compress(saturating(chain=2, mute=True), 0.5)
    check = report.exact_check
    # abs1: 8 channels, 4 removed, compared on the 4 kept
    assert check["passed"] and check["vacuous"][0]["compared"] == ["abs1"]
    [run] = [r for r in check["runs"] if r.get("for")]
    assert run["output"] == "abs1" and run["for"] == "y" and run["scale"] > 0
    _reverse_a(monkeypatch)
    with pytest.raises(ValidationError, match="tensor 'abs1' .compared for output 'y'."):
        graphprune.compress(saturating(chain=2, mute=True), 0.5)


def test_nothing_informative_is_not_proven(tmp_path, capsys):
    model = saturating(chain=9, floor=-1e6)  # every tensor within 8 ops of y is constant
    with pytest.raises(ValidationError, match="exact check not proven: output 'y' proves "
                                              "nothing on the check's inputs"):
        graphprune.compress(model, 0.5)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    code = cli.main(["compress", str(path), "-o", str(tmp_path / "p.onnx"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "--inputs" in err
    assert not (tmp_path / "p.onnx").exists()


def test_an_output_no_rewritten_weight_reaches_needs_no_witness(tmp_path):
    """A second output computed from the input alone is constant too, but the rewrite cannot
    change it: nothing to back."""
    model = saturating()
    model.graph.node.append(helper.make_node("Mul", ["x", "zero"], ["z"], name="zero_out"))
    model.graph.initializer.append(numpy_helper.from_array(np.float32(0), "zero"))
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT,
                                                            [1, 3, 8, 8]))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert cli.main(["compress", str(path), "-o", str(tmp_path / "p.onnx"), "--quiet",
                     "--report", str(tmp_path / "r.json")]) == 0
    check = json.loads((tmp_path / "r.json").read_text())["exact_check"]
    assert [v["output"] for v in check["vacuous"]] == ["y"]


# -- what proves nothing ------------------------------------------------------------------------
@pytest.mark.parametrize("values, why", [
    ([np.zeros((2, 3))], "it is 0 at all 6 positions"),
    ([np.ones(4, np.float32), np.ones(8, np.float32)], "it is 1 at all 12 positions"),
    ([np.r_[np.zeros(999), 0.5]], "it is 0 at 99.90% of 1000 positions (saturated)"),
    ([np.int64([3, 3, 3])], "it is 3 at all 3 positions"),
    ([np.zeros(0)], "it is empty"),
    ([np.r_[np.zeros(98), 0.5, 0.5]], None),  # 98%: still informative
    ([np.r_[np.zeros(90), 1.0]], None),  # under 100 positions: never "saturated"
    ([np.float32([1.0]), np.float32([2.0])], None),  # one value per run, two runs
])
def test_uninformative(values, why):
    assert validation.uninformative(values) == why


# -- integers and booleans compare exactly ---------------------------------------------------
@pytest.mark.parametrize("ref, cand, passed", [
    (np.int64([30000]), np.int64([30003]), False),  # rtol 1e-4 of 30000 would allow 3
    (np.int64([2 ** 60]), np.int64([2 ** 60 + 1]), False),  # equal as float64
    (np.int32([7, 8]), np.int32([7, 8]), True),
    (np.array([True, False]), np.array([True, True]), False),
    (np.uint8([255]), np.uint8([255]), True),
])
def test_integer_and_boolean_outputs_compare_exactly(ref, cand, passed):
    [diff] = validation.compare([ref], [cand], ["ids"])
    assert diff.passed is passed and diff.static is passed
    if not passed:
        assert diff.max_abs_err >= 1.0
    # no noise floor excuses an index either
    [diff] = validation.compare([ref], [cand], ["ids"], noise=[1e9])
    assert diff.passed is passed
