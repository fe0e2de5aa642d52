"""The op registry (graphprune.ops): one entry per op, everything the engine knows about an op
declared with its rule, and the layers it sits in.

Shape arithmetic is checked against onnxruntime: every op whose rule declares `shape_eval`
has a case here (a new one fails `test_every_shape_op_has_a_case` until it gets one).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import DEFAULT_OPSET, Builder, run
from onnx import TensorProto, helper

from graphprune import ops, shapeval
from graphprune.ir import Graph

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ["analysis.py", "shapeval.py", "ir.py", "metrics.py", "slots.py", "edits.py", "ops.py",
          "rules/context.py"]
"""Modules that must name no op: what they know of an op comes from its registry entry."""


def test_registry_has_no_duplicates() -> None:
    names = [e.name for e in ops.entries()]
    assert len(names) == len(set(names))
    for e in ops.entries():
        sinces = [s for s, _ in e.rules]
        assert len(sinces) == len(set(sinces)), e.name
    with pytest.raises(ValueError, match="duplicate rule for Relu"):
        ops.rule("Relu")(lambda ctx: None)
    with pytest.raises(ValueError, match="traits of Add declared twice"):
        ops.rule("Add", since=99, multi_input=True)(lambda ctx: None)
    assert ops.lookup("", "Add", 99) is not None and ops.lookup("", "Add", 99).__name__ != (
        "<lambda>"), "a refused registration left a rule behind"


def test_every_declared_op_has_a_rule() -> None:
    """Traits live on rules: an op the engine knows something about has a rule."""
    for e in ops.entries():
        assert e.rules, f"{e.name} has traits but no rule"


def test_engine_names_no_op() -> None:
    """No op name in the engine's modules (docstrings aside): traits are declared only with
    the rules, so adding an op is one rule plus one test."""
    known = {e.op_type for e in ops.entries()}
    for rel in ENGINE:
        tree = ast.parse((ROOT / "graphprune" / rel).read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        named = sorted({n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                        and isinstance(n.value, str) and n.value in known and id(n) not in docs})
        assert not named, f"graphprune/{rel} names ops {named}"


def test_registry_is_complete_on_import() -> None:
    """Importing any core module loads every rule (the package imports graphprune.rules)."""
    code = ("import graphprune.ir as ir, graphprune.ops as ops; "
            "print(ops.lookup('', 'Conv', 17) is not None, ops.traits('', 'Reshape').fold "
            "is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


# -- shape arithmetic agrees with onnxruntime ------------------------------------------------------
def _shape(b: Builder) -> str:
    return b.op("Shape", [b.input("X", [2, 3, 6, 7])])


def _entry(b: Builder, k: int) -> str:
    return b.op("Gather", [_shape(b), b.ints(k)], axis=0)


CASES = {
    "Shape": lambda b: _shape(b),
    "Gather": lambda b: b.op("Gather", [_shape(b), b.ints([3, 1, -1])], axis=0),
    "Slice": lambda b: b.op("Slice", [_shape(b), b.ints([1]), b.ints([-1])]),
    "Concat": lambda b: b.op("Concat", [_shape(b), b.ints([5, -1])], axis=0),
    "Unsqueeze": lambda b: b.op("Unsqueeze", [_entry(b, 2), b.ints([0])]),
    "Squeeze": lambda b: b.op("Squeeze", [b.op("Slice", [_shape(b), b.ints([2]), b.ints([3])]),
                                          b.ints([0])]),
    "Reshape": lambda b: b.op("Reshape", [_shape(b), b.ints([2, 2])]),
    "Transpose": lambda b: b.op("Transpose", [b.op("Reshape", [_shape(b), b.ints([2, 2])])],
                                perm=[1, 0]),
    "Identity": lambda b: b.op("Identity", [_shape(b)]),
    "Cast": lambda b: b.op("Cast", [_shape(b)], to=6),
    "Neg": lambda b: b.op("Neg", [_shape(b)]),
    "Add": lambda b: b.op("Add", [_shape(b), b.ints([1, -2, 3, 0])]),
    "Sub": lambda b: b.op("Sub", [_shape(b), b.ints(4)]),
    "Mul": lambda b: b.op("Mul", [_shape(b), b.ints([[1], [-2]])]),
    "Div": lambda b: b.op("Div", [b.op("Neg", [_shape(b)]), b.ints(4)]),  # truncates
    "Mod": lambda b: b.op("Mod", [_shape(b), b.ints([4, -4, 4, -4])]),
    "Max": lambda b: b.op("Max", [_shape(b), b.ints(5)]),
    "Min": lambda b: b.op("Min", [_shape(b), b.ints(5)]),
    "Equal": lambda b: b.op("Cast", [b.op("Equal", [_shape(b), b.ints(6)])], to=7),
    "Where": lambda b: b.op("Where", [b.op("Equal", [_shape(b), b.ints(6)]), b.ints(-1),
                                      _shape(b)]),
    "Range": lambda b: b.op("Range", [b.ints(1), _entry(b, 2), b.ints(2)]),
    "ConstantOfShape": lambda b: b.op("ConstantOfShape", [b.op("Slice", [
        _shape(b), b.ints([0]), b.ints([2])])],
        value=helper.make_tensor("v", TensorProto.INT64, [1], [9])),
}


def test_every_shape_op_has_a_case() -> None:
    declared = {e.op_type for e in ops.entries() if e.traits.shape_eval is not None}
    assert declared == set(CASES)


@pytest.mark.parametrize("op", sorted(CASES))
def test_shape_arithmetic_matches_onnxruntime(op: str) -> None:
    b = Builder()
    out = CASES[op](b)
    graph = helper.make_graph(b.nodes, op, [helper.make_tensor_value_info(
        "X", TensorProto.FLOAT, [2, 3, 6, 7])], [helper.make_tensor_value_info(
            out, TensorProto.INT32 if op == "Cast" else TensorProto.INT64, None)],
        initializer=b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", DEFAULT_OPSET)])
    graph = Graph(model)
    known = shapeval.known_value(graph, out)
    want = run(model, {"X": np.zeros([2, 3, 6, 7], np.float32)})[0]
    assert known is not None, f"{op}: nothing known"
    assert np.array_equal(np.array(shapeval.to_ints(known)).reshape(known.shape), want), op
