"""torch's default exporter, as users call it: `torch.onnx.export(model, args, "net.onnx",
dynamo=True)` writes `net.onnx` plus `net.onnx.data` (external data), names as torch chose them.

Every stage that builds an onnxruntime session must work on such a model, whose weights the
CLI memory-maps: calibration statistics (activation, apoz, wanda, obd), Taylor probes, the
sensitivity scan, latency measurement, the exact check and the input diagnosis. Each
criterion, allocation and target runs through the CLI's entry point on a CNN (BatchNorm, a
dynamic batch) and a Hugging Face BERT (two inputs, as exported by default: static), and the
API takes the path and ModelProtos. A stage that fails later is named in the error; the input
is blamed only when onnxruntime itself cannot run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from graphprune.passes import calibration, latency, probe, rewrite, scoring, sensitivity, validation
from graphprune.passes.inputs import problem
from zoo import ROOT  # noqa: F401 - puts the repository root (models/) on sys.path

import graphprune
from graphprune import cli, external
from graphprune.errors import InputError
from graphprune.io import load, save_atomic

SAMPLES = 8


def _cnn():
    import torch
    from torch import nn

    class Net(nn.Module):
        """Conv-BN-ReLU (BN folded by the exporter), then a BatchNorm after a ReLU (kept)."""

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(16),
                nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
            self.head = nn.Linear(16, 10)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(image).mean(dim=(2, 3)))

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
    return net


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (model path, calibration .npz), each model in its own folder, exported once."""
    import torch

    from models.transformers.hf import hf_bert

    base = tmp_path_factory.mktemp("default-export")
    rng = np.random.default_rng(0)
    out = {}
    cnn = base / "cnn" / "net.onnx"
    cnn.parent.mkdir()
    torch.onnx.export(_cnn(), (torch.randn(2, 3, 16, 16),), str(cnn), dynamo=True,
                      dynamic_shapes={"image": {0: "batch"}})
    np.savez(cnn.with_suffix(".npz"),
             image=rng.standard_normal((SAMPLES, 3, 16, 16)).astype(np.float32))
    out["cnn"] = (cnn, cnn.with_suffix(".npz"))
    bert = base / "bert" / "net.onnx"
    bert.parent.mkdir()
    torch.manual_seed(0)
    ids, mask = torch.randint(0, 100, (2, 16)), torch.ones(2, 16, dtype=torch.long)
    mask[1, 12:] = 0
    torch.onnx.export(hf_bert().eval(), (ids, mask), str(bert), dynamo=True)
    np.savez(bert.with_suffix(".npz"), input_ids=rng.integers(0, 100, (SAMPLES, 16)),
             attention_mask=(rng.random((SAMPLES, 16)) < 0.9).astype(np.int64))
    out["bert"] = (bert, bert.with_suffix(".npz"))
    for path, _ in out.values():  # exactly as torch writes it: weights in net.onnx.data
        assert path.with_name("net.onnx.data").is_file()
        light = onnx.load(str(path), load_external_data=False)
        assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in light.graph.initializer)
    return out


def _feeds(calib: Path, model: Path) -> dict[str, np.ndarray]:
    """The calibration samples the model takes at once (a batch of 2 for the static BERT)."""
    batch = {d.dim_value for i in onnx.load(str(model), load_external_data=False).graph.input
             for d in i.type.tensor_type.shape.dim[:1]} - {0}
    n = min(batch) if batch else SAMPLES
    with np.load(calib) as npz:
        return {k: npz[k][:n] for k in npz.files}


def _run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def _check_output(src: Path, out: Path, calib: Path) -> None:
    """The pruned model loads, runs in onnxruntime and gives the original's output shapes."""
    onnx.checker.check_model(str(out), full_check=True)
    feeds = _feeds(calib, src)
    want, got = _run(src, feeds), _run(out, feeds)
    assert [a.shape for a in got] == [a.shape for a in want]
    assert all(np.isfinite(a).all() for a in got)


def _check_report(report: dict) -> None:
    assert report["exact_check"]["passed"], report["exact_check"]
    assert report["params_after"] < report["params_before"]


RUNS = ([(f"criterion-{c}", ["--criterion", c]) for c in sorted(scoring.CRITERIA)]
        + [(f"allocation-{a}", ["--allocation", a]) for a in ("uniform", "global", "sensitivity")]
        + [(f"target-{t}", [f"--target-{t}", "0.7"]) for t in ("macs", "params", "latency")])


@pytest.mark.parametrize("name", ["cnn", "bert"])
@pytest.mark.parametrize("run", [r[1] for r in RUNS], ids=[r[0] for r in RUNS])
def test_cli_every_criterion_allocation_target(exports, tmp_path, monkeypatch, capsys,
                                               name, run):
    # latency: fewer timed runs (its numbers matter less here than its sessions working)
    monkeypatch.setattr(latency, "BUDGET_S", 0.05)
    src, calib = exports[name]
    digest = {p.name: p.read_bytes() for p in src.parent.iterdir()}
    out = tmp_path / "p.onnx"
    rc = cli.main(["compress", str(src), "-o", str(out), "--calib", str(calib),
                   "--calib-samples", str(SAMPLES), "--report", str(tmp_path / "r.json"),
                   "--quiet", *run])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert err == ""
    assert {p.name: p.read_bytes() for p in src.parent.iterdir()} == digest  # untouched
    _check_report(json.loads((tmp_path / "r.json").read_text()))
    _check_output(src, out, calib)


