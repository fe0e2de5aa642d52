"""Scoring criteria: each one on a real graph where one unit is weak by construction, and that
unit must rank lowest of its group.

The graphs: X → Conv A (3→8 channels) → Relu → Conv B (8→4) → Y, built with onnx.helper, and a
torch model exported with BatchNorm between a ReLU and a conv (so the exporter cannot fold it).
Conv A's eight channels form the one prunable group (B's outputs reach the graph output).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphprune.passes import criteria, rewrite, scoring, weights
from graphprune.passes.calibration import Calibration
from helpers import Builder
from onnx import numpy_helper

import graphprune
from graphprune.analysis import analyze_graph
from graphprune.context import RunContext
from graphprune.errors import InputError
from graphprune.ir import Graph

WEAK = 5
WEIGHT_CRITERIA = ["l1", "l2", "bn-scale", "fpgm", "lamp", "random"]
DATA_CRITERIA = ["activation", "apoz", "wanda", "obd", "taylor"]


def two_conv(edit=None, x_shape=(4, 3, 8, 8)) -> onnx.ModelProto:
    """A (3→8, 3×3) → Relu → B (8→4, 1×1). `edit(weights)` changes A_W, A_B, B_W in place."""
    rng = np.random.default_rng(0)
    w = {"A_W": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) / 5,
         "A_B": np.full(8, 0.1, np.float32),
         "B_W": rng.standard_normal((4, 8, 1, 1)).astype(np.float32) / 3}
    if edit:
        edit(w)
    b = Builder()
    x = b.input("X", list(x_shape))
    a = b.op("Conv", [x, b.const(w["A_W"], "A_W"), b.const(w["A_B"], "A_B")], name="A",
             kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    r = b.op("Relu", [a], name="R")
    b.op("Conv", [r, b.const(w["B_W"], "B_W")], name="B", kernel_shape=[1, 1])
    return b.build("B_out")


def dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in [*out.graph.input, *out.graph.output]:
        vi.type.tensor_type.shape.dim[0].dim_param = "batch"
    return out


def scores_of(model: onnx.ModelProto, criterion: str, **kw) -> np.ndarray:
    """Scores of conv A's eight channels, in channel order."""
    an = analyze_graph(Graph(model))
    calib = Calibration(model, samples=16, seed=0) if criterion in scoring.NEEDS_DATA else None
    s = scoring.score_units(an, criterion, 0, calibration=calib, **kw)
    (group,) = [g for g in an.groups if g.prunable]
    assert group.name == "A" and len(group.units) == 8
    return s[group.units]


def zero_channel(w):
    w["A_W"][WEAK] = 0.0
    w["A_B"][WEAK] = 0.0


def dead_channel(w):
    """Large filter, but a bias no input overcomes: ReLU zeroes the channel everywhere."""
    w["A_W"][WEAK] *= 3.0
    w["A_B"][WEAK] = -100.0


def quiet_channel(w):
    """Large filter, tiny outgoing weights: removing it changes the output least."""
    w["A_W"][WEAK] *= 3.0
    w["B_W"][:, WEAK] *= 1e-3


def run(model, feeds):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts).run(None, feeds)[0]


def output_changes(model: onnx.ModelProto) -> np.ndarray:
    """‖f(masked unit k) − f‖ for each of A's channels, measured with masked models."""
    an = analyze_graph(Graph(model))
    (group,) = [g for g in an.groups if g.prunable]
    feeds = {"X": np.random.default_rng(3).standard_normal((4, 3, 8, 8)).astype(np.float32)}
    ref = run(model, feeds)
    out = []
    for u in group.units:
        removed = np.zeros(len(an.roots), dtype=bool)
        removed[u] = True
        out.append(np.linalg.norm(run(rewrite.masked_model(model, an, removed), feeds) - ref))
    return np.array(out)


# -- magnitude family ---------------------------------------------------------------------------
@pytest.mark.parametrize("criterion", ["l1", "l2", "lamp"])
def test_zero_weight_channel_ranks_lowest(criterion):
    s = scores_of(two_conv(zero_channel), criterion)
    assert np.argmin(s) == WEAK, s


