"""The trained-decoder tooling (models/decoder.py, models/decoder_data.py), kept cheap.

No test trains the benchmark model (minutes); a tiny decoder trains for a few steps on the
real stdlib corpus instead. Checked: the file split is disjoint and deterministic, the
baseline and perplexity arithmetic, training lowers the loss and repeats bit for bit, the
cache is reused, and perplexity in onnxruntime equals torch's on every export (models/export.py
with both exporters, and torch's own dynamo default with external data).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from zoo import ROOT  # noqa: F401 - puts the repository root (models/) on sys.path

from models import decoder as dec
from models.decoder_data import (
    calibration_npz,
    calibration_windows,
    corpus_files,
    eval_windows,
    load_corpus,
    nll_of_logits,
    slice_of,
    spaced_windows,
    unigram_nll,
)

TINY = dec.DecoderConfig(hidden=32, layers=2, heads=4, kv_heads=2, head_dim=8, intermediate=48,
                         context=32)
TINY_TRAIN = dec.TrainConfig(steps=40, batch=8, lr=3e-3, warmup=5, log_every=10, threads=1)


@functools.cache
def corpus():
    return load_corpus()


@functools.cache
def tiny():
    """A tiny decoder trained for a few steps on the real corpus, and its training log."""
    return dec.train(TINY, TINY_TRAIN, corpus().train)


def _fake_stdlib(root: Path) -> list[str]:
    """A directory shaped like a stdlib: 23 modules, plus files the corpus must skip."""
    names = [f"mod{i:02d}.py" for i in range(20)] + ["pkg/__init__.py", "pkg/a.py", "zz.py"]
    skipped = ["site-packages/third.py", "dist-packages/x.py", "test/test_a.py",
               "pkg/tests/t.py", "idlelib/idle_test/i.py", "notes.txt"]
    for k, rel in enumerate(names + skipped):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"# {rel}\nvalue = {k}\n".encode() * (k + 3))
    return sorted(names)


# -- data ---------------------------------------------------------------------------------------
def test_split_is_by_sorted_file_and_skips_tests_and_third_party(tmp_path):
    expected = _fake_stdlib(tmp_path)
    assert corpus_files(tmp_path) == expected
    c = load_corpus(tmp_path)
    assert c.eval_files == tuple(f for i, f in enumerate(expected) if i % 10 == 0)
    assert c.calib_files == tuple(f for i, f in enumerate(expected) if i % 10 == 5)
    assert c.train_files == tuple(f for i, f in enumerate(expected) if i % 10 != 0)
    assert set(c.calib_files) <= set(c.train_files)
    assert not set(c.eval_files) & set(c.train_files)
    assert c.eval.tobytes() == b"".join((tmp_path / f).read_bytes() for f in c.eval_files)
    assert c.calib.tobytes() == b"".join((tmp_path / f).read_bytes() for f in c.calib_files)
    again = load_corpus(tmp_path)
    assert again.digest == c.digest
    (tmp_path / "mod07.py").write_bytes(b"changed = 1\n")  # any edit changes the digest
    assert load_corpus(tmp_path).digest != c.digest


def test_stdlib_split_is_disjoint_and_deterministic():
    c = corpus()
    assert len(c.eval_files) >= 10 and len(c.calib_files) >= 10
    assert not set(c.eval_files) & set(c.train_files)
    assert set(c.calib_files) <= set(c.train_files)
    assert all(slice_of(i) == "eval" for i in range(0, 100, 10))
    assert not any("site-packages" in f or "/test/" in f for f in c.train_files + c.eval_files)
    assert c.train.size > 10 * c.calib.size > 0 and c.eval.size > 0
    windows = eval_windows(c, 16, 64)
    assert windows.shape == (16, 65) and windows.dtype == np.int64
    again = load_corpus()
    assert again.digest == c.digest
    np.testing.assert_array_equal(eval_windows(again, 16, 64), windows)
    text = c.eval.tobytes()
    assert all(row.astype(np.uint8).tobytes() in text for row in windows)


def test_calibration_comes_from_calibration_files_only(tmp_path):
    c = corpus()
    path = calibration_npz(tmp_path / "calib.npz", 12, c, context=64)
    with np.load(path) as npz:
        assert npz.files == ["input_ids"]
        arr = npz["input_ids"]
    assert arr.shape == (12, 64) and arr.dtype == np.int64
    np.testing.assert_array_equal(arr, calibration_windows(c, 12, 64))
    text = c.calib.tobytes()
    assert all(row.astype(np.uint8).tobytes() in text for row in arr)


def test_spaced_windows_cover_the_stream_without_overlap():
    stream = np.arange(100, dtype=np.uint8)
    w = spaced_windows(stream, 4, 10)
    assert w[:, 0].tolist() == [0, 30, 60, 90] and w[-1, -1] == 99
    with pytest.raises(ValueError):
        spaced_windows(stream, 1, 101)


def test_unigram_and_perplexity_arithmetic():
    train = np.array([0, 0, 1], dtype=np.uint8)  # add-one: p(0) = 3/259, p(1) = 2/259
    windows = np.array([[5, 0, 1]])
    assert unigram_nll(train, windows) == pytest.approx(-(math.log(3 / 259) + math.log(2 / 259))
                                                        / 2)
    nll, n = nll_of_logits(np.zeros((2, 3, 256), np.float32), np.zeros((2, 3), np.int64))
    assert n == 6 and nll / n == pytest.approx(math.log(256))
    logits = np.full((1, 1, 256), -1e4, np.float32)
    logits[0, 0, 7] = 0.0
    assert nll_of_logits(logits, np.array([[7]]))[0] == pytest.approx(0.0, abs=1e-9)


# -- training -------------------------------------------------------------------------------------
def test_tiny_training_lowers_the_loss_and_repeats_exactly():
    model, log = tiny()
    curve = [loss for _, loss in log["curve"]]
    assert len(curve) == TINY_TRAIN.steps // TINY_TRAIN.log_every
    assert curve[-1] < curve[0] - 0.3, curve
    assert log["first_loss"] == pytest.approx(math.log(256), abs=0.5)
    again, log2 = dec.train(TINY, TINY_TRAIN, corpus().train)
    assert log2["curve"] == log["curve"]
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    c = corpus()
    windows = eval_windows(c, 8, TINY.context)
    ppl = dec.perplexity_torch(model, windows)
    assert ppl.tokens == 8 * TINY.context
    assert ppl.nll < math.log(256) - 0.3  # better than uniform on held-out text
    assert ppl.ppl == pytest.approx(math.exp(ppl.nll))


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = dec.TrainConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert dec.lr_at(0, cfg) == pytest.approx(0.1)
    assert dec.lr_at(9, cfg) == pytest.approx(1.0)
    assert dec.lr_at(55, cfg) == pytest.approx(0.55)
    assert dec.lr_at(100, cfg) == pytest.approx(0.1)
    lrs = [dec.lr_at(s, cfg) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_cache_is_written_once_then_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHPRUNE_CACHE", str(tmp_path))
    cfg = dec.TrainConfig(steps=4, batch=4, warmup=2, log_every=2, threads=1)
    model, meta, where = dec.load_or_train(TINY, cfg, corpus=corpus())
    assert where.parent == tmp_path and where.name == f"decoder-{meta['key']}"
    assert sorted(p.name for p in where.iterdir()) == ["meta.json", "model.pt"]
    assert meta["params"] == dec.count_params(model)
    assert meta["data"]["digest"] == corpus().digest and meta["steps"] == 4
    assert meta["eval"]["ppl"] == pytest.approx(math.exp(meta["eval"]["nll"]))
    assert meta["unigram"]["bits_per_byte"] > 3

    def no_training(*_a, **_k):
        raise AssertionError("trained again although the cache exists")

    monkeypatch.setattr(dec, "train", no_training)
    loaded, meta2, where2 = dec.load_or_train(TINY, cfg, corpus=corpus())
    assert where2 == where and meta2 == meta
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    (where / "model.pt").unlink()  # an incomplete entry is trained again and replaced
    monkeypatch.undo()
    monkeypatch.setenv("GRAPHPRUNE_CACHE", str(tmp_path))
    _, _, where3 = dec.load_or_train(TINY, cfg, corpus=corpus())
    assert where3 == where and (where / "model.pt").is_file()
    other = dec.TrainConfig(steps=5, batch=4, warmup=2, log_every=2, threads=1)
    assert dec.cache_dir(TINY, other, corpus()) != where


# -- exports ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["torchscript", "dynamo", "default"])
def test_onnx_perplexity_equals_torch(tmp_path, kind):
    model, _ = tiny()
    windows = eval_windows(corpus(), 6, TINY.context)
    ref = dec.perplexity_torch(model, windows)
    path = dec.exported(model, tmp_path, kind)
    if kind == "default":  # torch's default: weights beside the graph
        assert (path.parent / (path.name + ".data")).is_file()
    sess = dec.session(path)
    assert [i.name for i in sess.get_inputs()] == [dec.INPUT_NAME]
    assert sess.get_outputs()[0].name == dec.OUTPUT_NAME
    got = dec.perplexity_onnx(sess, windows, batch=4)  # batches of 4 and 2
    assert got.tokens == ref.tokens
    assert got.ppl == pytest.approx(ref.ppl, rel=1e-4)
    ids = windows[:3, :11]  # dynamic batch and sequence
    logits = sess.run(None, {dec.INPUT_NAME: ids})[0]
    assert logits.shape == (3, 11, 256)
    with torch.no_grad():
        expected = model(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    stamp = path.stat().st_mtime_ns
    assert dec.exported(model, tmp_path, kind) == path  # cached, not exported again
    assert path.stat().st_mtime_ns == stamp


def test_calibration_file_drives_graphprune_on_the_default_export(tmp_path):
    """The .npz is graphprune's --calib format; the external-data export prunes exactly."""
    import graphprune

    model, _ = tiny()
    path = dec.exported(model, tmp_path, "default")
    # 19 windows: the last 3 are held back for the exact check, 16 calibrate
    calib = calibration_npz(tmp_path / "calib.npz", 19, corpus(), context=TINY.context)
    pruned, report = graphprune.compress(path, ratio=0.5, criterion="wanda", scope="ffn",
                                         calib=calib, calib_samples=16)
    assert report.calibration["samples"] == 16 and report.calibration["held_back"] == 3
    assert report.exact_check["passed"]
    assert report.exact_check["inputs"]["source"].startswith("held-back calibration samples")
    kept = {g.name: g.units_after for g in report.group_details if g.kind == "ffn"
            and g.frozen < g.units_before}
    assert sorted(kept.values()) == [TINY.intermediate // 2] * TINY.layers
    windows = eval_windows(corpus(), 6, TINY.context)
    before = dec.perplexity_onnx(path, windows)
    after = dec.perplexity_onnx(pruned, windows)
    assert after.ppl != pytest.approx(before.ppl, rel=1e-4)  # pruning changed the model
