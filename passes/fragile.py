"""Uniform allocation's fragile-group check: do not cut a group whose removal alone wrecks the
output.

Uniform allocation assumes every group tolerates the same ratio. Real models break that: in
PP-OCRv4's recogniser, removing 10% of the units of any one of 8 of its 23 groups alone
takes character accuracy from 1.00 to 0.005-0.97 while the other 15 stay ≥ 0.977
(bench/bench_recogniser.py). The check measures each group alone at the count uniform
allocation gives it (its lowest-scored units masked through the gates of `probe.py`: one
session, every group a trial, batched along the batch axis) on `SAMPLES` calibration
samples, the relative L2 error of all outputs against the original, as the sensitivity scan
does; one forward per group and sample.

**Fragile** is relative to the other groups: a group whose error is at least `FACTOR` times
the median group's. The median is the robust reference (up to half the groups may be fragile
without moving it far; the usual outlier tests, Hampel's median ± 3 MAD or Tukey's fences,
flag nothing on the recogniser, whose fragile groups are a quarter of the groups, not a few
outliers). Why 2: removals of separate groups add their errors roughly in quadrature, so a
group at twice the median does the damage of four typical groups together, and one at three
times the median (a bar often used) cannot exist where outputs saturate (the recogniser's
probabilities: the median group is at 0.30, a destroyed output at 0.89). A fragile group is
kept whole (under a target the others make up for it), and the report names each one with its
measured error against the median. Needs at least `MIN_GROUPS` measured groups (with fewer, a
median says little) and real calibration data to mean much: on by default when `--calib` is
given (`--fragile-check on` checks on generated inputs too; `off` never checks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from graphprune.analysis import Analysis
from graphprune.context import RunContext
from graphprune.errors import stage

from .calibration import Calibration
from .probe import measure, probe_for
from .selection import ranked

SAMPLES = 8
"""Calibration samples each group's trial is measured on."""
FACTOR = 2.0
"""A group is fragile when its error is at least this multiple of the median group's."""
MIN_GROUPS = 5
"""Fewer measured groups than this: no median to compare with, nothing is flagged."""


@dataclass
class Check:
    """What the check measured: the error of each group alone at its count, the fragile
    groups among them, the reference (the median error) and the cost."""

    errors: dict[int, float] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    fragile: list[int] = field(default_factory=list)
    median: float = 0.0
    samples: int = 0
    seconds: float = 0.0
    """Not in the notes: a report holds no clock reading outside its timings (the same
    input gives the same report); the check's time is the selection stage's."""

    def notes(self, an: Analysis) -> list[str]:
        """The report's lines: one for what was measured, one naming the fragile groups."""
        out = [f"fragile-group check: {len(self.errors)} groups each alone at its uniform "
               f"count on {self.samples} calibration samples ({len(self.errors)} trials); "
               f"median output error {self.median:.3g}"]
        if self.fragile:
            named = ", ".join(f"{an.groups[gi].name} ({self.counts[gi]} of "
                              f"{len(an.groups[gi].units)} units: {self.errors[gi]:.3g}, "
                              f"{self.errors[gi] / max(self.median, 1e-30):.1f}x)"
                              for gi in self.fragile)
            out.append(f"uniform: kept whole {len(self.fragile)} fragile groups, whose removal "
                       f"alone gives at least {FACTOR:g}x the median group's output error: "
                       f"{named} (--fragile-check off cuts them)")
        return out


@stage("fragile-group check")
def check(model: onnx.ModelProto, an: Analysis, scores: np.ndarray, counts: dict[int, int],
          calib: Calibration, run: RunContext) -> Check:
    """Measure every group with a count > 0 alone at that count; flag the fragile ones."""
    start = time.perf_counter()
    probe = probe_for(model, an, calib.static_batch, calib.sample_axes)
    groups = [gi for gi, c in sorted(counts.items())
              if c > 0 and set(an.groups[gi].prunable) <= probe.units]
    samples = min(SAMPLES, calib.samples)
    if calib.static_batch:
        samples = max(calib.static_batch, samples - samples % calib.static_batch)
    out = Check(counts={gi: counts[gi] for gi in groups}, samples=samples)
    if not groups:
        return out
    trials = [dict.fromkeys(ranked(an.groups[gi], scores)[:counts[gi]], 0.0) for gi in groups]

    run.say(f"fragile-group check: {len(trials)} groups on {samples} samples")

    def report(done: int, runs: int) -> None:
        run.count("fragile-group check", done, runs, "trial runs")

    change, norm = measure(probe, calib.block(samples), trials, report)
    errors = np.sqrt(change / max(norm, 1e-30))
    out.errors = {gi: float(e) for gi, e in zip(groups, errors, strict=True)}
    out.fragile, out.median = fragile(out.errors)
    out.seconds = time.perf_counter() - start
    return out


def fragile(errors: dict[int, float]) -> tuple[list[int], float]:
    """The groups whose error is at least FACTOR × the median error, and the median (no
    group when fewer than MIN_GROUPS were measured or the median is 0)."""
    if not errors:
        return [], 0.0
    median = float(np.median(list(errors.values())))
    if len(errors) < MIN_GROUPS or median <= 0.0:
        return [], median
    return [gi for gi, e in errors.items() if e >= FACTOR * median], median
