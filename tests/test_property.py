"""Property tests: random graphs from the supported ops, compressed at random settings.

Each generated graph is a valid model (onnxruntime runs it) built with `onnx.helper` from
blocks real networks are made of: convolutions (grouped, depthwise, dilated), residuals,
concats, splits, slices, channel shuffles, pooling, squeeze-excitation, batch norm,
per-channel scales, NHWC pointwise linears, flatten/reshape → linear heads, and, over tokens,
linears, FFN residuals, multi-head attention and LayerNorm. Properties:

- compress at any ratio in [0, 1), criterion and round_to either passes the exact check — and
  an independent onnxruntime comparison with other inputs — or refuses with a one-line
  InputError; nothing else escapes; a run that removes nothing returns the input unchanged;
- ratio 0 returns the input model unchanged, with bit-identical outputs;
- analyze never crashes.

Hypothesis runs derandomized (the same examples every run). CI runs 200+ graphs; set
GRAPHPRUNE_PROPERTY_EXAMPLES=2000 for a longer search (README: "Tests").
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from graphprune.passes import rewrite
from graphprune.passes.validation import ATOL, RTOL
from helpers import Builder, assert_checker, removed_units, session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphprune
from graphprune.metrics import count_params

EXAMPLES = int(os.environ.get("GRAPHPRUNE_PROPERTY_EXAMPLES", "0"))
"""Examples per property (0: the CI defaults below)."""

SETTINGS = {
    "derandomize": True,
    "deadline": None,
    "database": None,
    "print_blob": True,
    # `checked_rewrites` (conftest) is autouse and function-scoped; it holds no state between
    # examples that could leak (each rewrite is checked as it is made), so sharing it is safe.
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                              HealthCheck.data_too_large],
}


def examples(default: int) -> int:
    return EXAMPLES or default


# -- CNN blocks -------------------------------------------------------------------------------
class Net:
    """The growing graph: current tensor `x` of `c` channels, spatial size fixed at h × w."""

    def __init__(self, draw, opset: int, seed: int, c: int, h: int, w: int,
                 dynamic: bool) -> None:
        self.draw, self.b = draw, Builder(opset, seed)
        self.opset, self.c, self.h, self.w, self.dynamic = opset, c, h, w, dynamic
        self.x = self.b.input("X", [1, c, h, w])
        self.extra_outputs: list[str] = []

    def int(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def pick(self, options):
        return self.draw(st.sampled_from(options))

    def act(self, x: str) -> str:
        ops = ["Relu", "Sigmoid", "Tanh", "LeakyRelu", "Identity"]
        ops += ["HardSwish"] if self.opset >= 14 else []
        return self.b.op(self.pick(ops), [x])

    def conv(self, x: str, cin: int, cout: int, k: int | None = None, group: int = 1) -> str:
        k = k or self.pick([1, 3])
        dilation = self.pick([1, 2]) if k == 3 else 1
        return self.b.conv(x, cin, cout, k=k, group=group, dilation=dilation,
                           bias=self.draw(st.booleans()))


def blk_conv(n: Net) -> None:
    cout = n.int(4, 12)
    n.x, n.c = n.act(n.conv(n.x, n.c, cout)), cout


def blk_grouped(n: Net) -> None:
    groups = [g for g in range(2, n.c + 1) if n.c % g == 0]
    if not groups:
        return blk_conv(n)
    g = n.pick(groups)
    cout = g * n.int(1, 3)
    n.x, n.c = n.act(n.conv(n.x, n.c, cout, group=g)), cout


def blk_depthwise(n: Net) -> None:
    cout = n.c * n.pick([1, 2])
    n.x, n.c = n.act(n.conv(n.x, n.c, cout, k=3, group=n.c)), cout


def blk_residual(n: Net) -> None:
    mid = n.int(3, 8)
    y = n.conv(n.act(n.conv(n.x, n.c, mid)), mid, n.c)
    n.x = n.b.op(n.pick(["Add", "Add", "Sub", "Max"]), [n.x, y])


def blk_concat(n: Net) -> None:
    m = n.int(2, 6)
    y = n.act(n.conv(n.x, n.c, m))
    parts = [n.x, y] if n.draw(st.booleans()) else [y, n.x]
    n.x, n.c = n.b.op("Concat", parts, axis=n.pick([1, -3])), n.c + m


def blk_split(n: Net) -> None:
    if n.c < 2:
        return blk_concat(n)
    s = n.int(1, n.c - 1)
    if n.opset >= 13:
        a, rest = n.b.op("Split", [n.x, n.b.ints([s, n.c - s])], n_out=2, axis=1)
    else:
        a, rest = n.b.op("Split", [n.x], n_out=2, axis=1, split=[s, n.c - s])
    a = n.act(n.conv(a, s, s))
    n.x = n.b.op("Concat", [a, rest] if n.draw(st.booleans()) else [rest, a], axis=1)


def blk_slice(n: Net) -> None:
    if n.c < 2:
        return blk_conv(n)
    lo = n.int(0, n.c - 1)
    hi = n.int(lo + 1, n.c)
    ends = hi if hi < n.c or n.draw(st.booleans()) else np.iinfo(np.int64).max
    n.x = n.b.op("Slice", [n.x, n.b.ints([lo]), n.b.ints([ends]), n.b.ints([1])])
    n.c = hi - lo


def blk_shuffle(n: Net) -> None:
    groups = [g for g in range(2, n.c) if n.c % g == 0]
    if not groups:
        return blk_conv(n)
    g = n.pick(groups)
    lead = n.pick([0, -1]) if not n.dynamic else 0
    r = n.b.op("Reshape", [n.x, n.b.ints([lead, g, n.c // g, n.h, n.w])])
    t = n.b.op("Transpose", [r], perm=[0, 2, 1, 3, 4])
    n.x = n.b.op("Reshape", [t, n.b.ints([lead, n.c, n.h, n.w])])


def blk_pool(n: Net) -> None:
    n.x = n.b.op(n.pick(["MaxPool", "AveragePool"]), [n.x], kernel_shape=[3, 3],
                 pads=[1, 1, 1, 1], strides=[1, 1])


def blk_se(n: Net) -> None:
    r = n.int(1, 4)
    s = n.b.op("GlobalAveragePool", [n.x])
    s = n.b.op("Sigmoid", [n.b.conv(n.b.op("Relu", [n.b.conv(s, n.c, r, k=1)]), r, n.c, k=1)])
    n.x = n.b.op("Mul", [n.x, s])


def blk_bn(n: Net) -> None:
    b = n.b
    params = [b.uniform([n.c], 0.5, 1.5), b.uniform([n.c], -0.2, 0.2),
              b.uniform([n.c], -0.2, 0.2), b.uniform([n.c], 0.5, 1.5)]
    n.x = b.op("BatchNormalization", [n.x, *params])


def blk_scale(n: Net) -> None:
    n.x = n.b.op(n.pick(["Mul", "Add", "Div"]), [n.x, n.b.uniform([n.c, 1, 1], 0.5, 1.5)])


def blk_pointwise_nhwc(n: Net) -> None:
    """ConvNeXt-style: NCHW → NHWC → MatMul over channels → back."""
    m = n.int(3, 8)
    t = n.b.op("Transpose", [n.x], perm=[0, 2, 3, 1])
    y = n.b.op("MatMul", [t, n.b.weight([n.c, m])])
    y = n.b.op("Add", [y, n.b.weight([m], scale=0.1)])
    n.x, n.c = n.b.op("Transpose", [n.act(y)], perm=[0, 3, 1, 2]), m


def blk_output(n: Net) -> None:
    """An intermediate tensor is also a graph output (its units freeze)."""
    n.extra_outputs.append(n.x)
    blk_conv(n)


CNN_BLOCKS = [blk_conv, blk_grouped, blk_depthwise, blk_residual, blk_concat, blk_split,
              blk_slice, blk_shuffle, blk_pool, blk_se, blk_bn, blk_scale, blk_pointwise_nhwc,
              blk_output]


def head(n: Net) -> str:
    b, kind = n.b, n.pick(["conv", "flatten", "gap", "reshape", "reduce"])
    classes = n.int(2, 5)
    if kind == "conv":
        return n.conv(n.x, n.c, classes, k=1)
    if kind == "flatten":
        return b.gemm(b.op("Flatten", [n.x], axis=1), n.c * n.h * n.w, classes,
                      trans_b=n.pick([0, 1]))
    if kind == "gap":
        return b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [n.x])]), n.c, classes)
    if kind == "reshape":
        flat = b.op("Reshape", [n.x, b.ints([0 if n.dynamic else n.pick([0, 1, -1]),
                                             n.c * n.h * n.w])])
        return b.op("MatMul", [flat, b.weight([n.c * n.h * n.w, classes])])
    if n.opset >= 18:
        pooled = b.op("ReduceMean", [n.x, b.ints([2, 3])], keepdims=0)
    else:
        pooled = b.op("ReduceMean", [n.x], axes=[2, 3], keepdims=0)
    return b.gemm(pooled, n.c, classes)


def finish(b: Builder, outputs: list[str], dynamic: bool) -> onnx.ModelProto:
    model = b.build(outputs)
    if dynamic:
        for vi in [*model.graph.input, *model.graph.output]:
            dims = vi.type.tensor_type.shape.dim
            if dims:
                dims[0].Clear()
                dims[0].dim_param = "batch"
        del model.graph.value_info[:]
    return model


@st.composite
def cnn_models(draw) -> onnx.ModelProto:
    opset = draw(st.sampled_from([11, 13, 14, 17, 18]))
    h, w = draw(st.sampled_from([(4, 5), (5, 4), (3, 6)]))
    n = Net(draw, opset, draw(st.integers(0, 2**16)), draw(st.integers(1, 4)), h, w,
            dynamic=draw(st.booleans()))
    blk_conv(n)
    for block in draw(st.lists(st.sampled_from(CNN_BLOCKS), min_size=1, max_size=5)):
        block(n)
    return finish(n.b, [head(n), *n.extra_outputs], n.dynamic)


# -- token blocks -----------------------------------------------------------------------------
class Tokens:
    """x: [batch, T, d]."""

    def __init__(self, draw, seed: int) -> None:
        self.draw, self.b = draw, Builder(17, seed)
        self.t, self.d = draw(st.integers(2, 5)), draw(st.sampled_from([4, 6, 8, 12]))
        self.x = self.b.input("X", [1, self.t, self.d])

    def linear(self, x: str, k: int, n: int, bias: bool = True) -> str:
        y = self.b.op("MatMul", [x, self.b.weight([k, n])])
        return self.b.op("Add", [y, self.b.weight([n], scale=0.1)]) if bias else y


def tok_linear(tk: Tokens) -> None:
    n = tk.draw(st.integers(4, 12))
    tk.x, tk.d = tk.b.op(tk.draw(st.sampled_from(["Relu", "Tanh"])), [tk.linear(tk.x, tk.d, n)]), n


def tok_ffn(tk: Tokens) -> None:
    hidden = tk.draw(st.integers(4, 16))
    y = tk.linear(tk.b.op("Relu", [tk.linear(tk.x, tk.d, hidden)]), hidden, tk.d)
    tk.x = tk.b.op("Add", [tk.x, y])


def tok_attention(tk: Tokens) -> None:
    b = tk.b
    heads = tk.draw(st.sampled_from([h for h in (1, 2, 3, 4) if tk.d % h == 0]))
    dh = tk.draw(st.integers(2, 4))

    def split_heads(z: str) -> str:
        r = b.op("Reshape", [z, b.ints([0, tk.t, heads, dh])])
        return b.op("Transpose", [r], perm=[0, 2, 1, 3])

    q, k, v = (split_heads(tk.linear(tk.x, tk.d, heads * dh, bias=tk.draw(st.booleans())))
               for _ in range(3))
    scores = b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 1, 3, 2])])
    scores = b.op("Mul", [scores, b.const(np.float32(1 / np.sqrt(dh)))])
    ctx = b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])
    merged = b.op("Reshape", [b.op("Transpose", [ctx], perm=[0, 2, 1, 3]),
                              b.ints([0, tk.t, heads * dh])])
    tk.x = b.op("Add", [tk.x, tk.linear(merged, heads * dh, tk.d)])


def tok_layernorm(tk: Tokens) -> None:
    b = tk.b
    tk.x = b.op("LayerNormalization", [tk.x, b.uniform([tk.d], 0.5, 1.5),
                                       b.uniform([tk.d], -0.1, 0.1)], axis=-1)


TOKEN_BLOCKS = [tok_linear, tok_ffn, tok_attention, tok_layernorm]


@st.composite
def token_models(draw) -> onnx.ModelProto:
    tk = Tokens(draw, draw(st.integers(0, 2**16)))
    tok_linear(tk)
    for block in draw(st.lists(st.sampled_from(TOKEN_BLOCKS), min_size=1, max_size=4)):
        block(tk)
    if draw(st.booleans()):
        out = tk.linear(tk.x, tk.d, draw(st.integers(2, 5)))
    else:
        pooled = tk.b.op("ReduceMean", [tk.x], axes=[1], keepdims=0)
        out = tk.b.gemm(pooled, tk.d, draw(st.integers(2, 5)))
    return finish(tk.b, [out], dynamic=draw(st.booleans()))


# -- properties -------------------------------------------------------------------------------
RATIOS = st.one_of(st.sampled_from([0.5, 0.3, 0.75, 0.99, 0.0]),
                   st.floats(0.1, 0.999, allow_nan=False))
CRITERIA = st.sampled_from(["l1", "l2", "random"])
ROUND_TO = st.sampled_from([1, 1, 2, 4])


def feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Batch 2 where the batch axis is dynamic."""
    rng = np.random.default_rng(5)
    return {i.name: rng.standard_normal([d.dim_value or 2 for d in i.type.tensor_type.shape.dim])
            .astype(np.float32) for i in model.graph.input}


