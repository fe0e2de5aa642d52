"""Bad input never ends in a traceback, a written file or a touched input.

Every case runs the command line in-process (`graphprune.cli.main`) and checks the contract of
the README's exit-code table: exit 2, exactly one `graphprune: error: …` line on stderr naming
the problem, nothing on stdout, and the directory byte-for-byte as it was (no output, no
report, no temporary file, the input and its external data untouched). `test_cli.py` covers
the installed entry point itself; the API cases check the exception types.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import Builder
from onnx import TensorProto, helper, numpy_helper

import graphprune
from graphprune import cli
from graphprune.errors import first_line
from graphprune.io import save_atomic


# -- fixtures and checks ----------------------------------------------------------------------
def small_model(opset: int = 17) -> onnx.ModelProto:
    """Conv → Relu → Conv with weights large enough (> 1 kB) to go to external data."""
    b = Builder(opset)
    x = b.input("X", [1, 3, 8, 8])
    a = b.conv(x, 3, 16, name="A")
    b.conv(b.op("Relu", [a]), 16, 8, name="B")
    return b.build("B_out")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(small_model().SerializeToString())
    return path


@pytest.fixture
def external(tmp_path: Path) -> Path:
    """A model whose weights live in `ext.onnx.data` beside it."""
    path = tmp_path / "ext.onnx"
    save_atomic(small_model(), path, external=True)
    assert (tmp_path / "ext.onnx.data").is_file()
    return path


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under `directory` (hidden temporaries too) with its content hash."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def run_cli(capsys, *args) -> tuple[int, str, str]:
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(capsys, tmp_path: Path, *args, words: str, code: int = 2) -> str:
    """The command exits `code` with one error line containing `words`; nothing changes."""
    before = snapshot(tmp_path)
    got, out, err = run_cli(capsys, *args)
    assert got == code, (got, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("graphprune: error: "), lines[0]
    assert re.search(words, lines[0], re.I), lines[0]
    assert out == ""
    assert snapshot(tmp_path) == before, "a file was written, changed or removed"
    return lines[0]


def compress(*args):
    return ("compress", *args, "--quiet")


# -- input files ------------------------------------------------------------------------------
def test_missing_file(capsys, tmp_path):
    assert_refused(capsys, tmp_path, *compress(tmp_path / "nope.onnx", "-o", tmp_path / "o.onnx"),
                   words="no such file")


def test_directory_as_model(capsys, tmp_path):
    (tmp_path / "d.onnx").mkdir()
    assert_refused(capsys, tmp_path, *compress(tmp_path / "d.onnx", "-o", tmp_path / "o.onnx"),
                   words="is a directory")


@pytest.mark.parametrize("content", [b"", b"hello, I am not a model\n", bytes(range(256)) * 4,
                                     b"\x89PNG\r\n\x1a\n" + bytes(100)])
def test_not_onnx(capsys, tmp_path, content):
    path = tmp_path / "junk.onnx"
    path.write_bytes(content)
    assert_refused(capsys, tmp_path, *compress(path, "-o", tmp_path / "o.onnx"),
                   words="not a valid ONNX model")


@pytest.mark.parametrize("keep", [0.02, 0.3, 0.5, 0.8, 0.97, 0.999])
def test_truncated(capsys, tmp_path, model, keep):
    data = model.read_bytes()
    model.write_bytes(data[: int(len(data) * keep)])
    assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "o.onnx"),
                   words="not a valid ONNX model|cannot be used|opset")


def test_corrupted_wire_format(capsys, tmp_path, model):
    data = bytearray(model.read_bytes())
    data[2:18] = b"\xff" * 16
    model.write_bytes(bytes(data))
    assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "o.onnx"),
                   words="not a valid ONNX model")


def test_corrupted_weights_give_nan(capsys, tmp_path, model):
    """0xff bytes inside a weight parse fine but are NaN: no rewrite of it can be proven."""
    m = onnx.load(model)
    w = next(t for t in m.graph.initializer if t.name == "A_W")
    w.raw_data = b"\xff" * 16 + w.raw_data[16:]
    model.write_bytes(m.SerializeToString())
    assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "o.onnx"),
                   words="NaN or infinite outputs")


def test_corrupted_weight_data(capsys, tmp_path, model):
    """Valid protobuf, broken content: a weight whose bytes do not match its dims."""
    m = onnx.load(model)
    w = next(t for t in m.graph.initializer if t.name == "A_W")
    w.raw_data = w.raw_data[: len(w.raw_data) // 2]
    model.write_bytes(m.SerializeToString())
    assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "o.onnx"),
                   words="cannot be used.*onnxruntime")


def test_model_onnxruntime_cannot_run(capsys, tmp_path, model):
    """A weight whose shape contradicts the convolution: the input's fault, not ours."""
    m = onnx.load(model)
    w = next(t for t in m.graph.initializer if t.name == "B_W")
    w.CopyFrom(numpy_helper.from_array(np.zeros((8, 5, 3, 3), np.float32), "B_W"))
    model.write_bytes(m.SerializeToString())
    assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "o.onnx"),
                   words="cannot be used|ONNX shape inference")