def test_console_script_taylor_on_bert(exports, tmp_path):
    """The installed `graphprune` command itself (a subprocess), on the case first reported."""
    src, calib = exports["bert"]
    exe = Path(sys.executable).parent / "graphprune"
    out = tmp_path / "p.onnx"
    r = subprocess.run([str(exe), "compress", str(src), "-o", str(out), "--criterion", "taylor",
                        "--calib", str(calib), "--json"], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr
    _check_report(json.loads(r.stdout))
    _check_output(src, out, calib)


def test_apply_plan(exports, tmp_path, capsys):
    src, calib = exports["bert"]
    plan = tmp_path / "plan.json"
    assert cli.main(["compress", str(src), "-o", str(tmp_path / "a.onnx"), "--criterion",
                     "wanda", "--calib", str(calib), "--plan-out", str(plan), "-q"]) == 0
    # the plan recovered the kept weights (refit: the default with --calib): apply re-runs
    # that recovery on the calibration data it is given
    assert cli.main(["apply", str(src), str(plan), "-o", str(tmp_path / "b.onnx"),
                     "--calib", str(calib), "--report", str(tmp_path / "r.json"),
                     "-q"]) == 0, capsys.readouterr().err
    _check_report(json.loads((tmp_path / "r.json").read_text()))
    feeds = _feeds(calib, src)
    for a, b in zip(_run(tmp_path / "a.onnx", feeds), _run(tmp_path / "b.onnx", feeds),
                    strict=True):
        assert np.array_equal(a, b)


# -- the API: a path, a ModelProto with its data, a memory-mapped one, one without its data --
@pytest.mark.parametrize("how", ["path", "onnx.load", "mapped"])
def test_api(exports, tmp_path, how):
    for name in ("cnn", "bert"):
        src, calib = exports[name]
        model = {"path": src, "onnx.load": None, "mapped": None}[how]
        if how == "onnx.load":
            model = onnx.load(str(src))
        elif how == "mapped":
            model = load(src, external_data="map")
        with np.load(calib) as npz:
            arrays = {k: npz[k] for k in npz.files}
        pruned, report = graphprune.compress(model, 0.4, "taylor", allocation="sensitivity",
                                             calib=arrays)
        _check_report(report.to_dict())
        out = tmp_path / f"{name}-{how}.onnx"
        save_atomic(pruned, out)
        _check_output(src, out, calib)


def test_api_refuses_model_without_its_data(exports):
    src, _ = exports["cnn"]
    light = onnx.load(str(src), load_external_data=False)
    with pytest.raises(InputError, match="external data 'net.onnx.data' that was not loaded"):
        graphprune.compress(light, 0.4)
    with pytest.raises(InputError, match="not loaded"):
        graphprune.analyze(light)


# -- sessions on memory-mapped data ------------------------------------------------------------
@pytest.mark.parametrize("name", ["cnn", "bert"])
def test_sessions_on_mapped_data_match_onnxruntime_on_the_file(exports, name):
    """Optimised and diagnosis sessions on the mapped model compute what onnxruntime computes
    from the file itself (same graph, same optimisations: the same numbers, bit for bit)."""
    src, calib = exports[name]
    feeds = _feeds(calib, src)
    mapped = load(src, external_data="map")
    opts = ort.SessionOptions()
    want = ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"]).run(None,
                                                                                         feeds)
    for sess in (validation.session(mapped, optimize=True), calibration.fast_session(mapped),
                 latency._session(mapped)):
        got = sess.run(None, feeds)
        assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.add_session_config_entry("session.disable_prepacking", "1")  # as validation's
    plain = ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    want = plain.run(None, feeds)
    for sess in (validation.session(mapped, read_files=True), validation.session(mapped)):
        got = sess.run(None, feeds)
        assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))
    assert problem(mapped) is None


def test_sessions_without_the_folder_option(exports, monkeypatch):
    """onnxruntime before 1.21 cannot be told where a model from bytes finds its data files:
    every mapped weight is then handed over as an array, with the same results."""
    src, calib = exports["bert"]
    feeds = _feeds(calib, src)
    mapped = load(src, external_data="map")
    want = validation.session(mapped, optimize=True).run(None, feeds)
    monkeypatch.setattr(validation, "READS_FOLDER", False)
    graph, folder, arrays = external.located(external.split(mapped), mapped,
                                             folder_option=validation.READS_FOLDER)
    assert folder is None and set(arrays) == set(external.split(mapped).weights)
    got = validation.session(mapped, optimize=True).run(None, feeds)
    assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))


