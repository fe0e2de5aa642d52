"""Recovery end to end: every model of models/ × both torch exporters passes the exact check
with `recover="refit"` (against the updated, masked model), every sink of a removed unit is
refit, bias-compensated or listed with its reason; torch's default export (external data)
through the command line; plans that recovered replay with `apply --calib`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import zoo
from test_transformers_e2e import GQA
from test_transformers_e2e import exported as transformer_export
from zoo import MODEL_NAMES, exported

import graphprune
import models
from graphprune import cli

EXPORTERS = ("torchscript", "dynamo")
SAMPLES = 4
"""Generated calibration samples: 3 to fit on, 1 held back (runtime, not quality)."""


def _check(report: graphprune.Report, pruned: onnx.ModelProto) -> dict:
    assert report.exact_check["passed"], report.exact_check
    rec = report.recovery
    assert rec["method"] == "refit" and rec["order"] == "sequential", rec
    assert rec["samples_used"] == 3 and rec["samples_held_back"] == 1
    assert rec["sinks_refit"], rec
    assert set(rec["ridge"]) == set(rec["sinks_refit"])
    assert rec["fidelity_before"].keys() == rec["fidelity_after"].keys()
    onnx.checker.check_model(pruned, full_check=True)
    return rec


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_refit_on_every_cnn(name: str, exporter: str) -> None:
    path = exported(name, exporter)
    pruned, report = graphprune.compress(str(path), 0.4, recover="refit",
                                         calib_samples=SAMPLES)
    rec = _check(report, pruned)
    assert report.params_after < report.params_before
    # only transposed convolutions have no input moments here (U-Net's upsampling)
    assert all("ConvTranspose" in why for why in rec["sinks_not_recovered"].values()), rec
    assert bool(rec["sinks_not_recovered"]) == (name == "unet")
    for batch in (1, 3):
        x = zoo.random_input(zoo.input_shape(name, batch))
        got = zoo.run(pruned, x)
        assert all(o.shape[0] == batch and np.isfinite(o).all() for o in got)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", list(models.TRANSFORMER_MODELS))
def test_refit_on_every_transformer(name: str, exporter: str) -> None:
    """Heads (the attention output projection) and FFN units (the down projection)."""
    path = transformer_export(name, exporter)
    pruned, report = graphprune.compress(str(path), 0.5 if name in GQA else 0.4,
                                         recover="refit", calib_samples=SAMPLES)
    rec = _check(report, pruned)
    assert not rec["sinks_not_recovered"], rec
    kinds = {d.kind for d in report.group_details if d.units_after < d.units_before}
    assert "ffn" in kinds


# -- torch's default export, the command line, plans ------------------------------------------
@pytest.fixture(scope="module")
def default_export(tmp_path_factory) -> tuple[Path, Path]:
    """A CNN exported as users do (dynamo, net.onnx + net.onnx.data), and real-looking
    calibration data (smooth images: not the generated noise)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.ReLU(),
                        nn.Conv2d(32, 16, 3, stride=2), nn.ReLU(), nn.Flatten(1),
                        nn.Linear(16 * 7 * 7, 10)).eval()
    base = tmp_path_factory.mktemp("recovery-export")
    path = base / "net.onnx"
    torch.onnx.export(net, (torch.randn(2, 3, 16, 16),), str(path), dynamo=True,
                      dynamic_shapes={"input": {0: "batch"}})
    assert path.with_name("net.onnx.data").is_file()
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, 16)
    phase = rng.uniform(0, 6, (64, 3, 1, 1))
    images = np.sin(3 * grid[None, None, :, None] + phase) * np.cos(2 * grid + phase)
    name = onnx.load(str(path), load_external_data=False).graph.input[0].name
    calib = base / "calib.npz"
    np.savez(calib, **{name: (images + 0.1 * rng.standard_normal(images.shape)).astype(
        np.float32)})
    return path, calib