def test_missing_external_data(capsys, tmp_path, external):
    (tmp_path / "ext.onnx.data").unlink()
    assert_refused(capsys, tmp_path, *compress(external, "-o", tmp_path / "o.onnx"),
                   words="external data file 'ext.onnx.data'.*missing")


def test_short_external_data(capsys, tmp_path, external):
    data = tmp_path / "ext.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    assert_refused(capsys, tmp_path, *compress(external, "-o", tmp_path / "o.onnx"),
                   words="external data")


def test_external_data_outside_the_model_directory(capsys, tmp_path, external):
    m = onnx.load(external, load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = str(tmp_path / "ext.onnx.data")  # absolute: refused by onnx
    external.write_bytes(m.SerializeToString())
    assert_refused(capsys, tmp_path, *compress(external, "-o", tmp_path / "o.onnx"),
                   words="external data")


@pytest.mark.parametrize("opset", [7, 9, 10])
def test_opset_too_old(capsys, tmp_path, opset):
    b = Builder(opset)
    b.op("Relu", [b.input("X", [1, 4])])
    path = tmp_path / "old.onnx"
    path.write_bytes(b.build(b.nodes[-1].output[0]).SerializeToString())
    line = assert_refused(capsys, tmp_path, *compress(path, "-o", tmp_path / "o.onnx"),
                          words=f"opset {opset} is older than the supported 11")
    assert "version_converter" in line
    assert_refused(capsys, tmp_path, "analyze", path, words="opset")


def test_no_default_opset(capsys, tmp_path, model):
    m = onnx.load(model)
    del m.opset_import[:]
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    model.write_bytes(m.SerializeToString())
    assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "o.onnx"),
                   words="no default-domain opset")


def test_string_input(capsys, tmp_path):
    """An input the validation cannot generate data for is refused, not called our bug."""
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["X"], ["Y"])], "s",
        [helper.make_tensor_value_info("X", TensorProto.STRING, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.STRING, [1, 4])]),
        opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "s.onnx"
    path.write_bytes(m.SerializeToString())
    assert_refused(capsys, tmp_path, *compress(path, "-o", tmp_path / "o.onnx"),
                   words="element type")


# -- options ----------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", ["1", "1.5", "-0.1", "nan", "inf", "-inf"])
def test_ratio_outside_range(capsys, tmp_path, model, ratio):
    assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "o.onnx",
                                                f"--ratio={ratio}"),
                   words=r"ratio must be in \[0, 1\)")


@pytest.mark.parametrize("spec, words", [
    ("X:1x3x8x9", "dim 3 is 9, the model fixes it at 8"),
    ("nope:1x3x8x8", "'nope', which is not a graph input (inputs: X)"),
    ("X:1x3x8", "has 3 dims, the model declares 4"),
    ("X:0x3x8x8", "dim 0 must be positive"),
    ("X:1xAx8x8", "expected NAME:DxDxD"),
])
def test_input_shape_that_does_not_fit(capsys, tmp_path, model, spec, words):
    """Told before any work, in one line: not as onnxruntime's complaint about the model."""
    assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "o.onnx",
                                                "--input-shape", spec), words=re.escape(words))


def test_ratio_not_a_number(capsys, tmp_path, model):
    """argparse's own usage error: exit 2, the usage lines, no traceback, nothing written."""
    before = snapshot(tmp_path)
    code, out, err = run_cli(capsys, *compress(model, "--ratio", "lots"))
    assert code == 2 and "invalid float value" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_bad_protect_regex(capsys, tmp_path, model):
    assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "o.onnx", "--protect", "("),
                   words="--protect.*regular expression")


# -- calibration data (--calib) --------------------------------------------------------------
CALIB = {
    "wrong-name": ({"Y": np.zeros((4, 3, 8, 8), np.float32)}, "no array for input 'X'"),
    "wrong-shape": ({"X": np.zeros((4, 3, 4, 4), np.float32)}, r"shape \[4, 3, 4, 4\]"),
    "wrong-rank": ({"X": np.zeros((4, 3, 8), np.float32)}, "expects samples × 3x8x8"),
    "wrong-dtype": ({"X": np.zeros((4, 3, 8, 8), np.int64)}, "dtype int64"),
    "no-samples": ({"X": np.zeros((0, 3, 8, 8), np.float32)}, "non-empty"),
}


