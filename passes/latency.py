"""Latency: measured in onnxruntime on this machine, or by the user's own measure, and the
search that meets a latency target without being fooled by noise or fixed overhead.

Measures (`Meter`):

- `OrtMeter` (default): onnxruntime with its default graph optimisations (what a deployment
  runs), the seeded inputs of `validation.make_inputs`. Two models are timed *interleaved*
  (a run of one, then a run of the other; `WARMUP` untimed runs first, at least `REPEATS`
  timed pairs and `BUDGET_S` seconds, at most `MAX_RUNS`), so a load change on the machine
  slows both alike. The ratio is the medians' ratio; its noise is the standard error of the
  median of the paired ratios (1.2533 · 1.4826 · MAD / √n).
- `CallableMeter`: `latency(path) -> seconds` of the API, or `--latency-cmd` (a
  `CommandLatency`: a shell command with `{model}` in it, whose printed number is parsed), so
  TensorRT or a phone can judge. Each candidate is written to a temporary file and measured
  once; the original is measured twice first, and the spread of the two is the noise.

The search (`search`) over prefixes k of the removal order (0: nothing removed, n: all it
may remove), latency non-increasing in k:

1. The floor: the latency with all n removed. If that buys less than `FLAT_NOISE` times the
   noise (at least `MIN_GAIN`), the curve is flat: latency here is fixed overhead, nothing
   is removed, and the report says so.
2. A target below the floor (plus twice the noise) cannot be met; the search aims instead at
   the floor plus twice the noise: the smallest prefix whose latency is within noise of the
   floor, so no unit is removed that buys no measurable speed.
3. Bisection on measured ratios, `MAX_MEASUREMENTS` at most; measurements are noisy, so the
   decision uses the non-increasing (isotonic) fit of every measurement so far, and the
   result is the smallest measured prefix whose fit is at or under the aim, or above it by
   no more than the target's tolerance (the least removal that meets it).

Whatever happened, the report states it (`target`: noise, floor, flat, measured by), and
the latency's fixed part (a of a least-squares fit latency ≈ a + b · MACs over the
measurements) is noted when it is at least `OVERHEAD_NOTE`.
"""

from __future__ import annotations

import math
import re
import shlex
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from graphprune.errors import InputError, one_line, stage

from . import validation

WARMUP = 3
REPEATS = 15
BUDGET_S = 1.0
MAX_RUNS = 2000
MIN_NOISE = 0.02
"""Noise assumed at least: the latency ratio of two sessions of one model moves this much."""
FLAT_NOISE = 3.0
MIN_GAIN = 0.05
MAX_MEASUREMENTS = 12
OVERHEAD_NOTE = 0.3
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass
class Measured:
    """Seconds per run of the reference and the candidate, and the ratio's noise."""

    before: float
    after: float
    noise: float

    @property
    def ratio(self) -> float:
        return self.after / self.before if self.before > 0 else 1.0


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    """onnxruntime's defaults, weights as it reads them from files (`validation.session`)."""
    return validation.session(model, optimize=True)


class OrtMeter:
    """Interleaved onnxruntime timing on this machine (see the module)."""

    name = "onnxruntime on this machine"

    @stage("latency measurement")
    def compare(self, reference: onnx.ModelProto, candidate: onnx.ModelProto,
                feeds: dict[str, np.ndarray],
                candidate_feeds: dict[str, np.ndarray] | None = None) -> Measured:
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
        return Measured(statistics.median(times[0]), statistics.median(times[1]),
                        ratio_noise(times[0], times[1]))


def ratio_noise(before: list[float], after: list[float]) -> float:
    """Standard error of the median of paired ratios, relative (MAD-based)."""
    q = np.asarray(after) / np.maximum(np.asarray(before), 1e-12)
    mid = float(np.median(q))
    mad = float(np.median(np.abs(q - mid)))
    return 1.2533 * 1.4826 * mad / math.sqrt(len(q)) / max(mid, 1e-12)


class CallableMeter:
    """The user's measure: `fn(path) -> seconds` of a model written to a temporary file."""

    def __init__(self, fn: Callable[[str], float], name: str = "the given latency function"):
        self.fn, self.name = fn, name
        self.reference: list[float] = []

    def _time(self, model: onnx.ModelProto) -> float:
        from graphprune.io import save_atomic

        with tempfile.TemporaryDirectory(prefix="graphprune-latency-") as tmp:
            path = Path(tmp) / "model.onnx"
            save_atomic(model, path)
            try:
                value = float(self.fn(str(path)))
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - the user's measure failed: say so
                raise InputError(f"{self.name} failed: {one_line(exc)}") from exc
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"{self.name} gave {value!r}, not a positive time")
        return value

    def compare(self, reference: onnx.ModelProto, candidate: onnx.ModelProto,
                feeds: dict[str, np.ndarray],
                candidate_feeds: dict[str, np.ndarray] | None = None) -> Measured:
        if not self.reference:  # twice: the spread of its times is the noise
            self.reference += [self._time(reference), self._time(reference)]
        after = self._time(candidate)
        r = self.reference
        return Measured(statistics.mean(r), after, (max(r) - min(r)) / statistics.mean(r))


