"""Validation inputs real models accept (passes/inputs.py): the shapes chosen, given values,
held-back calibration samples, and the errors when nothing works.

Models are built here, each the smallest graph with the property a third-party export has:
a stride-32 path added to upsampled features (YOLOv8, DBNet: spatial sizes must be multiples
of 32), the same with paddle2onnx's `dim_value: -1`, an audio front end that pads by
reflection (Silero VAD: more samples than the padding) with a state and a scalar sample
rate, inputs whose batch dims the exporter named apart (torch's dynamo export), and a batch
baked into a Reshape although declared dynamic.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphprune.passes import inputs, rewrite, validation
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune import cli
from graphprune.errors import InputError, ValidationError

RNG = np.random.default_rng(0)


def _w(name: str, *shape: int, scale: float | None = None) -> onnx.TensorProto:
    scale = scale if scale is not None else 1.0 / np.sqrt(np.prod(shape[1:]) or 1)
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _model(nodes, inits, ins, outs, opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info(o, TensorProto.FLOAT,
                                                                          None) for o in outs],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def stride32(dims: list) -> onnx.ModelProto:
    """x → Conv A → Relu ─┬──────────────────────────────── Add → Conv C → y
                          └ Conv B (32x32, stride 32) → Resize ×32 ┘
    H and W must be multiples of 32: else B's map, upsampled, does not match A's."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    for d, want in zip(x.type.tensor_type.shape.dim, dims, strict=True):
        if want is None:
            d.Clear()  # no dim_value, no dim_param (paddle2onnx's '?')
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="A", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "wb"], ["b"], name="B", strides=[32, 32]),
             helper.make_node("Resize", ["b", "", "scales"], ["up"], name="up", mode="nearest"),
             helper.make_node("Add", ["r", "up"], ["s"], name="add"),
             helper.make_node("Conv", ["s", "wc"], ["y"], name="C")]
    inits = [_w("wa", 8, 3, 3, 3), _w("ba", 8, scale=0.1), _w("wb", 8, 8, 32, 32),
             _w("wc", 4, 8, 1, 1),
             numpy_helper.from_array(np.array([1, 1, 32, 32], np.float32), "scales")]
    return _model(nodes, inits, [x], ["y"])


def audio() -> onnx.ModelProto:
    """x[batch, T] → reflection pad 32 → Conv1d (64 taps, stride 32) → Relu → Conv1d 1x1 →
    mean over frames, + state[0] → × sr/16000 → prob; the new state. T must exceed 32."""
    f = TensorProto.FLOAT
    ins = [helper.make_tensor_value_info("x", f, ["batch", "samples"]),
           helper.make_tensor_value_info("state", f, [2, "batch", 16]),
           helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    c = numpy_helper.from_array
    inits = [_w("w1", 8, 1, 64), _w("w2", 16, 8, 1), _w("w3", 16, 1),
             c(np.array([1], np.int64), "one"), c(np.array([0], np.int64), "zero"),
             c(np.array([0, 0, 32, 0, 0, 32], np.int64), "pads"),
             c(np.array([2], np.int64), "frames"), c(np.float32(16000), "rate"),
             c(np.int64(0), "i0"), c(np.int64(1), "i1")]
    nodes = [helper.make_node("Unsqueeze", ["x", "one"], ["x3"]),
             helper.make_node("Pad", ["x3", "pads"], ["xp"], mode="reflect"),
             helper.make_node("Conv", ["xp", "w1"], ["c1"], name="stft", strides=[32]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="mix"),
             helper.make_node("ReduceMean", ["c2", "frames"], ["m"], keepdims=0),
             helper.make_node("Gather", ["state", "i0"], ["s0"], axis=0),
             helper.make_node("Add", ["m", "s0"], ["h"]),
             helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["srf", "rate"], ["k"]),
             helper.make_node("Mul", ["h", "k"], ["hk"]),
             helper.make_node("MatMul", ["hk", "w3"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["prob"]),
             helper.make_node("Unsqueeze", ["h", "zero"], ["h0"]),
             helper.make_node("Gather", ["state", "i1"], ["s1"], axis=0),
             helper.make_node("Unsqueeze", ["s1", "zero"], ["s10"]),
             helper.make_node("Concat", ["h0", "s10"], ["new_state"], axis=0)]
    return _model(nodes, inits, ins, ["prob", "new_state"], opset=18)


def untied() -> onnx.ModelProto:
    """ids[s72, s53], mask[s43, s53] (a dynamo export's names): an embedding times the mask;
    the batch dims broadcast at 1 but must be equal otherwise."""
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"]),
             helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["maskf", "last"], ["mask3"]),
             helper.make_node("Mul", ["emb", "mask3"], ["x"]),
             helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    inits = [_w("table", 100, 16, scale=1.0), _w("w1", 16, 32), _w("w2", 32, 16),
             numpy_helper.from_array(np.array([-1], np.int64), "last")]
    ins = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["s72", "s53"]),
           helper.make_tensor_value_info("mask", TensorProto.INT64, ["s43", "s53"])]
    return _model(nodes, inits, ins, ["y"])


