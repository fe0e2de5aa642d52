"""Fidelity on held-back calibration samples: how close models stay to the untouched original.

Recovery changes weights, so what it costs (or saves) in quality is measured, not proven: on
calibration samples that no statistic of the run was taken from, the original and each
candidate (the pruned model without recovery, the one with it) run side by side, and per
output we report

- `rel_l2`: ‖candidate − original‖ / ‖original‖ over all held-back samples;
- `cosine`: the mean over samples of the cosine between a sample's flattened outputs;
- `top1`: for float outputs whose last axis has at least two entries (class scores, token
  logits), the share of positions where both pick the same entry.

Shrunk graph outputs (allow_io_change) are compared on their kept positions.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
import onnxruntime as ort

from graphprune.analysis import Analysis

from . import prove, rewrite, validation


class Accumulator:
    """Running sums for the metrics of one output."""

    def __init__(self) -> None:
        self.ref_sq = self.err_sq = self.cos = 0.0
        self.samples = self.agree = self.positions = 0

    def add(self, a: np.ndarray, b: np.ndarray, batch: int) -> None:
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a64.shape != b64.shape:
            raise ValueError(f"outputs of shapes {a64.shape} and {b64.shape}")
        self.ref_sq += float(np.sum(a64 * a64))
        self.err_sq += float(np.sum((a64 - b64) ** 2))
        rows = batch if a64.ndim and a64.shape[0] == batch else 1
        x, y = a64.reshape(rows, -1), b64.reshape(rows, -1)
        norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
        dots = np.sum(x * y, axis=1)
        self.cos += float(np.sum(np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0),
                                          (np.abs(x - y).max(axis=1) == 0).astype(float))))
        self.samples += rows
        if a64.ndim >= 2 and a64.shape[-1] >= 2:
            self.agree += int(np.sum(np.argmax(a64, -1) == np.argmax(b64, -1)))
            self.positions += int(np.prod(a64.shape[:-1]))

    def result(self) -> dict[str, float]:
        out = {"rel_l2": float(np.sqrt(self.err_sq / self.ref_sq)) if self.ref_sq else
               float(np.sqrt(self.err_sq)),
               "cosine": self.cos / max(self.samples, 1)}
        if self.positions:
            out["top1"] = self.agree / self.positions
        return out


def fidelity(original: ort.InferenceSession,
             candidates: dict[str, tuple[ort.InferenceSession, bool]],
             batches: Iterable[dict[str, np.ndarray]],
             io: validation.IoChanges | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Per candidate label, per float output: the metrics above over `batches`. A candidate
    is (session, shrunk): a shrunk one (the pruned model, allow_io_change) takes the kept
    positions of each batch (`io`); every output is compared on its kept positions."""
    io = io or {}
    names = [o.name for o in original.get_outputs()]
    acc = {label: {n: Accumulator() for n in names} for label in candidates}
    for feeds in batches:
        batch = len(next(iter(feeds.values())))
        want = original.run(None, feeds)
        for label, (sess, shrunk) in candidates.items():
            got = sess.run(None, validation.shrink_feeds(feeds, io) if shrunk else feeds)
            for name, a, b in zip(names, want, got, strict=True):
                if np.asarray(a).dtype.kind != "f":
                    continue
                b = b if shrunk else validation.kept(b, io.get(name))
                acc[label][name].add(validation.kept(a, io.get(name)), b, batch)
    return {label: {n: a.result() for n, a in per.items() if a.samples}
            for label, per in acc.items()}


def before_and_after(model: onnx.ModelProto, an: Analysis, removed: np.ndarray,
                     pruned: onnx.ModelProto, batches: Iterable[dict[str, np.ndarray]],
                     ) -> tuple[dict, dict]:
    """Fidelity of the pruning without recovery (the masked original: equal to the plain
    rewrite, as the exact check proves; the rewrite itself when hidden units went) and of
    `pruned` (with it), against `model`, the original, on `batches`."""
    exact = removed & ~prove.inexact_roots(an)
    if (removed & ~exact).any():
        before = validation.session(rewrite.prune_model(model, an, removed), optimize=True)
        shrunk = True
    else:
        masks = rewrite.mask_overrides(model, an, removed)
        before = (validation.session(rewrite.masked_model(model, an, removed), optimize=True)
                  if masks is None else
                  validation.session(model, overrides=masks, optimize=True))
        shrunk = False
    got = fidelity(validation.session(model, optimize=True),
                   {"before": (before, shrunk),
                    "after": (validation.session(pruned, optimize=True), True)},
                   batches, rewrite.removed_io(an, removed))
    return got["before"], got["after"]