def check_compress(model: onnx.ModelProto, ratio: float, criterion: str,
                   round_to: int) -> None:
    """Exact — the tool's own check, and an independent run of the pruned model against the
    masked original on other inputs — or a clean one-line refusal; nothing else escapes."""
    session(model).run(None, feeds(model))  # the generator made a valid model
    before = model.SerializeToString()
    try:
        pruned, report = graphprune.compress(model, ratio=ratio, criterion=criterion,
                                             round_to=round_to)
    except graphprune.InputError as exc:
        assert str(exc) and "\n" not in str(exc)
        refusals.append(str(exc))
        return
    assert model.SerializeToString() == before, "compress modified its input model"
    assert report.exact_check["passed"]
    assert_checker(model, pruned)
    assert [o.name for o in pruned.graph.output] == [o.name for o in model.graph.output]
    an, removed = removed_units(model, ratio, criterion, round_to)
    if not removed.any():
        assert pruned.SerializeToString() == before, "nothing removed, yet the model changed"
        return
    masked = rewrite.masked_model(model, an, removed)
    f = feeds(model)
    for ref, got in zip(session(masked).run(None, f), session(pruned).run(None, f),
                        strict=True):
        assert ref.shape == got.shape
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL * max(scale, 1e-30))
    assert report.params_after == count_params(pruned) < count_params(model)


