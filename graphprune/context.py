"""What one run shares across its stages: progress lines, notes for the report, the clock.

The library never prints: progress goes to the caller's callback (the CLI prints it), notes
(fallbacks a criterion used, trials a scan skipped) are collected for the report, and every
stage's time is taken here. Passes take the context instead of a callback and an
out-parameter list each.

Progress comes in two forms, both strings: lines (`say`: "scoring 648 units (taylor)") and
counted steps of a long stage (`count`: a `Step`, "Taylor probes: 12/96 units", which also
carries its stage, count and total, so a terminal can draw a bar with the time left). Steps
of one stage come at most every `STEP_INTERVAL` seconds, and always the first and the last,
so a callback that prints every string stays readable.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Progress = Callable[[str], None]
STEP_INTERVAL = 0.25


class Step(str):
    """A counted progress step: `stage`, `done` of `total` (`unit`s); as a string, the line
    "stage: done/total unit"."""

    stage: str
    done: int
    total: int
    unit: str

    def __new__(cls, stage: str, done: int, total: int, unit: str = "") -> Step:
        step = super().__new__(cls, f"{stage}: {done}/{total}{' ' + unit if unit else ''}")
        step.stage, step.done, step.total, step.unit = stage, done, total, unit
        return step


class RunContext:
    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress
        self.notes: list[str] = []
        self.figures: dict[str, object] = {}
        """Numbers a pass measured that the report shows (the blocks' raw scores)."""
        self.details: dict[str, str] = {}
        """What a stage did otherwise than asked, by what it qualifies ("criterion": taylor
        probed in blocks, or fell back): the report shows it beside the setting."""
        self.timings: dict[str, float] = {}
        self._steps: dict[str, float] = {}
        self._start = self._lap = time.perf_counter()

    def say(self, message: str) -> None:
        """A progress line (for a person watching; nothing depends on it)."""
        if self.progress is not None:
            self.progress(message)

    def count(self, stage: str, done: int, total: int, unit: str = "") -> None:
        """`done` of `total` steps of a long stage are done (for a progress bar)."""
        if self.progress is None:
            return
        now = time.perf_counter()
        last = self._steps.get(stage)
        if last is not None and done < total and now - last < STEP_INTERVAL:
            return
        self._steps[stage] = now
        self.progress(Step(stage, done, total, unit))

    def note(self, message: str) -> None:
        """A note for the report (said once however often it is noted)."""
        if message not in self.notes:
            self.notes.append(message)

    def detail(self, key: str, message: str) -> None:
        """Qualify a setting in the report (`key`: "criterion"); a later detail adds to it
        (once: a criterion computed twice says it once)."""
        known = self.details.get(key, "")
        if message not in known.split("; "):
            self.details[key] = "; ".join(x for x in (known, message) if x)

    def lap(self, stage: str) -> None:
        """Time since the previous lap, recorded as `stage`'s."""
        now = time.perf_counter()
        self.timings[stage] = round(now - self._lap, 4)
        self._lap = now

    @property
    def seconds(self) -> float:
        """Seconds since the run began."""
        return round(time.perf_counter() - self._start, 3)