def baked_batch() -> onnx.ModelProto:
    """x[N, 3, 8, 8] reshaped to [1, 3, 8, 8] first (a batch of 1 baked in), then convs."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["x1"]),
             helper.make_node("Conv", ["x1", "wa"], ["a"], name="A", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "wc"], ["y"], name="C")]
    inits = [_w("wa", 8, 3, 3, 3), _w("wc", 4, 8, 1, 1),
             numpy_helper.from_array(np.array([1, 3, 8, 8], np.int64), "shape")]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])]
    return _model(nodes, inits, ins, ["y"])


def _shapes(chosen: inputs.CheckInputs) -> list[dict[str, list[int]]]:
    return chosen.describe()["shapes"]


# -- shapes found by trying -------------------------------------------------------------------
@pytest.mark.parametrize("dims", [["batch", 3, "height", "width"], [-1, 3, None, None]],
                         ids=["named", "paddle2onnx"])
def test_spatial_dims_go_up_the_ladder_to_multiples_of_32(dims):
    model = stride32(dims)
    chosen = inputs.resolve(model)
    assert _shapes(chosen) == [{"x": [1, 3, 32, 32]}, {"x": [2, 3, 64, 64]}]
    assert chosen.source == "searched shapes" and chosen.batch_varies
    assert "fails on the default shapes (x 1x3x8x8" in chosen.notes[0]
    pruned, report = graphprune.compress(model, 0.5)
    check = report.exact_check
    assert check["passed"] and [r["batch"] for r in check["runs"]] == [1, 2]
    assert check["inputs"]["shapes"] == _shapes(chosen)
    assert report.params_after < report.params_before
    # the pruned model runs on the chosen shapes and gives the original's output shape
    sess = ort.InferenceSession(pruned.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": np.ones((2, 3, 64, 64), np.float32)})
    assert y.shape == (2, 4, 64, 64)
    assert "inputs (searched shapes): x 1x3x32x32 | x 2x3x64x64" in report.render()


def test_paddle2onnx_minus_one_dims_are_dynamic_and_a_given_shape_is_respected():
    model = stride32([-1, 3, None, None])
    assert validation.input_specs(model) == [("x", TensorProto.FLOAT, [None, 3, None, None])]
    _, report = graphprune.compress(model, 0.5, input_sizes={"x": [1, 3, 64, 96]})
    check = report.exact_check
    assert check["passed"] and check["inputs"]["source"] == "given shapes"
    assert check["inputs"]["shapes"] == [{"x": [1, 3, 64, 96]}]  # as given: no second batch
    assert [r["batch"] for r in check["runs"]] == [1]


def test_given_shapes_the_model_refuses_are_bad_input_not_a_bug():
    model = stride32(["batch", 3, "height", "width"])
    with pytest.raises(InputError, match="on the given shapes .x 1x3x40x40."):
        graphprune.compress(model, 0.5, input_sizes={"x": [1, 3, 40, 40]})


def test_audio_front_end_gets_enough_samples_and_its_scalar_is_noted():
    chosen = inputs.resolve(audio())
    assert _shapes(chosen) == [{"x": [1, 64], "state": [2, 1, 16], "sr": []},
                               {"x": [2, 128], "state": [2, 2, 16], "sr": []}]
    assert chosen.batch_axes == {"x": [0], "state": [1], "sr": []}
    assert any("scalar input 'sr' generated" in n for n in chosen.notes)
    _, report = graphprune.compress(audio(), 0.5)
    assert report.exact_check["passed"] and report.params_after < report.params_before


def test_dims_named_apart_are_tied_when_independent_sizes_fail():
    chosen = inputs.resolve(untied())
    # by name, the mask's s43 is no batch: ids 1x8 with mask 8x8 broadcasts, 2x13 with 13x13
    # does not; tied by position both work
    assert _shapes(chosen) == [{"ids": [1, 8], "mask": [1, 8]}, {"ids": [2, 13], "mask": [2, 13]}]
    assert chosen.batch_axes == {"ids": [0], "mask": [0]}
    assert "tied by position" in chosen.notes[0]
    # calibration uses the same shapes, every batch axis at its batch size
    assert chosen.at_batch(8) == {"ids": (8, 8), "mask": (8, 8)}


@pytest.mark.parametrize("sizes", [None, {"ids": [2, 16], "mask": [2, 16]}],
                         ids=["searched", "given"])
def test_calibration_batches_tie_every_input(sizes):
    """/work/tp/repros/untied_batch_calibration.py: calibration at batch 8 gave only one
    input batch 8 (onnxruntime failed inside the activation statistics, exit 3)."""
    _, report = graphprune.compress(untied(), 0.5, criterion="wanda", input_sizes=sizes)
    assert report.exact_check["passed"] and report.calibration["samples"] == 32
    assert report.params_after < report.params_before


def test_a_batch_baked_in_is_validated_at_the_size_that_works():
    chosen = inputs.resolve(baked_batch())
    assert _shapes(chosen) == [{"x": [1, 3, 8, 8]}] and not chosen.batch_varies
    assert "fails at batch 2" in chosen.notes[-1] and "dim 0 of 'x'" in chosen.notes[-1]
    _, report = graphprune.compress(baked_batch(), 0.5, criterion="wanda")
    assert report.exact_check["passed"] and [r["batch"] for r in report.exact_check["runs"]] == [1]


def test_nothing_works_is_one_line_naming_what_was_tried(capsys, tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["x7"]),
             helper.make_node("MatMul", ["x7", "w"], ["y"])]
    model = _model(nodes, [_w("w", 7, 4), numpy_helper.from_array(np.array([1, 7], np.int64),
                                                                   "shape")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "t"])], ["y"])
    with pytest.raises(InputError) as info:
        inputs.resolve(model)
    text = str(info.value)
    assert text.startswith("the input model cannot be used: onnxruntime cannot run it")
    assert ("tried 10 input shapes (x 1x8; x 1x16; x 1x32; x 1x64 and 6 more up to x 1x16000)"
            in text)
    assert "--input-shape x:1xN" in text
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert cli.main(["compress", str(path), "-o", str(tmp_path / "p.onnx"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tried 10 input shapes" in err


def test_a_pruned_model_that_fails_is_never_blamed_on_the_input(monkeypatch):
    """The original needs the ladder's shapes; the pruned model fails in onnxruntime: that is
    the rewrite's fault (exit 1), not the input's (exit 2)."""
    real = rewrite.prune_model

    def broken(model, an, removed, spill=None):
        pruned = real(model, an, removed, spill)
        w = next(t for t in pruned.graph.initializer if t.name == "wc")
        w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w)[:, :-1].copy(), "wc"))
        return pruned

    monkeypatch.setattr(rewrite, "prune_model", broken)
    with pytest.raises(ValidationError) as info:
        graphprune.compress(stride32(["batch", 3, "height", "width"]), 0.5)
    assert not isinstance(info.value, InputError)
    assert "input model cannot be used" not in str(info.value)


# -- given values ------------------------------------------------------------------------------
def test_inputs_npz_single_array_for_a_single_input_model(tmp_path):
    data = RNG.standard_normal((3, 3, 64, 32)).astype(np.float32)
    np.savez(tmp_path / "x.npz", data)  # one array: arr_0
    _, report = graphprune.compress(stride32([-1, 3, None, None]), 0.5,
                                    inputs=tmp_path / "x.npz")
    check = report.exact_check
    assert check["passed"] and [r["batch"] for r in check["runs"]] == [1, 2]
    assert check["inputs"]["source"] == f"given inputs ({tmp_path / 'x.npz'})"
    assert check["inputs"]["shapes"] == [{"x": [1, 3, 64, 32]}, {"x": [2, 3, 64, 32]}]
    assert "sample 0, then samples 1-2" in check["inputs"]["notes"][0]


def test_given_scalar_state_and_integers_are_fed_as_given(tmp_path):
    model = audio()
    x = RNG.standard_normal((3, 512)).astype(np.float32)
    state = RNG.standard_normal((2, 1, 16)).astype(np.float32)
    data = {"x": x, "state": state, "sr": np.int64(16000)}
    chosen = inputs.resolve(model, data=data)
    assert [sorted(f) for f in chosen.values] == [["sr", "state", "x"]] * 2
    assert chosen.values[0]["sr"] == 16000 and chosen.values[1]["sr"].dtype == np.int64
    # the state was given for batch 1: every run takes one sample
    np.testing.assert_array_equal(chosen.values[1]["x"], x[1:2])
    np.testing.assert_array_equal(chosen.values[1]["state"], state)
    # generated calibration keeps the state's batch (wanda, no --calib)
    assert not chosen.batch_varies and chosen.at_batch(8)["x"] == (1, 512)
    np.savez(tmp_path / "d.npz", **data)
    code = cli.main(["compress", str(_saved(model, tmp_path)), "-o", str(tmp_path / "p.onnx"),
                     "--inputs", str(tmp_path / "d.npz"), "--report", str(tmp_path / "r.json"),
                     "--quiet", "--criterion", "wanda"])
    assert code == 0
    import json
    check = json.loads((tmp_path / "r.json").read_text())["exact_check"]
    assert check["passed"] and check["inputs"]["shapes"][0] == {"x": [1, 512],
                                                                "state": [2, 1, 16], "sr": []}


@pytest.mark.parametrize("data, words", [
    ({"x": np.zeros((2, 3, 64, 64), np.float32), "y": np.zeros(2)}, None),
    ({"z": np.zeros((2, 3, 64, 64), np.float32)}, "no array for input 'x'"),
    ({"x": np.zeros((2, 4, 64, 64), np.float32)}, "expects samples × 3x\\?x\\?"),
    ({"x": np.zeros((2, 64, 64), np.float32)}, "expects samples × 3x\\?x\\?"),
    ({"x": np.zeros((2, 3, 64, 64), np.int32)}, "dtype int32"),
    ({"x": np.zeros((2, 3, 40, 40), np.float32)}, "on the given inputs"),
])
def test_given_inputs_that_do_not_fit_are_refused_in_one_line(data, words):
    model = stride32(["batch", 3, "height", "width"])
    if words is None:  # extra arrays are ignored
        assert inputs.resolve(model, data=data).source == "given inputs"
        return
    with pytest.raises(InputError, match=words):
        inputs.resolve(model, data=data)


def test_calibration_samples_held_back_for_the_exact_check():
    model = stride32(["batch", 3, "height", "width"])
    calib = {"x": RNG.standard_normal((10, 3, 32, 32)).astype(np.float32)}
    _, report = graphprune.compress(model, 0.5, criterion="wanda", calib=calib)
    assert report.calibration == {"source": "arrays", "samples": 7, "held_back": 3}
    check = report.exact_check
    assert check["passed"]
    assert check["inputs"]["source"].startswith("held-back calibration samples 7-9")
    assert check["inputs"]["shapes"] == [{"x": [1, 3, 32, 32]}, {"x": [2, 3, 32, 32]}]
    # l1 reads no calibration data, but validation still takes the held-back samples
    _, report = graphprune.compress(model, 0.5, calib=calib)
    assert report.exact_check["inputs"]["source"].startswith("held-back calibration samples")


def test_one_calibration_sample_is_not_held_back():
    model = stride32(["batch", 3, "height", "width"])
    calib = {"x": RNG.standard_normal((1, 3, 32, 32)).astype(np.float32)}
    _, report = graphprune.compress(model, 0.5, criterion="wanda", calib=calib)
    assert report.calibration == {"source": "arrays", "samples": 1}
    assert any("too few to hold any back" in n for n in report.exact_check["inputs"]["notes"])


def _saved(model: onnx.ModelProto, folder: Path) -> Path:
    path = folder / "m.onnx"
    onnx.save(model, path)
    return path


# -- a transformer as torch's dynamo exporter writes it -----------------------------------------
@pytest.fixture(scope="module")
def dynamo_pair(tmp_path_factory) -> Path:
    """ids and mask, dynamic_axes as lists, attention whose mask is viewed by the ids' batch
    (as Hugging Face's GPT-2 does): torch.export cannot relate the dims and names all four
    apart (`input_ids[s72, s70]`, `attention_mask[s43, s53]`, as in its GPT-2 export)."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.emb = torch.nn.Embedding(50, 16)
            self.qkv = torch.nn.Linear(16, 48)
            self.out = torch.nn.Linear(16, 16)
            self.ffn = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                                           torch.nn.Linear(32, 16))

        def forward(self, input_ids, attention_mask):
            x = self.emb(input_ids)
            b, s, _ = x.shape
            q, k, v = self.qkv(x).view(b, s, 3, 2, 8).permute(2, 0, 3, 1, 4)
            mask = attention_mask.reshape(b, -1)[:, None, None, :].float()
            a = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5 + (1.0 - mask) * -1e4, -1) @ v
            x = x + self.out(a.transpose(1, 2).reshape(b, s, 16))
            return x + self.ffn(x)

    path = tmp_path_factory.mktemp("dynamo") / "pair.onnx"
    ids, mask = torch.randint(0, 50, (2, 5)), torch.ones(2, 5, dtype=torch.int64)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), (ids, mask), str(path), dynamo=True,
                          input_names=["input_ids", "attention_mask"],
                          dynamic_axes={"input_ids": [0, 1], "attention_mask": [0, 1]})
    return path


def test_dynamo_export_with_dims_named_apart(dynamo_pair):
    model = graphprune.load(dynamo_pair)
    dims = [d for _, _, d in validation.input_specs(model)]
    assert len({d[0] for d in dims}) == 2 and len({d[1] for d in dims}) == 2  # named apart
    chosen = inputs.resolve(model)
    assert _shapes(chosen) == [{"input_ids": [1, 8], "attention_mask": [1, 8]},
                               {"input_ids": [2, 13], "attention_mask": [2, 13]}]
    _, report = graphprune.compress(str(dynamo_pair), 0.4, criterion="wanda")
    assert report.exact_check["passed"] and report.params_after < report.params_before
    assert report.exact_check["inputs"]["source"] == "searched shapes"
