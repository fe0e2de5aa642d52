"""Latency in onnxruntime on this machine: medians of repeated timed runs.

Sessions use onnxruntime's default graph optimisations (what a deployment runs) and batch-1
inputs from `validation.make_inputs`. `compare` times two models *interleaved* (a run of one,
then a run of the other, `WARMUP` untimed runs first, at least `REPEATS` timed pairs and at
least `BUDGET_S` seconds, at most `MAX_RUNS`), so a load change on the machine slows both
alike and their ratio stays meaningful. Latency targets are met by bisection on these
measured ratios, so they carry the machine's noise: the report states what was measured.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort

from graphprune.errors import stage

from . import validation

WARMUP = 3
REPEATS = 15
BUDGET_S = 1.0
MAX_RUNS = 2000


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    """onnxruntime's defaults, weights as it reads them from files (`validation.session`)."""
    return validation.session(model, optimize=True)


@stage("latency measurement")
def compare(reference: onnx.ModelProto, candidate: onnx.ModelProto,
            feeds: dict[str, np.ndarray] | None = None,
            candidate_feeds: dict[str, np.ndarray] | None = None) -> tuple[float, float]:
    """Median seconds per run of `reference` and of `candidate`, timed interleaved
    (`candidate_feeds`: the candidate's own inputs, when its inputs shrank)."""
    feeds = feeds if feeds is not None else validation.make_inputs(reference, batch=1)
    both = [feeds, candidate_feeds if candidate_feeds is not None else feeds]
    sessions = [_session(reference), _session(candidate)]
    for s, f in zip(sessions, both, strict=True):
        for _ in range(WARMUP):
            s.run(None, f)
    times: list[list[float]] = [[], []]
    start = time.perf_counter()
    while len(times[0]) < MAX_RUNS and (len(times[0]) < REPEATS
                                        or time.perf_counter() - start < BUDGET_S):
        for s, ts, f in zip(sessions, times, both, strict=True):
            t = time.perf_counter()
            s.run(None, f)
            ts.append(time.perf_counter() - t)
    return statistics.median(times[0]), statistics.median(times[1])


def measure(model: onnx.ModelProto, feeds: dict[str, np.ndarray] | None = None) -> float:
    """Median seconds per run of one model."""
    return compare(model, model, feeds)[0]