def test_split_inlines_small_mapped_integer_constants(exports):
    """torch's dynamo export puts int64 constants in the data file; the weight-free copy must
    not refer to a data file for anything (its sessions run in a temporary folder)."""
    src, _ = exports["bert"]
    mapped = load(src, external_data="map")
    ints = [t.name for t in mapped.graph.initializer if t.data_type == onnx.TensorProto.INT64
            and t.data_location == onnx.TensorProto.EXTERNAL]
    assert ints, "the export has no int64 tensor in external data any more"
    parts = external.split(mapped)
    by_name = {t.name: t for t in parts.graph.graph.initializer}
    for name in ints:
        t = by_name[name]
        if name in parts.weights:
            assert {e.value for e in t.external_data} == {external.WEIGHTS_FILE}
        else:
            assert t.data_location != onnx.TensorProto.EXTERNAL
            want = onnx.numpy_helper.to_array(
                next(x for x in onnx.load(str(src)).graph.initializer if x.name == name))
            assert np.array_equal(onnx.numpy_helper.to_array(t), want)


def test_located_over_two_folders(exports, tmp_path, monkeypatch):
    """A pruned model refers to the input's data file (unchanged weights) and to a spill file
    elsewhere (rewritten ones): onnxruntime reads the folder with most bytes, the other
    folder's tensors are handed over as arrays; the optimised session computes what the
    unoptimised one does."""
    src, calib = exports["bert"]  # its embeddings and LayerNorms stay as they are
    monkeypatch.setattr(external.Spill, "MIN_BYTES", 0)
    spill = external.Spill(tmp_path)
    try:
        mapped = load(src, external_data="map")
        pruned, _ = graphprune.compress(mapped, 0.4, spill=spill)
        files = {os.path.realpath(e.value) for t in pruned.graph.initializer
                 for e in t.external_data if e.key == "graphprune:path"}
        assert len({os.path.dirname(f) for f in files}) == 2, files
        parts = external.split(pruned)
        graph, folder, arrays = external.located(parts, pruned)
        assert folder in {os.path.dirname(f) for f in files}
        assert arrays and set(arrays) < set(parts.weights)
        named = [t for t in graph.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                 and t.name not in arrays]
        assert named and all(os.path.isfile(os.path.join(folder, dict(
            (e.key, e.value) for e in t.external_data)["location"])) for t in named)
        feeds = _feeds(calib, src)
        want = validation.session(pruned).run(None, feeds)
        got = validation.session(pruned, optimize=True).run(None, feeds)
        for a, b in zip(want, got, strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * float(np.abs(a).max()))
    finally:
        spill.close()


# -- errors name the failing stage -------------------------------------------------------------
def _boom(*_args, **_kwargs):
    raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : injected failure\nwith a second line")


STAGES = [
    ("calibration statistics", calibration, "fast_session", ["--criterion", "wanda"]),
    ("Taylor probes", probe, "fast_session", ["--criterion", "taylor"]),
    ("sensitivity scan", sensitivity, "probe_for", ["--allocation", "sensitivity"]),
    ("latency measurement", latency, "_session", ["--target-latency", "0.8"]),
    ("validation in onnxruntime", validation, "exact_check", []),
    ("rewrite", rewrite, "prune_model", []),
]


@pytest.mark.parametrize("name", ["cnn", "bert"])
@pytest.mark.parametrize(("stage", "module", "attr", "extra"), STAGES,
                         ids=[s[0] for s in STAGES])
def test_failing_stage_is_named_not_the_input(exports, tmp_path, monkeypatch, capsys, name,
                                              stage, module, attr, extra):
    """Regression: a failure after the input was loaded was reported as "the input model
    cannot be used" (the diagnosis itself failed on external data). Now the error names the
    stage (exit 3), and --verbose shows the cause."""
    src, calib = exports[name]
    monkeypatch.setattr(module, attr, _boom)
    args = ["compress", str(src), "-o", str(tmp_path / "p.onnx"), "--calib", str(calib),
            "--quiet", *extra]
    assert cli.main(args) == 3
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"graphprune: internal error: {stage} failed: RuntimeError: "
                               "[ONNXRuntimeError] : 1 : FAIL : injected failure with a second "
                               "line"), err
    assert "cannot be used" not in err and "--verbose" in err
    assert not (tmp_path / "p.onnx").exists()
    assert cli.main([*args, "--verbose"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "injected failure\nwith a second line" in err
    assert "cannot be used" not in err


def test_input_that_really_fails_is_blamed(exports, tmp_path, capsys):
    """The diagnosis reads external data as onnxruntime does: weights made NaN in the data
    file are the input's fault (exit 2), found on the memory-mapped model."""
    src, calib = exports["cnn"]
    bad = tmp_path / "net.onnx"
    bad.write_bytes(src.read_bytes())
    data = bytearray(src.with_name("net.onnx.data").read_bytes())
    data[:64] = b"\xff" * 64  # the first tensor's first values: NaN
    bad.with_name("net.onnx.data").write_bytes(bytes(data))
    assert cli.main(["compress", str(bad), "-o", str(tmp_path / "p.onnx"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "the input model cannot be used" in err and "NaN" in err, err
    assert problem(load(bad, external_data="map")) is not None
