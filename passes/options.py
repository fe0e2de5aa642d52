"""One options object for a run: what `compress` takes as keywords, the CLI as flags, and a
plan records as its `settings`.

`Options` is frozen and validated when made (bad values raise InputError with one line, in the
order below). Every driver builds it once (`graphprune.compress`, `apply_plan`, the CLI) and
the passes read the fields they need. `to_dict()` is the plan's `settings` (the decisions a
plan replays, the recovery method included; data that only serves to make or prove them,
`calib`, `calib_samples`, `holdout`, `input_sizes`, `inputs` and the `latency` measure, stays
out) and `from_dict()` reads it back.

It sits in the passes layer, above the scoring pass, because a valid criterion is one the
scoring registry holds.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from graphprune.analysis import DEFAULT_SCOPE, SCOPES
from graphprune.errors import InputError
from graphprune.version import __version__

from . import depth, scoring
from .sparse_layers import DEFAULT_KINDS, KINDS
from .sparse_masks import parse_pattern, resolve_sparsity

ALLOCATIONS = ("uniform", "global", "sensitivity")
RECOVERY = ("none", "bias", "refit")
REFIT_ORDERS = ("sequential", "independent")
ROUNDINGS = ("down", "up")
FRAGILE_CHECKS = ("auto", "on", "off")
TRIALS = ("plain", "compensated")
"""How the sensitivity scan measures a trial: the removed units zeroed, or zeroed with their
sinks' biases compensated as recovery would (passes/compensation.py)."""
TARGETS = ("macs", "params", "latency")
METHODS = ("magnitude", "wanda", "sparsegpt")
"""Ways `sparsify` chooses the weights to zero (passes/sparsify.py)."""
DATA_METHODS = ("wanda", "sparsegpt")


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
    latency: Callable[[str], float] | None = field(default=None, compare=False)
    """The latency measure of a latency target: seconds of the model at a path (the CLI's
    --latency-cmd is one); None: onnxruntime on this machine."""
    input_sizes: dict[str, list[int]] | None = None
    inputs: str | os.PathLike | dict[str, np.ndarray] | None = field(default=None,
                                                                       compare=False)
    """Real inputs for the exact check (passes/inputs.py): arrays by input name, or .npz."""
    block_criterion: str = depth.DEFAULT_BLOCK_CRITERION
    # sparsify (zeroing weights in place; see passes/sparsify.py)
    sparsity: float | None = None  # None: 0.5, or what an N:M pattern implies
    pattern: str = "unstructured"
    method: str = "magnitude"
    sparse_scope: tuple[str, ...] = DEFAULT_KINDS
    sequential: bool = True
    holdout: float = 0.25
    fragile_check: str = "auto"
    """Uniform allocation keeps groups whose removal alone wrecks the output (passes/fragile.py):
    auto (with `calib` given), on (on generated inputs too) or off."""
    recover: str | None = None  # None: refit with real calibration data, else none
    refit_order: str = "sequential"
    recover_budget_mb: int = 512
    sensitivity_trials: str | None = None
    """How the sensitivity scan measures a trial (TRIALS); None: compensated when recovery
    runs, plain otherwise (`trials`)."""

    def __post_init__(self) -> None:
        for name in ("scope", "sparse_scope"):
            v = getattr(self, name)
            object.__setattr__(self, name, tuple(x.strip() for x in v.split(","))
                               if isinstance(v, str) else tuple(v))
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
        if self.latency is not None and not callable(self.latency):
            raise InputError("latency must be a function of a model path returning seconds")
        if self.latency is not None and self.metric != "latency":
            raise InputError("a latency measure (--latency-cmd, latency=) needs a latency "
                             "target (--target-latency)")
        if self.block_criterion not in depth.BLOCK_CRITERIA:
            raise InputError(f"unknown block criterion '{self.block_criterion}' (choose from "
                             f"{', '.join(depth.BLOCK_CRITERIA)})")
        if self.fragile_check not in FRAGILE_CHECKS:
            raise InputError(f"unknown fragile-check '{self.fragile_check}' (choose from "
                             f"{', '.join(FRAGILE_CHECKS)})")
        if self.calib_samples < 1:
            raise InputError(f"calib-samples must be a positive integer, got "
                             f"{self.calib_samples}")
        if self.recover is not None and self.recover not in RECOVERY:
            raise InputError(f"unknown recovery '{self.recover}' (choose from "
                             f"{', '.join(RECOVERY)})")
        if self.sensitivity_trials is not None and self.sensitivity_trials not in TRIALS:
            raise InputError(f"unknown sensitivity trials '{self.sensitivity_trials}' (choose "
                             f"from {', '.join(TRIALS)})")
        if self.refit_order not in REFIT_ORDERS:
            raise InputError(f"unknown refit order '{self.refit_order}' (choose from "
                             f"{', '.join(REFIT_ORDERS)})")
        if not isinstance(self.recover_budget_mb, int) or self.recover_budget_mb < 1:
            raise InputError(f"recover-budget must be a positive number of MB, got "
                             f"{self.recover_budget_mb}")
        self._validate_sparsify()

    def _validate_sparsify(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown method '{self.method}' (choose from {', '.join(METHODS)})")
        resolve_sparsity(parse_pattern(self.pattern), self.sparsity)
        bad = sorted(set(self.sparse_scope) - set(KINDS))
        if bad or not self.sparse_scope:
            raise InputError(f"unknown sparsify scope {', '.join(bad) or '(empty)'} (choose "
                             f"from {', '.join(KINDS)})")
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
    def trials(self) -> str:
        """How the sensitivity scan measures a trial: `sensitivity_trials`, or by default
        compensated when recovery runs (the written model's sinks are compensated too),
        plain otherwise."""
        if self.sensitivity_trials is not None:
            return self.sensitivity_trials
        return "compensated" if self.recovery != "none" else "plain"

    @property
    def needs_calibration(self) -> bool:
        """Whether the run feeds calibration data through the model (criterion, scan,
        recovery)."""
        return (self.criterion in scoring.NEEDS_DATA or self.allocation == "sensitivity"
                or "blocks" in self.scope  # blocks are scored by running the model
                or self.checks_fragile or self.recovery != "none")

    @property
    def sparse_fraction(self) -> float:
        """The fraction of each layer's weights sparsify zeroes."""
        return resolve_sparsity(parse_pattern(self.pattern), self.sparsity)

    @property
    def sparsify_needs_data(self) -> bool:
        return self.method in DATA_METHODS

    @property
    def checks_fragile(self) -> bool:
        """Whether uniform allocation runs its fragile-group check (passes/fragile.py)."""
        return self.allocation == "uniform" and (
            self.fragile_check == "on" or (self.fragile_check == "auto"
                                           and self.calib is not None))

    # -- plans ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The plan's `settings` (keys in this order; `graphprune` is the version)."""
        return {"criterion": self.criterion, "aggregate": self.aggregate,
                "normalize": self.normalization, "allocation": self.allocation,
                "ratio": self.ratio, "round_to": self.round_to, "rounding": self.rounding,
                "protect": self.protect, "max_group_ratio": self.max_group_ratio,
                "scope": list(self.scope), "seed": self.seed,
                "allow_io_change": self.allow_io_change,
                **({"block_criterion": self.block_criterion} if "blocks" in self.scope else {}),
                **({"sensitivity_trials": self.trials} if self.allocation == "sensitivity"
                   else {}),
                "target": ({"metric": self.metric, "value": self.target} if self.metric
                           else None),
                "recover": self.recovery, "refit_order": self.refit_order,
                "recover_budget_mb": self.recover_budget_mb,
                "graphprune": __version__}

    def sparsity_dict(self) -> dict[str, Any]:
        """A plan's `sparsity` record without its layers (see passes/sparsify.py)."""
        return {"sparsity": self.sparse_fraction, "pattern": parse_pattern(self.pattern).name,
                "method": self.method, "scope": list(self.sparse_scope),
                "protect": self.protect, "sequential": self.sequential,
                "calib_samples": self.calib_samples, "holdout": self.holdout,
                "seed": self.seed}

    @classmethod
    def from_sparsity_dict(cls, record: dict[str, Any], **overrides: Any) -> Options:
        """Options of a plan's `sparsity` record, then `overrides` (None: not given)."""
        if not isinstance(record, dict):
            raise InputError("plan sparsity must be a JSON object")
        kw = {k: record[k] for k in ("sparsity", "pattern", "method", "protect", "sequential",
                                     "calib_samples", "holdout", "seed")
              if record.get(k) is not None}
        if record.get("scope"):
            kw["sparse_scope"] = record["scope"]
        if parse_pattern(kw.get("pattern", "unstructured")).structured:
            kw.pop("sparsity", None)  # implied by the pattern
        kw.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**kw)
        except TypeError as exc:
            raise InputError(f"plan sparsity is malformed ({exc})") from None

    @classmethod
    def from_dict(cls, settings: dict[str, Any], **overrides: Any) -> Options:
        """Options from a plan's `settings` (missing keys take their defaults, the version is
        ignored), then `overrides`."""
        if not isinstance(settings, dict):
            raise InputError("plan settings must be a JSON object")
        names = {f.name for f in fields(cls)} - {"calib", "calib_samples", "input_sizes",
                                                  "inputs", "latency", "fragile_check",
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

