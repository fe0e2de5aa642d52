"""Latency targets that do not mislead: a flat (fixed-overhead) latency removes nothing and
says so, a target below the floor stops where removing more buys no measurable speed, and the
user's own measure (`--latency-cmd`, `latency=`) is the judge. Measures here are fake and
deterministic (a script printing a number that follows the model's MACs): no timing in
tests."""

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
from graphprune.passes import latency, validation

import graphprune
from graphprune.errors import InputError
from graphprune.metrics import count_macs

EXE = Path(sys.executable).parent / "graphprune"
FAKE = '''\
import sys
import onnx
from graphprune.metrics import count_macs
from graphprune.passes.validation import make_inputs

path, macs0, fixed = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
model = onnx.load(path)
ms = fixed + (1 - fixed) * count_macs(model, make_inputs(model, batch=1)) / macs0
print("warming up: 3 runs of 10")
print(f"mean latency = {ms:.6f} ms (median {ms:.6f} ms), 200 runs")
'''


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return zoo.copy_example(tmp_path)


def _macs(path: Path) -> int:
    m = onnx.load(path)
    return count_macs(m, validation.make_inputs(m, batch=1))


def _compress(model: Path, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess,
                                                                 dict]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([str(EXE), "compress", str(model), "-o", "out.onnx", "--json", *args],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    return r, (json.loads(r.stdout) if r.returncode == 0 else {})


def _fake_cmd(tmp_path: Path, model: Path, fixed: float) -> str:
    script = tmp_path / "fake_latency.py"
    script.write_text(FAKE)
    return f"{sys.executable} {script} {{model}} {_macs(model)} {fixed}"


def test_latency_command_is_the_judge(model, tmp_path):
    """latency = 0.2 + 0.8 · MACs: a target of 0.6 keeps half the MACs."""
    cmd = _fake_cmd(tmp_path, model, 0.2)
    r, rep = _compress(model, tmp_path, "--target-latency", "0.6", "--latency-cmd", cmd,
                       "--latency-regex", r"mean latency = (\S+) ms")
    assert r.returncode == 0, r.stderr
    t = rep["target"]
    assert t["metric"] == "latency" and t["met"] and not t["flat"] and t["reachable"]
    assert t["measured_by"] == f"--latency-cmd '{cmd}'"
    assert abs(t["reached"] - 0.6) <= 0.012
    assert rep["macs_ratio"] == pytest.approx(0.5, abs=0.02)
    assert rep["exact_check"]["passed"]
    # without the regex the last number printed is the run count, not a time: it never
    # changes, so the latency looks flat and nothing is removed
    r, rep = _compress(model, tmp_path, "--target-latency", "0.6", "--latency-cmd", cmd)
    assert r.returncode == 0 and rep["target"]["flat"], r.stderr


def test_flat_latency_removes_nothing_and_says_so(model, tmp_path):
    cmd = _fake_cmd(tmp_path, model, 0.99)  # 1% of the time follows the MACs
    r, rep = _compress(model, tmp_path, "--target-latency", "0.7", "--latency-cmd", cmd,
                       "--latency-regex", r"median (\S+) ms")
    assert r.returncode == 0, r.stderr
    assert rep["target"]["flat"] and not rep["target"]["met"]
    assert rep["params_after"] == rep["params_before"] and rep["macs_ratio"] == 1.0
    assert any("does not follow pruning" in n and "nothing was removed" in n
               for n in rep["notes"]), rep["notes"]
    assert not any("--max-group-ratio" in n for n in rep["notes"])


def test_target_below_the_floor_stops_where_speed_stops(model, tmp_path):
    """latency = 0.6 + 0.4 · MACs: 0.3 cannot be met; the plan stops within noise of the
    floor instead of removing every unit it may."""
    cmd = _fake_cmd(tmp_path, model, 0.6)
    r, rep = _compress(model, tmp_path, "--target-latency", "0.3", "--latency-cmd", cmd,
                       "--latency-regex", r"mean latency = (\S+)")
    assert r.returncode == 0, r.stderr
    t = rep["target"]
    assert not t["met"] and not t["reachable"] and not t["flat"]
    floor_macs = (t["floor"] - 0.6) / 0.4
    assert t["reached"] <= t["floor"] + 2 * t["noise"] + 1e-3
    assert rep["macs_ratio"] > floor_macs + 0.05  # units that buy no speed stayed
    notes = " ".join(rep["notes"])
    assert "below the floor" in notes and "60% of the latency does not shrink" in notes


def test_api_callable_and_errors(model, tmp_path):
    calls = []
    macs0 = _macs(model)

    def measure(path: str) -> float:
        calls.append(path)
        m = onnx.load(path)
        return 1e-3 * (0.1 + 0.9 * count_macs(m, validation.make_inputs(m, batch=1)) / macs0)

    _, report = graphprune.compress(str(model), target_latency=0.5, latency=measure)
    assert report.target["met"] and report.target["measured_by"] == "the given latency function"
    assert 3 <= len(calls) <= 2 + latency.MAX_MEASUREMENTS
    assert "latency" in report.render()
    with pytest.raises(InputError, match="needs a latency target"):
        graphprune.compress(str(model), ratio=0.3, latency=measure)
    with pytest.raises(InputError, match="failed: boom"):
        graphprune.compress(str(model), target_latency=0.5,
                            latency=lambda p: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(InputError, match="not a positive time"):
        graphprune.compress(str(model), target_latency=0.5, latency=lambda p: 0.0)


@pytest.mark.parametrize("args, words", [
    (["--latency-cmd", "true"], "must contain {model}"),
    (["--latency-cmd", "false {model}"], "exited with 1"),
    (["--latency-cmd", "echo no time here {model}", "--latency-regex", "mean (\\d+)"],
     "no line matching"),
    (["--latency-regex", "x"], "needs --latency-cmd"),
])
def test_bad_latency_commands_are_one_line_errors(model, tmp_path, args, words):
    r, _ = _compress(model, tmp_path, "--target-latency", "0.6", *args)
    assert r.returncode == 2 and words in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_parse_time():
    out = "trtexec\n[I] GPU Compute Time: min = 0.9 ms, mean = 1.25 ms, median = 1.2 ms\ndone"
    assert latency.parse_time(out, r"mean = ([\d.]+) ms") == 1.25
    assert latency.parse_time("12 runs\n3.5e-4\n") == 3.5e-4
    with pytest.raises(InputError, match="no number"):
        latency.parse_time("nothing")


def test_search_is_monotone_and_finds_the_floor():
    """A curve with measurement noise that makes it rise in places: the decision follows
    its non-increasing fit, and a flat curve removes nothing."""
    n = 200
    noise = np.random.default_rng(0).normal(0, 0.03, n + 1)

    def curve(k: int) -> latency.Measured:
        return latency.Measured(1.0, 1.0 - 0.6 * k / n + noise[k], 0.01)

    found = latency.search(curve, n, 0.7, 0.0)
    assert found.reachable and not found.flat
    fit = found.fitted()
    values = list(fit.values())
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert fit[found.k] <= 0.7 and all(v > 0.7 for k, v in fit.items() if k < found.k)
    assert abs(found.k - n / 2) <= 20
    flat = latency.search(lambda k: latency.Measured(1.0, 0.99 + noise[k] / 10, 0.01), n, 0.7)
    assert flat.flat and flat.k == 0
    assert latency.isotonic_decreasing([1, 0.8, 0.9, 0.5, 0.6, 0.1]) == pytest.approx(
        [1, 0.85, 0.85, 0.55, 0.55, 0.1])
