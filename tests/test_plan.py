"""Plans: compress --plan-out writes the decisions, `graphprune apply` replays them exactly,
and a plan refuses, in one line with exit 2, a model it was not made for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import zoo
from onnx import numpy_helper

import graphprune
from graphprune.errors import InputError
from graphprune.plan import FORMAT, VERSION, Plan, fingerprint

EXE = Path(sys.executable).parent / "graphprune"


def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(EXE), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return zoo.copy_example(tmp_path)


def test_plan_round_trip_reproduces_the_model(model):
    pruned, report = graphprune.compress(str(model), target_macs=0.6, allocation="global",
                                         criterion="fpgm")
    plan = report.plan
    d = json.loads(plan.to_json())
    assert d["format"] == FORMAT and d["version"] == VERSION
    assert d["fingerprint"] == fingerprint(onnx.load(model))
    assert d["settings"]["criterion"] == "fpgm" and d["settings"]["allocation"] == "global"
    assert d["settings"]["target"] == {"metric": "macs", "value": 0.6}
    assert sum(len(g["removed"]) for g in d["groups"]) > 0
    again, rep2 = graphprune.apply_plan(str(model), Plan.from_dict(d))
    assert rep2.exact_check["passed"] and rep2.allocation == "plan"
    assert again.SerializeToString() == pruned.SerializeToString()
    assert rep2.target["reached"] == report.target["reached"]


def test_fingerprint_ignores_weight_values_not_dims(model):
    original = onnx.load(model)
    tuned = onnx.ModelProto()
    tuned.CopyFrom(original)
    t = tuned.graph.initializer[0]
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1.5, t.name))
    assert fingerprint(tuned) == fingerprint(original)
    _, report = graphprune.compress(original, 0.3)
    graphprune.apply_plan(tuned, report.plan)  # a fine-tuned copy takes the plan
    other = onnx.load(zoo.exported("resnet_bottleneck", "torchscript"))
    assert fingerprint(other) != fingerprint(original)
    with pytest.raises(InputError, match="different model"):
        graphprune.apply_plan(other, report.plan)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(format="other"), "not a graphprune plan"),
    (lambda d: d.update(version=2), "version 2"),
    (lambda d: d.pop("groups"), "malformed"),
    (lambda d: d["groups"][0].update(name="nope"), "lacks"),
    (lambda d: d["groups"][0].update(removed=[10_000]), "out of range"),
    (lambda d: d["groups"][0].update(units=3), "units"),
])
def test_bad_plans_are_input_errors(model, edit, match):
    _, report = graphprune.compress(str(model), 0.3)
    d = report.plan.to_dict()
    edit(d)
    with pytest.raises(InputError, match=match):
        graphprune.apply_plan(str(model), d)


def test_plan_of_frozen_unit_is_refused(model):
    an = graphprune.analyze(str(model))
    frozen = next(g for g in an.groups if g.frozen)
    plan = Plan(fingerprint(onnx.load(model)),
                [{"name": frozen.name, "units": len(frozen.units), "removed": [0]}])
    with pytest.raises(InputError, match="frozen"):
        graphprune.apply_plan(str(model), plan)


def test_cli_plan_out_then_apply(model, tmp_path):
    r = cli("compress", model, "-o", "a.onnx", "--target-params", "0.5", "--criterion", "l2",
            "--plan-out", "plan.json", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = cli("apply", model, "plan.json", "-o", "b.onnx", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["exact_check"]["passed"] and rep["target"]["metric"] == "params"
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()

    other = tmp_path / "other.onnx"
    other.write_bytes(Path(zoo.exported("mobilenet_v2", "torchscript")).read_bytes())
    r = cli("apply", other, "plan.json", "-o", "c.onnx", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("graphprune: error: the plan was made for a different model")
    assert r.stderr.count("\n") == 1 and not (tmp_path / "c.onnx").exists()
    (tmp_path / "bad.json").write_text("{")
    r = cli("apply", model, "bad.json", "-o", "c.onnx", cwd=tmp_path)
    assert r.returncode == 2 and "not valid JSON" in r.stderr


def test_cli_new_flags(model, tmp_path):
    r = cli("compress", model, "-o", "a.onnx", "--criterion", "obd", "--allocation", "global",
            "--aggregate", "max", "--normalize", "max", "--calib-samples", "4", "--json",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert (rep["criterion"], rep["aggregate"], rep["normalize"], rep["allocation"]) == (
        "obd", "max", "max", "global")
    assert rep["calibration"] == {"source": "generated", "samples": 4}
    x = np.random.default_rng(0).standard_normal((6, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", input=x)
    r = cli("compress", model, "-o", "b.onnx", "--criterion", "apoz", "--calib", "calib.npz",
            "--target-macs", "0.7", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert ("calibration: 3 samples (calib.npz); 3 more held back for the exact check"
            in r.stdout)
    for bad in (["--target-macs", "0.5", "--target-params", "0.5"], ["--allocation", "x"],
                ["--calib", "missing.npz", "--criterion", "wanda"]):
        r = cli("compress", model, "-o", "c.onnx", *bad, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.startswith("graphprune: error"), (bad, r.stderr)