def test_lamp_scores_are_normalised_per_group():
    s = scores_of(two_conv(), "lamp")
    assert s.max() == pytest.approx(1.0) and (s > 0).all()
    np.testing.assert_allclose(weights.lamp_transform(np.array([2.0, 1.0, 3.0])),
                               [2 / 5, 1 / 6, 1.0])


def test_fpgm_duplicate_filter_ranks_lowest():
    def duplicate(w):
        f = np.random.default_rng(1).standard_normal((8, 27))
        f /= np.linalg.norm(f, axis=1, keepdims=True)  # equal norms: magnitude cannot tell
        f[WEAK] = f[2]
        w["A_W"][:] = f.reshape(8, 3, 3, 3)

    s = scores_of(two_conv(duplicate), "fpgm")
    assert set(np.argsort(s)[:2]) == {2, WEAK}, s


def test_bn_scale_zero_gamma_ranks_lowest(tmp_path):
    import torch

    from models.export import export_onnx

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        net[0].weight[WEAK] *= 3.0  # strong filter, but BatchNorm scales the channel to 0
        net[2].weight.fill_(1.0)
        net[2].weight[WEAK] = 0.0
        net[2].running_var.fill_(1.0)
    path = export_onnx(net, torch.randn(1, 3, 8, 8), tmp_path / "bn.onnx")
    model = onnx.load(path)
    assert any(n.op_type == "BatchNormalization" for n in model.graph.node)
    an = analyze_graph(Graph(model))
    (group,) = [g for g in an.groups if g.prunable]
    run = RunContext()
    s = scoring.score_units(an, "bn-scale", run=run)[group.units]
    notes = run.notes
    assert np.argmin(s) == WEAK and not notes, (s, notes)
    assert np.argmin(scoring.score_units(an, "l1")[group.units]) != WEAK


def test_bn_scale_falls_back_to_l1_and_says_so():
    model = two_conv(zero_channel)
    _, report = graphprune.compress(model, 0.25, criterion="bn-scale")
    assert report.notes == ["bn-scale: 1 of 1 prunable groups have no BatchNormalization; "
                            "scored by l1"]
    assert "note: bn-scale" in report.render()
    np.testing.assert_array_equal(scores_of(model, "bn-scale"), scores_of(model, "l1"))


def test_random_is_seeded():
    an = analyze_graph(Graph(two_conv()))
    a, b = scoring.score_units(an, "random", 1), scoring.score_units(an, "random", 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, scoring.score_units(an, "random", 2))


# -- calibration criteria -----------------------------------------------------------------------
@pytest.mark.parametrize("criterion", ["activation", "apoz", "wanda", "obd", "taylor"])
def test_dead_channel_ranks_lowest(criterion):
    model = two_conv(dead_channel)
    s = scores_of(model, criterion)
    assert np.argmin(s) == WEAK, s
    assert np.argmin(scores_of(model, "l1")) != WEAK  # its weights are the largest


def test_apoz_is_the_nonzero_fraction():
    s = scores_of(two_conv(dead_channel), "apoz", normalize="none")
    assert s[WEAK] == 0.0 and ((s > 0) & (s <= 1)).sum() == 7


@pytest.mark.parametrize("criterion", ["obd", "taylor"])
def test_least_output_change_ranks_lowest(criterion):
    model = two_conv(quiet_channel)
    measured = output_changes(model)
    assert np.argmin(measured) == WEAK
    s = scores_of(model, criterion)
    assert np.argmin(s) == WEAK, s
    assert np.argmin(scores_of(model, "l1")) != WEAK
    # both estimate the output change: their ranking follows the measured one closely
    assert _rank_corr(s, measured) > 0.8


def _rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_statistics_stream_in_bounded_chunks(monkeypatch):
    from graphprune.passes import calibration

    model = two_conv(dead_channel)
    full = scores_of(model, "wanda")
    monkeypatch.setattr(calibration, "STATS_BYTES", 1)  # one tensor per pass
    calls = []
    real = Calibration.batches
    monkeypatch.setattr(Calibration, "batches",
                        lambda self, n=None: calls.append(n) or real(self, n))
    np.testing.assert_allclose(scores_of(model, "wanda"), full)
    assert calls