def test_cli_refit_on_external_data_and_apply(default_export, tmp_path, capsys) -> None:
    src, calib = default_export
    before = {p.name: p.read_bytes() for p in src.parent.iterdir()}
    out, plan, rep = tmp_path / "a.onnx", tmp_path / "plan.json", tmp_path / "r.json"
    assert cli.main(["compress", str(src), "-o", str(out), "--calib", str(calib),
                     "--calib-samples", "64", "--ratio", "0.5", "--plan-out", str(plan),
                     "--report", str(rep), "--html", str(tmp_path / "r.html")]) == 0
    text = capsys.readouterr().out
    assert "recovery: refit (sequential): 3 layers refit" in text
    assert {p.name: p.read_bytes() for p in src.parent.iterdir()} == before
    report = json.loads(rep.read_text())
    rec = report["recovery"]
    # the last calibration samples are the exact check's (report.calibration.held_back); of
    # the 64 used for the run, the last quarter is recovery's held-back share
    cal = report["calibration"]
    assert cal["samples"] <= 64
    assert rec["samples_held_back"] == round(0.25 * cal["samples"])
    assert rec["samples_used"] + rec["samples_held_back"] == cal["samples"]
    assert (f"{rec['samples_used']} calibration samples, {rec['samples_held_back']} held back"
            in " ".join(text.split()))
    assert report["exact_check"]["passed"]
    (output,) = rec["fidelity_after"]
    assert rec["fidelity_after"][output]["rel_l2"] < rec["fidelity_before"][output]["rel_l2"]
    assert json.loads(plan.read_text())["settings"]["recover"] == "refit"
    assert '<section id="recovery">' in (tmp_path / "r.html").read_text()
    # apply re-runs the recovery on the data it is given: the same model again
    again = tmp_path / "b.onnx"
    assert cli.main(["apply", str(src), str(plan), "-o", str(again), "--calib", str(calib),
                     "--calib-samples", "64", "-q"]) == 0
    x = np.load(calib)[onnx.load(str(src), load_external_data=False).graph.input[0].name][:5]
    (a,), (b,) = (ort.InferenceSession(str(p)).run(None, {"input": x}) for p in (out, again))
    np.testing.assert_array_equal(a, b)
    # without the data: one line, exit 2, nothing written; or explicitly without recovery
    none = tmp_path / "c.onnx"
    assert cli.main(["apply", str(src), str(plan), "-o", str(none), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--calib" in err and "--recover none" in err
    assert not none.exists()
    assert cli.main(["apply", str(src), str(plan), "-o", str(none), "--recover", "none",
                     "-q"]) == 0
    (c,) = ort.InferenceSession(str(none)).run(None, {"input": x})
    assert not np.allclose(a, c)


def test_cli_recovery_flags_and_defaults(default_export, tmp_path, capsys) -> None:
    src, calib = default_export
    out = tmp_path / "o.onnx"
    # no --calib: nothing recovered, and the report says how to get it
    assert cli.main(["compress", str(src), "-o", str(out)]) == 0
    assert ("recovery: none (no calibration data: give real samples (--calib) to refit the "
            "kept weights (--recover refit))") in " ".join(capsys.readouterr().out.split())
    # bias, independent refit, a budget that leaves every layer to bias compensation
    for flags, want in ((["--recover", "bias"], "recovery: bias: 3 layers bias-compensated"),
                        (["--refit-order", "independent"], "recovery: refit (independent)"),
                        (["--recover-budget", "1"], "1 layers refit, 2 bias-compensated only"),
                        (["--recover", "none"], "recovery: none (--recover none)")):
        assert cli.main(["compress", str(src), "-o", str(out), "--calib", str(calib),
                         "--ratio", "0.5", *flags]) == 0, flags
        text = capsys.readouterr().out
        assert want in " ".join(text.split()), (flags, text)
    assert "over the budget of 1 MB" not in text  # (--recover none ran last)
    for bad, words in ((["--holdout", "1.5"], "holdout must be a share in [0, 1)"),
                       (["--recover-budget", "0"], "recover-budget must be a positive")):
        assert cli.main(["compress", str(src), "-o", str(out), *bad]) == 2
        assert words in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's choices
        cli.main(["compress", str(src), "-o", str(out), "--recover", "all"])
    assert "invalid choice" in capsys.readouterr().err