@pytest.mark.parametrize("case", list(CALIB))
def test_bad_calibration_data(capsys, tmp_path, model, case):
    arrays, words = CALIB[case]
    np.savez(tmp_path / "calib.npz", **arrays)
    assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "o.onnx", "--criterion",
                                               "wanda", "--calib", tmp_path / "calib.npz"),
                   words=words)


@pytest.mark.parametrize("what", ["missing", "not-npz", "directory"])
def test_unreadable_calibration_file(capsys, tmp_path, model, what):
    path = tmp_path / "calib.npz"
    if what == "not-npz":
        path.write_text("not an archive")
    elif what == "directory":
        path.mkdir()
    assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "o.onnx", "--criterion",
                                               "wanda", "--calib", path),
                   words="cannot read calibration data")


def test_good_calibration_data_is_used(capsys, tmp_path, model):
    np.savez(tmp_path / "calib.npz", X=np.random.default_rng(0).standard_normal(
        (4, 3, 8, 8)).astype(np.float32))
    code, _, err = run_cli(capsys, *compress(model, "-o", tmp_path / "o.onnx", "--criterion",
                                             "wanda", "--calib", tmp_path / "calib.npz"))
    assert code == 0, err


# -- output paths -----------------------------------------------------------------------------
def test_output_is_input(capsys, tmp_path, model):
    assert_refused(capsys, tmp_path, *compress(model, "-o", model), words="input")


def test_output_is_input_through_a_relative_path(capsys, tmp_path, model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    assert_refused(capsys, tmp_path, *compress("model.onnx", "-o", "sub/../model.onnx"),
                   words="input")


def test_output_is_a_symlink_to_the_input(capsys, tmp_path, model):
    (tmp_path / "link.onnx").symlink_to(model)
    assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "link.onnx"),
                   words="input")


def test_output_is_a_hard_link_to_the_input(capsys, tmp_path, model):
    os.link(model, tmp_path / "hard.onnx")
    assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "hard.onnx"),
                   words="input")


def test_output_data_file_would_overwrite_input_data(capsys, tmp_path, external):
    """`-o ext2.onnx` writes `ext2.onnx.data`; if that is the input's data file, refuse."""
    m = onnx.load(external, load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "out.onnx.data"
    external.write_bytes(m.SerializeToString())
    (tmp_path / "ext.onnx.data").rename(tmp_path / "out.onnx.data")
    assert_refused(capsys, tmp_path, *compress(external, "-o", tmp_path / "out.onnx"),
                   words="output data path .* is the input file out.onnx.data")


def test_output_directory_missing(capsys, tmp_path, model):
    assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "no" / "o.onnx"),
                   words="does not exist")


def test_output_under_a_regular_file(capsys, tmp_path, model):
    """Unwritable for root too: a path whose directory is a file."""
    assert_refused(capsys, tmp_path, *compress(model, "-o", model / "o.onnx"),
                   words="not a directory|does not exist")


def test_output_is_a_directory(capsys, tmp_path, model):
    (tmp_path / "d").mkdir()
    assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "d"),
                   words="is a directory")