def test_calibration_file_and_errors(tmp_path):
    model = two_conv(dead_channel)
    x = np.random.default_rng(5).standard_normal((10, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", X=x)
    cal = Calibration(model, tmp_path / "calib.npz", samples=100, batch=3)
    assert cal.samples == 10  # the model's batch is fixed at 4: the last 2 samples are left out
    assert [len(b["X"]) for b in cal.batches()] == [4, 4]
    cal = Calibration(dynamic_batch(model), tmp_path / "calib.npz", samples=100, batch=4)
    assert [len(b["X"]) for b in cal.batches()] == [4, 4, 2]
    assert [len(b["X"]) for b in cal.block(6)] == [6]
    _, report = graphprune.compress(model, 0.25, criterion="activation",
                                    calib=tmp_path / "calib.npz")
    # the last 4 (one fixed batch) are held back for the exact check, scoring never sees them
    assert report.calibration == {"source": str(tmp_path / "calib.npz"), "samples": 6,
                                  "held_back": 4}
    assert report.exact_check["inputs"]["shapes"] == [{"X": [4, 3, 8, 8]}]
    assert report.exact_check["inputs"]["source"].startswith("held-back calibration samples 6-9")
    np.savez(tmp_path / "wrong.npz", Y=x)
    with pytest.raises(InputError, match="no array for input 'X'"):
        graphprune.compress(model, 0.25, criterion="activation", calib=tmp_path / "wrong.npz")
    with pytest.raises(InputError, match="dtype"):
        Calibration(model, {"X": x.astype(np.int64)})


# -- aggregation, normalisation, and the pipeline ------------------------------------------------
def test_aggregate_and_normalize():
    members = [(np.array([0, 1]), np.array([1.0, 4.0])), (np.array([1, 2]), np.array([2.0, 6.0]))]
    np.testing.assert_array_equal(criteria.aggregate(3, members, "sum"), [1, 6, 6])
    np.testing.assert_array_equal(criteria.aggregate(3, members, "mean"), [1, 3, 6])
    np.testing.assert_array_equal(criteria.aggregate(3, members, "max"), [1, 4, 6])
    s = scores_of(two_conv(), "l1", normalize="mean")
    assert s.mean() == pytest.approx(1.0)
    s = scores_of(two_conv(), "l1", normalize="standard")
    assert s.mean() == pytest.approx(0.0) and s.std() == pytest.approx(1.0)
    assert scores_of(two_conv(), "l1", normalize="max").max() == pytest.approx(1.0)
    raw = scores_of(two_conv(), "l1", aggregate="max", normalize="none")
    w = two_conv().graph.initializer
    a_w = numpy_helper.to_array(next(t for t in w if t.name == "A_W"))
    np.testing.assert_allclose(raw, np.abs(a_w).sum(axis=(1, 2, 3)), rtol=1e-6)  # source wins


@pytest.mark.parametrize("criterion", WEIGHT_CRITERIA + DATA_CRITERIA)
def test_every_criterion_compresses_exactly(criterion):
    model = two_conv(dead_channel)
    _, report = graphprune.compress(model, 0.25, criterion=criterion)
    assert report.exact_check["passed"] and report.criterion == criterion
    assert [d.units_after for d in report.group_details if d.name == "A"] == [6]


def test_bad_options_are_input_errors():
    for kw in ({"criterion": "l7"}, {"aggregate": "median"}, {"normalize": "z"}):
        with pytest.raises(InputError):
            graphprune.compress(two_conv(), 0.25, **kw)


@pytest.mark.parametrize("shape, keep", [((10, 6), (0,)), ((10, 6), (1,)), ((5, 4, 3), (0, 2)),
                                         ((5, 4, 3), (1,)), ((9,), (0,))])
@pytest.mark.parametrize("power", [1, 2])
def test_power_sums_chunked_equal_whole(monkeypatch, shape, keep, power):
    """Large weights are reduced a block of rows at a time: same sums as one float64 pass
    (float32 squares are rounded once before the float64 sum: rtol 1e-6; |w| is exact)."""
    from graphprune.passes import weights as sc

    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    other = tuple(a for a in range(w.ndim) if a not in keep)
    whole = np.abs(w.astype(np.float64)) ** power
    want = whole.sum(axis=other) if other else whole
    monkeypatch.setattr(sc, "CHUNK_ELEMENTS", 7)
    np.testing.assert_allclose(sc.power_sums(w, power, keep), want,
                               rtol=1e-12 if power == 1 else 1e-6)
