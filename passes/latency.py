"""Latency of a model in onnxruntime on this machine: median of repeated timed runs.

The session uses onnxruntime's default graph optimisations (what a deployment runs), batch-1
inputs from `validation.make_inputs`, `WARMUP` untimed runs, then `REPEATS` timed runs (more
for fast models, up to `BUDGET_S` seconds). Latency targets are met by bisection on measured
latencies, so they carry this noise: the report states what was measured.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort

from . import validation

WARMUP = 3
REPEATS = 15
BUDGET_S = 1.0


def measure(model: onnx.ModelProto, feeds: dict[str, np.ndarray] | None = None) -> float:
    """Median seconds per run."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    data = validation.serialize(model)
    sess = ort.InferenceSession(data if data is not None else model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    feeds = feeds if feeds is not None else validation.make_inputs(model, batch=1)
    for _ in range(WARMUP):
        sess.run(None, feeds)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < REPEATS or (time.perf_counter() - start < BUDGET_S and len(times) < 200):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > 4 * BUDGET_S and len(times) >= 5:
            break
    return statistics.median(times)
