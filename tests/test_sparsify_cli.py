"""`graphprune sparsify` as users run it: torch's default export (external data), the CLI's
report/JSON/HTML, plans replayed by `apply` (alone, and after `compress` in one plan), a
transformer and a trained decoder, bad input as one line."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from graphprune.passes.sparse_masks import Pattern, check_pattern
from test_decoder import TINY, TINY_TRAIN, corpus
from zoo import EXAMPLE, ROOT, sha256

import graphprune
from graphprune import cli

BERT = ROOT / "models" / "examples" / "bert_tiny.onnx"


def _cnn() -> torch.nn.Module:
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1, groups=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 32), nn.ReLU(),
                         nn.Linear(32, 10)).eval()


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> tuple[Path, Path]:
    """torch's default dynamo export (net.onnx + net.onnx.data) and a calibration file."""
    base = tmp_path_factory.mktemp("sparsify-cnn")
    path = base / "net.onnx"
    torch.onnx.export(_cnn(), (torch.randn(2, 3, 12, 12),), str(path), dynamo=True,
                      dynamic_shapes=({0: "batch"},))
    assert (base / "net.onnx.data").is_file()
    name = onnx.load(str(path), load_external_data=False).graph.input[0].name
    rng = np.random.default_rng(0)
    np.savez(base / "calib.npz", **{name: rng.standard_normal((40, 3, 12, 12)).astype(
        np.float32)})
    return path, base / "calib.npz"


def _sparse_weights(path: Path, report: dict) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return {r["node"]: inits[r["weight"]] for r in report["sparsity"]["layers"]}


def test_cli_sparsegpt_2_4_on_an_external_data_export(cnn, tmp_path, capsys) -> None:
    src, calib = cnn
    before = sha256(src), sha256(src.with_name("net.onnx.data"))
    out, rep, html = tmp_path / "s.onnx", tmp_path / "r.json", tmp_path / "r.html"
    rc = cli.main(["sparsify", str(src), "--method", "sparsegpt", "--pattern", "2:4",
                   "--calib", str(calib), "--calib-samples", "24", "-o", str(out),
                   "--report", str(rep), "--html", str(html), "--quiet"])
    assert rc == 0 and capsys.readouterr().out == ""
    assert (sha256(src), sha256(src.with_name("net.onnx.data"))) == before
    assert (tmp_path / "s.onnx.data").is_file()  # external data stays external
    report = json.loads(rep.read_text())
    sp = report["sparsity"]
    assert [r["op"] for r in sp["layers"]] == ["Conv", "Gemm"]  # 3-channel conv, head: dense
    assert {r["reason"] for r in sp["skipped"]} == {
        "3 input channels are not a multiple of 4 (2:4 needs whole groups)",
        "kind head is outside the scope (final layer: add 'head' to --scope)"}
    assert sp["calibration"] == {"source": str(calib), "samples": 18}  # 24, a quarter back
    assert sp["holdout"] == {"source": "calibration samples 18..23", "samples": 6}
    for (node, w), row in zip(_sparse_weights(out, report).items(), sp["layers"], strict=True):
        assert row["input_axis"] == 1  # Conv [O, C, kh, kw] and Gemm transB [N, K]
        assert check_pattern(w, Pattern(2, 4), 0.5, row_axis=0, k_axis=1) is None
        assert row["zeros"] >= w.size // 2, node
    assert "no exact check" in sp["check"] and report["exact_check"] == {}
    page = html.read_text()
    assert "sparsity pattern verified" in page and "reconstruction error" in page
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((3, 3, 12, 12)).astype(np.float32)
    assert sess.run(None, {sess.get_inputs()[0].name: x})[0].shape == (3, 10)


