"""Fuzzed models never end in a traceback.

Valid models are mutated — as bytes (bit flips, random bytes, truncation, splices, deletions,
insertions) and as protobuf (dropped nodes, rewired inputs, changed attributes, dims, op
types, opsets, dtypes) — and sent through `graphprune.load`, `analyze`, `compress` and the
command line. Every outcome must be one of: a parse/validation refusal (`InputError`, exit 2
with one `graphprune: error:` line, nothing written), or — when the mutation still makes a
usable model — a clean result whose exact check passed. An exact-check failure (exit 1) or an
internal error (exit 3) on any of these inputs is a bug.

Seeded: the same mutations every run. GRAPHPRUNE_FUZZ_CASES scales the count (README).
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import Builder
from onnx import TensorProto, helper

import graphprune
from graphprune import cli

CASES = int(os.environ.get("GRAPHPRUNE_FUZZ_CASES", "40"))
"""Mutations per (base model, seed chunk); 4 chunks × 3 models × 2 kinds in CI."""
EXAMPLE = Path(__file__).resolve().parent.parent / "models" / "examples" / "resnet_small.onnx"


# -- base models ------------------------------------------------------------------------------
def cnn() -> onnx.ModelProto:
    """Residual + concat + flatten → Gemm: the common couplings in 12 nodes."""
    b = Builder()
    x = b.input("X", [1, 3, 5, 6])
    a = b.op("Relu", [b.conv(x, 3, 6, name="A")])
    r = b.op("Add", [a, b.conv(b.op("Relu", [b.conv(a, 6, 4, name="R1")]), 4, 6, name="R2")])
    cat = b.op("Concat", [r, b.conv(r, 6, 2, k=1, name="SIDE")], axis=1)
    b.gemm(b.op("Flatten", [cat], axis=1), 8 * 5 * 6, 3, name="FC")
    return b.build("FC_out")


def with_if() -> onnx.ModelProto:
    """A subgraph that reads an outer tensor."""
    b = Builder()
    a = b.conv(b.input("X", [1, 3, 5, 6]), 3, 6, name="A")
    c = b.conv(b.op("Relu", [a]), 6, 6, name="C")
    branch = [helper.make_graph([helper.make_node(op, [c], [f"{op}_o"])], op, [],
                                [helper.make_tensor_value_info(f"{op}_o", TensorProto.FLOAT,
                                                               None)])
              for op in ("Relu", "Sigmoid")]
    b.nodes.append(helper.make_node("If", [b.const(np.array(True), "cond")], ["if_out"],
                                    name="IF", then_branch=branch[0], else_branch=branch[1]))
    b.conv("if_out", 6, 2, name="B")
    return b.build("B_out")


def tokens() -> onnx.ModelProto:
    """Linear → Relu → linear over tokens, with a Reshape of heads in between."""
    b = Builder()
    x = b.input("X", [1, 3, 8])
    h = b.op("Relu", [b.op("MatMul", [x, b.weight([8, 8])])])
    r = b.op("Reshape", [h, b.ints([1, 3, 2, 4])])
    back = b.op("Reshape", [b.op("Relu", [r]), b.ints([1, 3, 8])])
    b.op("MatMul", [back, b.weight([8, 4])], name="OUT")
    return b.build("OUT_out")


BASES = {"cnn": cnn, "if": with_if, "tokens": tokens}


# -- mutations --------------------------------------------------------------------------------
def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    d = bytearray(data)
    kind = rng.choice(["flip", "byte", "truncate", "splice", "delete", "insert"])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
    elif kind == "byte":
        d[rng.randrange(len(d))] = rng.randrange(256)
    elif kind == "truncate":
        d = d[: rng.randrange(len(d))]
    elif kind == "splice":
        p, q = sorted(rng.randrange(len(d)) for _ in range(2))
        at = rng.randrange(len(d))
        d = d[:at] + d[p:q] + d[at:]
    elif kind == "delete":
        p = rng.randrange(len(d))
        d = d[:p] + d[p + rng.randint(1, 16):]
    else:
        p = rng.randrange(len(d))
        d = d[:p] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + d[p:]
    return bytes(d), kind


def mutate_proto(model: onnx.ModelProto, rng: random.Random) -> tuple[bytes, str]:
    """A structural change that keeps the bytes parseable."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    nodes = list(g.node)
    names = sorted({n for node in nodes for n in [*node.input, *node.output] if n}
                   | {t.name for t in g.initializer} | {i.name for i in g.input})
    node = rng.choice(nodes)
    kind = rng.choice(["drop-node", "rewire", "attr", "dims", "op-type", "opset", "dtype",
                       "drop-init", "dup-node", "input-dims", "output-name"])
    if kind == "rewire" and not node.input or kind == "attr" and not node.attribute:
        kind = "output-name"
    if kind == "drop-node":
        g.node.remove(node)
    elif kind == "rewire":
        node.input[rng.randrange(len(node.input))] = rng.choice(names)
    elif kind == "attr":
        a = rng.choice(list(node.attribute))
        if a.type == onnx.AttributeProto.INT:
            a.i = rng.choice([-1, 0, 2, 3, 7])
        elif a.type == onnx.AttributeProto.INTS and a.ints:
            a.ints[rng.randrange(len(a.ints))] = rng.choice([-1, 0, 2, 5])
        else:
            node.attribute.remove(a)
    elif kind == "dims":
        t = rng.choice(list(g.initializer))
        if t.dims:
            t.dims[rng.randrange(len(t.dims))] = rng.choice([0, 1, 2, 5])
    elif kind == "op-type":
        node.op_type = rng.choice(["Relu", "Sigmoid", "Add", "Conv", "MatMul", "Concat",
                                   "Reshape", "Unknown", "Identity"])
    elif kind == "opset":
        m.opset_import[0].version = rng.choice([1, 10, 11, 13, 21, 99])
    elif kind == "dtype":
        g.input[0].type.tensor_type.elem_type = rng.choice(
            [TensorProto.DOUBLE, TensorProto.INT64, TensorProto.FLOAT16, TensorProto.STRING])
    elif kind == "drop-init":
        g.initializer.remove(rng.choice(list(g.initializer)))
    elif kind == "dup-node":
        g.node.append(node)
    elif kind == "input-dims":
        dims = g.input[0].type.tensor_type.shape.dim
        dims[rng.randrange(len(dims))].dim_value = rng.choice([0, 1, 2, 7])
    else:
        g.output[0].name = rng.choice(names)
    return m.SerializeToString(), kind