@dataclass
class CommandLatency:
    """`--latency-cmd`: run `command` with `{model}` replaced by the model's path and read
    the time it prints: the last number on the last line of its output that matches
    `regex` (its first group, when it has one), else the last number it prints at all.
    Only ratios of these numbers are used, so their unit does not matter."""

    command: str
    regex: str | None = None
    timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        if "{model}" not in self.command:
            raise InputError("--latency-cmd must contain {model} (the path of the model to "
                             "time)")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise InputError(f"--latency-regex '{self.regex}' is not a valid regular "
                                 f"expression ({exc})") from None

    @property
    def name(self) -> str:
        return f"--latency-cmd '{self.command}'"

    def __call__(self, path: str) -> float:
        argv = [a.replace("{model}", path) for a in shlex.split(self.command)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InputError(f"--latency-cmd could not run: {one_line(exc)}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            raise InputError(f"--latency-cmd exited with {done.returncode}: {tail[0][:200]}")
        return parse_time(done.stdout + "\n" + done.stderr, self.regex)


def parse_time(text: str, regex: str | None = None) -> float:
    """The time in a measuring tool's output (see CommandLatency)."""
    lines = text.splitlines()
    if regex is not None:
        found = [m for line in lines if (m := re.search(regex, line))]
        if not found:
            raise InputError(f"--latency-cmd printed no line matching --latency-regex "
                             f"'{regex}'")
        m = found[-1]
        numbers = re.findall(NUMBER, m.group(1) if m.groups() else m.group(0))
    else:
        numbers = re.findall(NUMBER, "\n".join(lines))
    if not numbers:
        raise InputError("--latency-cmd printed no number")
    return float(numbers[-1])


# -- the search -----------------------------------------------------------------------------
@dataclass
class Search:
    """What the latency search measured and decided."""

    k: int
    measured: dict[int, Measured] = field(default_factory=dict)
    noise: float = MIN_NOISE
    floor: float = 1.0
    flat: bool = False
    reachable: bool = True
    aim: float = 1.0

    def fitted(self) -> dict[int, float]:
        """The non-increasing (isotonic) fit of the measured ratios, by prefix."""
        ks = sorted(self.measured)
        return dict(zip(ks, isotonic_decreasing([self.measured[k].ratio for k in ks]),
                        strict=True))


def search(measure: Callable[[int], Measured], n: int, target: float, tolerance: float = 0.0,
           progress: Callable[[int, int], None] | None = None) -> Search:
    """The prefix of the removal order that meets `target` (see the module): the least
    removal whose fitted latency is within `tolerance` (relative) above the aim."""
    out = Search(0, {0: Measured(1.0, 1.0, 0.0)})

    steps = min(MAX_MEASUREMENTS, 1 + math.ceil(math.log2(n + 1)))

    def at(k: int) -> float:
        if k not in out.measured:
            out.measured[k] = measure(k)
            if progress is not None:
                progress(min(len(out.measured) - 1, steps - 1), steps)
        return out.fitted()[k]

    if n == 0:
        return out
    at(n)
    floor = out.floor = out.measured[n].ratio
    out.noise = max(MIN_NOISE, out.measured[n].noise)
    if 1.0 - floor < max(MIN_GAIN, FLAT_NOISE * out.noise):
        out.flat = True
        return out
    out.aim = target
    if target < floor + 2 * out.noise:
        out.reachable = False
        out.aim = min(1.0, floor + 2 * out.noise)
    lo, hi = 0, n
    while lo < hi and len(out.measured) <= steps:
        mid = (lo + hi) // 2
        if at(mid) <= out.aim:
            hi = mid
        else:
            lo = mid + 1
    fit = out.fitted()
    out.k = min((k for k, v in fit.items() if v <= out.aim * (1 + tolerance)), default=n)
    if progress is not None:
        progress(steps, steps)
    return out


def isotonic_decreasing(values: list[float]) -> list[float]:
    """The non-increasing sequence closest to `values` in least squares (pool adjacent
    violators)."""
    blocks: list[list[float]] = []  # [mean, weight]
    for v in values:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            (a, wa), (b, wb) = blocks[-2], blocks[-1]
            blocks[-2:] = [[(a * wa + b * wb) / (wa + wb), wa + wb]]
    return [m for m, w in blocks for _ in range(int(w))]


def overhead(points: list[tuple[float, float]]) -> float | None:
    """a of the least-squares line latency ≈ a + b · MACs through (MACs, latency) fractions:
    the part of the latency that does not shrink with MACs (None: too few points)."""
    if len({m for m, _ in points}) < 3:
        return None
    m, lat = np.array(points, dtype=np.float64).T
    b, a = np.polyfit(m, lat, 1)
    return float(min(1.0, max(0.0, a)))