refusals: list[str] = []
"""Clean refusals seen (for a look with -s; none are expected from these valid graphs)."""


@settings(max_examples=examples(150), **SETTINGS)
@given(model=cnn_models(), ratio=RATIOS, criterion=CRITERIA, round_to=ROUND_TO)
def test_compress_random_cnn(model, ratio, criterion, round_to):
    check_compress(model, ratio, criterion, round_to)


@settings(max_examples=examples(60), **SETTINGS)
@given(model=token_models(), ratio=RATIOS, criterion=CRITERIA, round_to=ROUND_TO)
def test_compress_random_tokens(model, ratio, criterion, round_to):
    check_compress(model, ratio, criterion, round_to)


@settings(max_examples=examples(30), **SETTINGS)
@given(model=st.one_of(cnn_models(), token_models()), criterion=CRITERIA, round_to=ROUND_TO)
def test_ratio_zero_is_the_identity(model, criterion, round_to):
    before = model.SerializeToString()
    pruned, report = graphprune.compress(model, ratio=0.0, criterion=criterion,
                                         round_to=round_to)
    assert pruned.SerializeToString() == before
    assert report.exact_check["passed"] and report.params_after == report.params_before
    f = feeds(model)
    for a, b in zip(session(model).run(None, f), session(pruned).run(None, f), strict=True):
        assert a.tobytes() == b.tobytes()


@settings(max_examples=examples(100), **SETTINGS)
@given(model=st.one_of(cnn_models(), token_models()))
def test_analyze_never_crashes(model):
    result = graphprune.analyze(model).to_dict()
    assert result["summary"]["total"] == len(result["groups"])
    for g in result["groups"]:
        assert 0 <= g["prunable"] <= g["units"]
        assert g["prunable"] == g["units"] or g["frozen_reasons"]
