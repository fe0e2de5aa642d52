"""The command line, through the real installed entry point (a subprocess per call).

Success paths: the terminal table, `--report`, `--json`, `--quiet`, `analyze`. Failure paths:
every bad input exits 2 with one `graphprune: error: ...` line on stderr and no traceback,
writes nothing, and leaves the input untouched; `--verbose` adds the traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import zoo

EXE = Path(sys.executable).parent / "graphprune"
GRAPHPRUNE = str(EXE) if EXE.exists() else shutil.which("graphprune")
SUMMARY = re.compile(r"^(\d+) groups, (\d+) prunable; (\d+) of (\d+) units prunable, "
                     r"(\d+) removed at --ratio ([\d.]+)$", re.M)


def cli(*args: str | Path, cwd: Path, module: bool = False) -> subprocess.CompletedProcess:
    """Run graphprune (the console script, or `python -m graphprune.cli`) in `cwd`."""
    assert GRAPHPRUNE, "the graphprune console script is not installed (pip install -e .)"
    head = [sys.executable, "-m", "graphprune.cli"] if module else [GRAPHPRUNE]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*head, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A private copy of the bundled example model."""
    return zoo.copy_example(tmp_path)


def _files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


# -- compress: success ------------------------------------------------------------------------
def test_compress_prints_table_and_writes_model(model: Path, tmp_path: Path) -> None:
    digest = zoo.sha256(model)
    out = tmp_path / "out.onnx"
    r = cli("compress", model, "-o", out, "--ratio", "0.4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert out.exists()
    table = r.stdout.lower()
    assert "exact check" in table and "passed" in table, r.stdout
    assert "parameters" in table and "macs" in table
    assert f"wrote {out}" in r.stdout
    assert zoo.sha256(model) == digest, "the input file changed"
    assert _files(tmp_path) == {model.name, out.name}, "stray files left beside the output"
    pruned = onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    x = zoo.random_input((2, 3, 32, 32))
    assert [o.shape for o in zoo.run(out, x)] == [o.shape for o in zoo.run(model, x)]


def test_compress_as_module(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    r = cli("compress", model, "-o", out, "--criterion", "l2", "--round-to", "4",
            cwd=tmp_path, module=True)
    assert r.returncode == 0, r.stderr
    assert out.exists()
    assert "passed" in r.stdout


def test_compress_default_output_name(model: Path, tmp_path: Path) -> None:
    r = cli("compress", model.name, "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "model.pruned.onnx").exists()


def test_compress_report_file(model: Path, tmp_path: Path) -> None:
    out, rep = tmp_path / "out.onnx", tmp_path / "r.json"
    r = cli("compress", model, "-o", out, "--report", rep, "--ratio", "0.5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(rep.read_text())
    for key in ("params_before", "params_after", "macs_before", "macs_after", "blockers",
                "seconds", "exact_check", "groups"):
        assert key in data, key
    assert data["exact_check"]["passed"] is True
    assert isinstance(data["exact_check"]["max_abs_err"], float)
    assert data["exact_check"]["max_abs_err"] < 1e-3
    assert set(data["groups"]) >= {"total", "pruned", "frozen"}
    assert data["groups"]["total"] >= data["groups"]["pruned"] > 0
    assert data["params_after"] < data["params_before"]
    assert data["macs_after"] < data["macs_before"]
    assert isinstance(data["blockers"], dict)
    assert data["seconds"] > 0
    # bytes are the files' sizes on disk
    assert data["bytes_before"] == model.stat().st_size
    assert data["bytes_after"] == out.stat().st_size


def test_compress_json_stdout(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    r = cli("compress", model, "-o", out, "--json", "--protect", "stem", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)  # nothing but the JSON on stdout
    assert data["exact_check"]["passed"] is True
    protected = [g for g in data["group_details"]
                 if any("protect" in why for why in g["reasons"])]
    assert protected and all(g["units_after"] == g["units_before"] for g in protected)
    assert "…" not in r.stderr, "progress lines with --json"


def test_compress_quiet(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    r = cli("compress", model, "-o", out, "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "…" not in r.stderr, "progress lines with --quiet"
    assert out.exists()


def test_compress_input_shape_option(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    r = cli("compress", model, "-o", out, "--input-shape", "input:1x3x32x32", "--json",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["exact_check"]["passed"] is True


# -- analyze ----------------------------------------------------------------------------------
def test_analyze_table(model: Path, tmp_path: Path) -> None:
    digest = zoo.sha256(model)
    r = cli("analyze", model, "--wide", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:5] == ["group", "kind", "units", "prunable", "kept@0.4"]
    m = SUMMARY.search(r.stdout)
    assert m, r.stdout
    total, prunable, units_prunable, units, removed = map(int, m.groups()[:5])
    assert total > 0 and 0 < prunable <= total and 0 < removed < units_prunable <= units
    # one row per group (fewer than 40 here) between the header and the summary line
    assert len([ln for ln in lines[1:] if not SUMMARY.match(ln)
                and not ln.startswith("blockers")]) == total
    assert zoo.sha256(model) == digest
    assert _files(tmp_path) == {model.name}


def test_analyze_json_and_all(model: Path, tmp_path: Path) -> None:
    r = cli("analyze", model, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data) >= {"groups", "summary", "blockers"}
    assert data["summary"]["total"] == len(data["groups"]) > 0
    for g in data["groups"]:
        assert g["units"] >= 1 and 0 <= g["prunable"] <= g["units"]
        assert g["members"] and isinstance(g["frozen_reasons"], list)
    r = cli("analyze", model, "--all", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "more groups" not in r.stdout


# -- bad input --------------------------------------------------------------------------------
def _text_file(d: Path) -> Path:
    p = d / "notes.onnx"
    p.write_text("this is not a model\n")
    return p


def _truncated(d: Path) -> Path:
    p = d / "half.onnx"
    data = zoo.EXAMPLE.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


BAD = {
    "missing-file": (lambda d, m: [d / "missing.onnx", "-o", d / "out.onnx"], "no such file"),
    "text-file": (lambda d, m: [_text_file(d), "-o", d / "out.onnx"], "not a valid ONNX"),
    "truncated": (lambda d, m: [_truncated(d), "-o", d / "out.onnx"], "not a valid ONNX"),
    "ratio-1.5": (lambda d, m: [m, "-o", d / "out.onnx", "--ratio", "1.5"], "ratio"),
    "ratio-negative": (lambda d, m: [m, "-o", d / "out.onnx", "--ratio", "-0.1"], "ratio"),
    "output-is-input": (lambda d, m: [m, "-o", m], "input"),
    "output-dir-missing": (lambda d, m: [m, "-o", d / "nope" / "out.onnx"], "does not exist"),
    "unknown-criterion": (lambda d, m: [m, "-o", d / "out.onnx", "--criterion", "l7"],
                          "criterion"),
    "round-to-zero": (lambda d, m: [m, "-o", d / "out.onnx", "--round-to", "0"], "round-to"),
    "bad-input-shape": (lambda d, m: [m, "-o", d / "out.onnx", "--input-shape", "input:1xA"],
                        "input-shape"),
    # found only when validation runs the model: --quiet hides the progress lines before it
    "input-shape-mismatch": (lambda d, m: [m, "-o", d / "out.onnx", "--quiet",
                                           "--input-shape", "input:1x3x48x48"], "input"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2(case: str, model: Path, tmp_path: Path) -> None:
    make_args, words = BAD[case]
    args = make_args(tmp_path, model)
    before = {p.name: zoo.sha256(p) for p in tmp_path.iterdir()}
    r = cli("compress", *args, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("graphprune: error: "), r.stderr
    assert words.lower() in lines[0].lower(), lines[0]
    assert r.stdout == ""
    after = {p.name: zoo.sha256(p) for p in tmp_path.iterdir()}
    assert after == before, "a file was written or changed"


def test_bad_input_analyze(tmp_path: Path) -> None:
    r = cli("analyze", _truncated(tmp_path), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("graphprune: error: ") and "Traceback" not in r.stderr


def test_usage_error_exits_2(model: Path, tmp_path: Path) -> None:
    r = cli("compress", model, "--ratio", "lots", cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "invalid float value" in r.stderr
    assert _files(tmp_path) == {model.name}


def test_verbose_shows_traceback(tmp_path: Path) -> None:
    r = cli("compress", _truncated(tmp_path), "-o", tmp_path / "out.onnx", "--verbose",
            cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("graphprune: error: ")
    assert not (tmp_path / "out.onnx").exists()


# -- exit codes 1 and 3 (in process: a failure has to be injected) ------------------------------
def _main(capsys: pytest.CaptureFixture, *args: str | Path) -> tuple[int, str, str]:
    from graphprune.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_failed_exact_check_exits_1(monkeypatch: pytest.MonkeyPatch, capsys, model: Path,
                                    tmp_path: Path) -> None:
    from graphprune.passes import validation

    real = validation.exact_check

    def failing(*args, **kwargs):
        result = real(*args, **kwargs)
        result.passed = False
        result.max_abs_err = 1.0
        result.runs[0].update(passed=False, max_abs_err=1.0)
        return result

    monkeypatch.setattr(validation, "exact_check", failing)
    out = tmp_path / "out.onnx"
    code, stdout, stderr = _main(capsys, "compress", model, "-o", out, "--quiet")
    assert code == 1
    assert stderr.strip().startswith("graphprune: error: exact check failed"), stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert _files(tmp_path) == {model.name}, "a model was written after a failed check"


def test_internal_error_exits_3(monkeypatch: pytest.MonkeyPatch, capsys, model: Path,
                                tmp_path: Path) -> None:
    from graphprune.passes import rewrite

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(rewrite, "prune_model", broken)
    out = tmp_path / "out.onnx"
    code, _, stderr = _main(capsys, "compress", model, "-o", out, "--quiet")
    assert code == 3
    assert stderr.startswith("graphprune: internal error: rewrite failed: RuntimeError: "
                             "injected failure"), stderr
    assert "Traceback" not in stderr
    assert _files(tmp_path) == {model.name}
    code, _, stderr = _main(capsys, "compress", model, "-o", out, "--quiet", "--verbose")
    assert code == 3 and "Traceback" in stderr