def test_output_in_read_only_directory(capsys, tmp_path, model):
    """Permission bits bind ordinary users: exit 2. Root (as in CI containers) is not bound
    by them, so there the write must simply succeed: we assert what each really gets."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.geteuid() == 0:
            code, _, err = run_cli(capsys, *compress(model, "-o", ro / "o.onnx"))
            assert code == 0, err
            assert (ro / "o.onnx").is_file()
            assert sorted(p.name for p in ro.iterdir()) == ["o.onnx"], "temporary file left"
        else:
            assert_refused(capsys, tmp_path, *compress(model, "-o", ro / "o.onnx"),
                           words="not writable")
    finally:
        ro.chmod(0o755)


def test_written_files_get_ordinary_permissions(capsys, tmp_path, model):
    """Temporary files are private (0600); the renamed output must not stay so."""
    code, _, err = run_cli(capsys, *compress(model, "-o", tmp_path / "o.onnx",
                                             "--report", tmp_path / "r.json"))
    assert code == 0, err
    umask = os.umask(0)
    os.umask(umask)
    for name in ("o.onnx", "r.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


# -- report paths -----------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["missing-dir", "under-file", "directory", "input",
                                   "output"])
def test_unwritable_report_path(capsys, tmp_path, model, where):
    (tmp_path / "d").mkdir()
    report = {"missing-dir": tmp_path / "no" / "r.json", "under-file": model / "r.json",
              "directory": tmp_path / "d", "input": model, "output": tmp_path / "o.onnx"}[where]
    assert_refused(capsys, tmp_path,
                   *compress(model, "-o", tmp_path / "o.onnx", "--report", report),
                   words="report")


@pytest.mark.parametrize("where", ["input", "output", "report"])
def test_plan_out_would_overwrite_another_file(capsys, tmp_path, model, where):
    plan = {"input": model, "output": tmp_path / "o.onnx", "report": tmp_path / "r.json"}[where]
    assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "o.onnx", "--report",
                                               tmp_path / "r.json", "--plan-out", plan),
                   words="plan path")


def test_apply_output_would_overwrite_the_plan(capsys, tmp_path, model):
    plan = tmp_path / "plan.json"
    code, _, err = run_cli(capsys, *compress(model, "-o", tmp_path / "o.onnx", "--plan-out",
                                             plan))
    assert code == 0, err
    (tmp_path / "o.onnx").unlink()
    assert_refused(capsys, tmp_path, "apply", model, plan, "-o", plan, "--quiet",
                   words="is the input file plan.json")


def test_report_would_overwrite_input_data(capsys, tmp_path, external):
    assert_refused(capsys, tmp_path, *compress(external, "-o", tmp_path / "o.onnx", "--report",
                                               tmp_path / "ext.onnx.data"), words="input")


# -- --verbose --------------------------------------------------------------------------------
def test_verbose_shows_the_traceback(capsys, tmp_path, model):
    m = onnx.load(model)
    w = next(t for t in m.graph.initializer if t.name == "A_W")
    w.raw_data = w.raw_data[:16]
    model.write_bytes(m.SerializeToString())
    before = snapshot(tmp_path)
    code, out, err = run_cli(capsys, *compress(model, "-o", tmp_path / "o.onnx", "--verbose"))
    assert code == 2
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("graphprune: error: ")
    assert snapshot(tmp_path) == before


# -- the Python API ---------------------------------------------------------------------------
def test_api_raises_input_error(tmp_path, model):
    with pytest.raises(graphprune.InputError, match="expected an onnx.ModelProto"):
        graphprune.compress(42)
    with pytest.raises(graphprune.InputError, match="not a valid ONNX"):
        graphprune.load(b"\x08\x07\xff\xff\xff")
    with pytest.raises(graphprune.InputError, match="no such file"):
        graphprune.analyze(tmp_path / "none.onnx")
    with pytest.raises(graphprune.InputError, match="ratio"):
        graphprune.compress(model, ratio=1.0)
    m = onnx.load(model)
    del m.graph.node[0].input[:]
    with pytest.raises(graphprune.InputError):
        graphprune.compress(m)


def test_line_break_in_a_name_stays_one_line(capsys, tmp_path, model):
    """A fuzzed or hand-made name may hold a line break; the error still is one line."""
    m = onnx.load(model)
    m.graph.node[-1].input[1] = "B\n_W"
    model.write_bytes(m.SerializeToString())
    line = assert_refused(capsys, tmp_path, *compress(model, "-o", tmp_path / "o.onnx"),
                          words="reads 'B")
    assert "B\\n_W" in line
    with pytest.raises(graphprune.InputError) as info:
        graphprune.compress(m)
    assert "\n" not in str(info.value)


def test_api_leaves_the_model_alone_on_failure(model):
    m = onnx.load(model)
    before = m.SerializeToString()
    with pytest.raises(graphprune.InputError):
        graphprune.compress(m, ratio=0.5, protect="[")
    assert m.SerializeToString() == before


def test_save_atomic_does_not_modify_the_model(tmp_path):
    """Writing external data must not turn the caller's in-memory weights into references."""
    m = small_model()
    before = m.SerializeToString()
    save_atomic(m, tmp_path / "x.onnx", external=True)
    assert m.SerializeToString() == before
    back = graphprune.load(tmp_path / "x.onnx")
    assert {t.name: numpy_helper.to_array(t).tobytes() for t in back.graph.initializer} == {
        t.name: numpy_helper.to_array(t).tobytes() for t in m.graph.initializer}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.onnx", "x.onnx.data"]


def test_external_data_input_gives_external_data_output(capsys, tmp_path, external):
    code, _, err = run_cli(capsys, *compress(external, "-o", tmp_path / "o.onnx", "--ratio",
                                             "0.5"))
    assert code == 0, err
    assert (tmp_path / "o.onnx.data").is_file()
    out = onnx.load(tmp_path / "o.onnx", load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in out.graph.initializer)
    graphprune.load(tmp_path / "o.onnx")  # its data is complete


def test_first_line_of_an_error():
    """Checker and shape-inference failures are quoted by their first line (context lines
    follow it); an empty message gives the error's type, never an IndexError."""
    assert first_line(ValueError("Field 'shape' is missing.\n\n==> Context: node n")) == (
        "Field 'shape' is missing.")
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(RuntimeError("\n  detail on line two")) == "detail on line two"
