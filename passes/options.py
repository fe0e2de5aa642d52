"""One options object for a run: what `compress` takes as keywords, the CLI as flags, and a
plan records as its `settings`.

`Options` is frozen and validated when made (bad values raise InputError with one line, in the
order below). Every driver builds it once (`graphprune.compress`, `apply_plan`, the CLI) and
the passes read the fields they need. `to_dict()` is the plan's `settings` (the decisions a
plan replays, the recovery method included; data that only serves to make or prove them,
`calib`, `calib_samples`, `holdout` and `input_sizes`, stays out) and `from_dict()` reads it
back.

It sits in the passes layer, above the scoring pass, because a valid criterion is one the
scoring registry holds.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from graphprune.analysis import DEFAULT_SCOPE, SCOPES
from graphprune.errors import InputError
from graphprune.version import __version__

from . import scoring

ALLOCATIONS = ("uniform", "global", "sensitivity")
RECOVERY = ("none", "bias", "refit")
REFIT_ORDERS = ("sequential", "independent")
ROUNDINGS = ("down", "up")
TARGETS = ("macs", "params", "latency")


@dataclass(frozen=True)
class Options:
    """Settings of one run (see `graphprune.compress` for what each does)."""

    ratio: float = 0.4
    criterion: str = "l1"
    aggregate: str = "sum"
    normalize: str | None = None  # None: the criterion's default
    allocation: str = "uniform"
    max_group_ratio: float = 0.9
    round_to: int = 1
    rounding: str = "down"
    protect: str | None = None
    scope: tuple[str, ...] = DEFAULT_SCOPE
    seed: int = 0
    allow_io_change: bool = False
    target_macs: float | None = None
    target_params: float | None = None
    target_latency: float | None = None
    calib: str | os.PathLike | dict[str, np.ndarray] | None = field(default=None, compare=False)
    calib_samples: int = 32
    input_sizes: dict[str, list[int]] | None = None
    recover: str | None = None  # None: refit with real calibration data, else none
    refit_order: str = "sequential"
    recover_budget_mb: int = 512
    holdout: float = 0.25

    def __post_init__(self) -> None:
        scope = self.scope
        scope = (tuple(x.strip() for x in scope.split(",")) if isinstance(scope, str)
                 else tuple(scope))
        object.__setattr__(self, "scope", scope)
        self.validate()

    def validate(self) -> None:
        """Raise InputError, in one line, for the first value that cannot work."""
        if not 0.0 <= self.ratio < 1.0:
            raise InputError(f"ratio must be in [0, 1), got {self.ratio}")
        if self.round_to < 1:
            raise InputError(f"round-to must be a positive integer, got {self.round_to}")
        if self.rounding not in ROUNDINGS:
            raise InputError(f"unknown rounding '{self.rounding}' (choose from "
                             f"{', '.join(ROUNDINGS)})")
        try:
            scoring.check_options(self.criterion, self.aggregate, self.normalize)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if self.protect is not None:
            try:
                re.compile(self.protect)
            except re.error as exc:
                raise InputError(f"--protect '{self.protect}' is not a valid regular "
                                 f"expression ({exc})") from None
        if self.allocation not in ALLOCATIONS:
            raise InputError(f"unknown allocation '{self.allocation}' "
                             f"(choose from {', '.join(ALLOCATIONS)})")
        if not 0.0 < self.max_group_ratio < 1.0:
            raise InputError(f"max-group-ratio must be in (0, 1), got {self.max_group_ratio}")
        given = self._targets()
        if len(given) > 1:
            raise InputError(f"give one target, not {len(given)} "
                             f"({', '.join('--target-' + k for k in given)})")
        for metric, value in given.items():
            if not 0.0 < value <= 1.0:
                raise InputError(f"target-{metric} must be a fraction of the original in "
                                 f"(0, 1], got {value}")
        bad = sorted(set(self.scope) - set(SCOPES))
        if bad:
            raise InputError(f"unknown scope {', '.join(bad)} (choose from {', '.join(SCOPES)})")
        if self.calib_samples < 1:
            raise InputError(f"calib-samples must be a positive integer, got "
                             f"{self.calib_samples}")
        if self.recover is not None and self.recover not in RECOVERY:
            raise InputError(f"unknown recovery '{self.recover}' (choose from "
                             f"{', '.join(RECOVERY)})")
        if self.refit_order not in REFIT_ORDERS:
            raise InputError(f"unknown refit order '{self.refit_order}' (choose from "
                             f"{', '.join(REFIT_ORDERS)})")
        if not isinstance(self.recover_budget_mb, int) or self.recover_budget_mb < 1:
            raise InputError(f"recover-budget must be a positive number of MB, got "
                             f"{self.recover_budget_mb}")
        if not 0.0 <= self.holdout < 1.0:
            raise InputError(f"holdout must be a share in [0, 1), got {self.holdout}")

    def _targets(self) -> dict[str, float]:
        return {k: v for k, v in (("macs", self.target_macs), ("params", self.target_params),
                                  ("latency", self.target_latency)) if v is not None}

    # -- derived ----------------------------------------------------------------------------
    @property
    def metric(self) -> str | None:
        """The target's metric ("macs", "params", "latency"), None without a target."""
        return next(iter(self._targets()), None)

    @property
    def target(self) -> float | None:
        """The target: the fraction of the original's metric to keep."""
        return next(iter(self._targets().values()), None)

    @property
    def normalization(self) -> str:
        """The normalisation used: `normalize`, or the criterion's default."""
        return self.normalize or scoring.DEFAULT_NORMALIZE[self.criterion]

    @property
    def recovery(self) -> str:
        """The recovery run: `recover`, or by default refit when calibration data is given
        (real samples), none without it (generated inputs teach a refit nothing)."""
        if self.recover is not None:
            return self.recover
        return "refit" if self.calib is not None else "none"

    @property
    def needs_calibration(self) -> bool:
        """Whether the run feeds calibration data through the model (criterion, scan,
        recovery)."""
        return (self.criterion in scoring.NEEDS_DATA or self.allocation == "sensitivity"
                or self.recovery != "none")

    # -- plans ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The plan's `settings` (keys in this order; `graphprune` is the version)."""
        return {"criterion": self.criterion, "aggregate": self.aggregate,
                "normalize": self.normalization, "allocation": self.allocation,
                "ratio": self.ratio, "round_to": self.round_to, "rounding": self.rounding,
                "protect": self.protect, "max_group_ratio": self.max_group_ratio,
                "scope": list(self.scope), "seed": self.seed,
                "allow_io_change": self.allow_io_change,
                "target": ({"metric": self.metric, "value": self.target} if self.metric
                           else None),
                "recover": self.recovery, "refit_order": self.refit_order,
                "recover_budget_mb": self.recover_budget_mb,
                "graphprune": __version__}

    @classmethod
    def from_dict(cls, settings: dict[str, Any], **overrides: Any) -> Options:
        """Options from a plan's `settings` (missing keys take their defaults, the version is
        ignored), then `overrides`."""
        if not isinstance(settings, dict):
            raise InputError("plan settings must be a JSON object")
        names = {f.name for f in fields(cls)} - {"calib", "calib_samples", "input_sizes",
                                                 "holdout"}
        kw = {k: v for k, v in settings.items() if k in names}
        kw.setdefault("recover", "none")  # plans from before recovery recovered nothing
        target = settings.get("target")
        if target:
            if not isinstance(target, dict) or target.get("metric") not in TARGETS:
                raise InputError(f"plan settings: target {target!r} is not "
                                 "{metric: macs|params|latency, value}")
            kw[f"target_{target['metric']}"] = target.get("value")
        if not kw.get("scope"):  # none recorded: the default scope
            kw.pop("scope", None)
        try:
            return cls(**{**kw, **overrides})
        except TypeError as exc:  # a value of the wrong type in a hand-written plan
            raise InputError(f"plan settings are malformed ({exc})") from None

    @classmethod
    def build(cls, options: Options | None = None, **given: Any) -> Options:
        """`options` (or the defaults) with the keyword options `given` (None: not given)."""
        unknown = sorted(set(given) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown option{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(unknown)}")
        given = {k: v for k, v in given.items() if v is not None}
        if options is None:
            return cls(**given)
        return dataclasses.replace(options, **given) if given else options