def test_sparsify_plan_replays_exactly(cnn, tmp_path, capsys) -> None:
    src, calib = cnn
    out, plan = tmp_path / "s.onnx", tmp_path / "plan.json"
    assert cli.main(["sparsify", str(src), "--method", "wanda", "--scope", "conv,linear,head",
                     "--calib", str(calib), "-o", str(out), "--plan-out", str(plan),
                     "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    saved = json.loads(plan.read_text())
    assert saved["groups"] == [] and saved["sparsity"]["method"] == "wanda"
    assert saved["sparsity"]["layers"] == [r["node"] for r in report["sparsity"]["layers"]]
    again = tmp_path / "again.onnx"
    assert cli.main(["apply", str(src), str(plan), "--calib", str(calib), "-o", str(again),
                     "--quiet"]) == 0
    a, b = _sparse_weights(out, report), _sparse_weights(again, report)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # another calibration file gives other weights: the replay did read --calib
    other = tmp_path / "other.npz"
    with np.load(calib) as z:
        np.savez(other, **{k: z[k][::-1].copy() for k in z.files})
    third = tmp_path / "third.onnx"
    assert cli.main(["apply", str(src), str(plan), "--calib", str(other), "-o", str(third),
                     "--quiet"]) == 0
    c = _sparse_weights(third, report)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_compress_then_sparsify_in_one_plan(tmp_path) -> None:
    """`compress --plan-out` then `sparsify --base-plan --plan-out`: `apply` of the second
    plan on the original gives the two-step result, weight for weight."""
    src = tmp_path / "model.onnx"
    src.write_bytes(EXAMPLE.read_bytes())
    pruned, width = tmp_path / "pruned.onnx", tmp_path / "width.json"
    assert cli.main(["compress", str(src), "--ratio", "0.3", "-o", str(pruned),
                     "--plan-out", str(width), "--quiet"]) == 0
    sparse, both = tmp_path / "sparse.onnx", tmp_path / "both.json"
    assert cli.main(["sparsify", str(pruned), "--pattern", "2:4", "--base-plan", str(width),
                     "-o", str(sparse), "--plan-out", str(both), "--quiet"]) == 0
    plan = json.loads(both.read_text())
    assert plan["groups"] == json.loads(width.read_text())["groups"] and plan["sparsity"]
    replay, rep = tmp_path / "replay.onnx", tmp_path / "replay.json"
    assert cli.main(["apply", str(src), str(both), "-o", str(replay), "--report", str(rep),
                     "--quiet"]) == 0
    report = json.loads(rep.read_text())
    assert report["exact_check"]["passed"]  # the width part, proven as always
    assert report["sparsity"]["layers"] and report["params_after"] < report["params_before"]
    want = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(sparse)).graph.initializer}
    got = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(replay)).graph.initializer}
    assert want.keys() == got.keys()
    assert all(np.array_equal(want[k], got[k]) for k in want)
    with pytest.raises(graphprune.InputError, match="different model"):
        graphprune.apply_plan(str(pruned), str(both))


def test_transformer_every_method_and_pattern() -> None:
    for method in ("magnitude", "wanda", "sparsegpt"):
        for pattern in ("unstructured", "2:4"):
            _, report = graphprune.sparsify(str(BERT), pattern=pattern, method=method,
                                            calib_samples=8)
            sp = report.sparsity
            assert len(sp["layers"]) == 12 and all(r["sparsity"] >= 0.5 for r in sp["layers"])
            assert [r["node"] for r in sp["skipped"]] == ["/pooler/Gemm"]
            assert all(0.8 < f["cosine"] <= 1.0 for f in sp["fidelity"].values()), (method,
                                                                                     pattern)


@functools.cache
def _tiny_decoder():
    from models import decoder as dec

    return dec.train(TINY, TINY_TRAIN, corpus().train)[0]


def test_trained_decoder_sparsegpt_beats_magnitude(tmp_path) -> None:
    """The tiny trained decoder (torch's default export, external data): at 2:4 SparseGPT's
    held-back perplexity increase is below magnitude's."""
    from models import decoder as dec
    from models.decoder_data import calibration_npz, eval_windows

    path = dec.exported(_tiny_decoder(), tmp_path, "default")
    calib = calibration_npz(tmp_path / "calib.npz", 24, corpus(), context=TINY.context)
    windows = eval_windows(corpus(), 8, TINY.context)
    dense = dec.perplexity_onnx(path, windows).ppl
    ppl = {}
    for method in ("magnitude", "sparsegpt"):
        out = tmp_path / f"{method}.onnx"
        assert cli.main(["sparsify", str(path), "--pattern", "2:4", "--method", method,
                         "--calib", str(calib), "--calib-samples", "16", "-o", str(out),
                         "--quiet"]) == 0
        assert out.with_name(out.name + ".data").is_file()
        ppl[method] = dec.perplexity_onnx(out, windows).ppl
    assert dense < ppl["sparsegpt"] < ppl["magnitude"]


def test_cli_bad_input_is_one_line(tmp_path, capsys) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(EXAMPLE.read_bytes())
    for args, text in ((["--pattern", "3:2"], "0 < N < M"),
                       (["--pattern", "2:4", "--sparsity", "0.6"], "contradicts"),
                       (["--method", "nope"], "unknown method"),
                       (["--calib", str(tmp_path / "missing.npz"), "--method", "wanda"],
                        "cannot read calibration data")):
        assert cli.main(["sparsify", str(src), "-o", str(tmp_path / "o.onnx"), *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and text in err and err.startswith("graphprune: error:")
    assert not (tmp_path / "o.onnx").exists()
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"format": "graphprune-plan", "version": 1,
                                "fingerprint": graphprune.plan.fingerprint(
                                    graphprune.load(src)),
                                "groups": [], "sparsity": {"method": "magnitude",
                                                           "pattern": "2:4",
                                                           "layers": ["no_such_node"]}}))
    assert cli.main(["apply", str(src), str(plan), "-o", str(tmp_path / "o.onnx")]) == 2
    assert "plan sparsifies layer 'no_such_node'" in capsys.readouterr().err