def mutations(base: str, chunk: int, structural: bool):
    model = BASES[base]()
    data = model.SerializeToString()
    rng = random.Random(f"{base}-{chunk}-{structural}")
    for k in range(CASES):
        mutated, kind = mutate_proto(model, rng) if structural else mutate_bytes(data, rng)
        yield mutated, f"{base} chunk {chunk} case {k}: {kind}"


# -- the properties ---------------------------------------------------------------------------
def check_api(data: bytes, what: str) -> None:
    try:
        model = graphprune.load(data)
    except graphprune.InputError as exc:
        assert_one_line(str(exc), what)
        return
    for call in (lambda: graphprune.analyze(model),
                 lambda: graphprune.compress(model, ratio=0.5)):
        try:
            result = call()
        except graphprune.InputError as exc:
            assert_one_line(str(exc), what)
            continue
        except graphprune.GraphpruneError as exc:  # exit 1 or 3 on a mutated input: a bug
            pytest.fail(f"{what}: {type(exc).__name__} (exit {exc.exit_code}): {exc}")
        if isinstance(result, tuple):
            assert result[1].exact_check["passed"], what


def assert_one_line(message: str, what: str) -> None:
    assert message and "\n" not in message, f"{what}: {message!r}"


def check_cli(data: bytes, what: str, tmp: Path, capsys) -> None:
    src, out = tmp / "m.onnx", tmp / "o.onnx"
    src.write_bytes(data)
    for leftover in (out, tmp / "o.onnx.data"):
        leftover.unlink(missing_ok=True)
    code = cli.main(["compress", str(src), "-o", str(out), "--ratio", "0.5", "--quiet"])
    _, err = capsys.readouterr()
    assert src.read_bytes() == data, f"{what}: input changed"
    if code == 0:
        assert out.is_file() and graphprune.load(out), what
        return
    assert code == 2, f"{what}: exit {code}: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphprune: error: "), f"{what}: {err}"
    assert sorted(p.name for p in tmp.iterdir()) == ["m.onnx"], f"{what}: file written"


@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("chunk", range(4))
@pytest.mark.parametrize("structural", [False, True], ids=["bytes", "proto"])
def test_fuzzed_models_through_the_api(base, chunk, structural):
    for data, what in mutations(base, chunk, structural):
        check_api(data, what)


@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("structural", [False, True], ids=["bytes", "proto"])
def test_fuzzed_models_through_the_cli(base, structural, tmp_path, capsys):
    for data, what in mutations(base, 9, structural):
        check_cli(data, what, tmp_path, capsys)


def test_fuzzed_example_model(tmp_path, capsys):
    """The bundled ResNet: most byte mutations land in weights (valid protobuf, odd values)."""
    data = EXAMPLE.read_bytes()
    rng = random.Random("example")
    for k in range(max(6, CASES // 4)):
        mutated, kind = mutate_bytes(data, rng)
        check_cli(mutated, f"example case {k}: {kind}", tmp_path, capsys)


def test_installed_entry_point_on_fuzzed_bytes(tmp_path):
    """The real console script, a few times: no traceback reaches the terminal."""
    exe = Path(sys.executable).parent / "graphprune"
    rng = random.Random("entry-point")
    data = cnn().SerializeToString()
    for k in range(4):
        mutated, kind = mutate_bytes(data, rng)
        src = tmp_path / f"m{k}.onnx"
        src.write_bytes(mutated)
        digest = hashlib.sha256(mutated).hexdigest()
        r = subprocess.run([str(exe), "compress", str(src), "-o", str(tmp_path / f"o{k}.onnx"),
                            "--quiet"], capture_output=True, text=True, timeout=300)
        assert "Traceback" not in r.stderr, (kind, r.stderr)
        assert r.returncode in (0, 2), (kind, r.returncode, r.stderr)
        if r.returncode:
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert hashlib.sha256(src.read_bytes()).hexdigest() == digest
