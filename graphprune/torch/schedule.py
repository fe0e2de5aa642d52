"""When the torch path prunes, and how much: sparsity as a function of the step count.

Sparsity s is the fraction of the goal removed: of every group's units for `ratio`, of the
MACs or parameters for a target (`target_macs=0.4` is a final sparsity s_f = 0.6). Each call
of `Pruner.step()` is one step t (counted from 0); a schedule says which sparsity holds from
step t on, and the pruner prunes whenever that grows.

- `oneshot`: s_f at step `start`.
- `iterative`: `steps` equal steps of prune → fine-tune cycles: s_f·k/n at step
  start + (k−1)·every, k = 1..n.
- `geometric`: each round removes the same fraction of what remains (iterative magnitude
  pruning, Frankle & Carbin 2019): 1 − (1 − s_f)^(k/n) at the same steps.
- `cubic` (Zhu & Gupta 2018, "To prune, or not to prune"): at t = t₀ + k·Δt, k = 0..n,
  s_t = s_f + (s₀ − s_f)·(1 − (t − t₀)/(n·Δt))³ — fast at first, slowly at the end, when
  fewer redundant units are left. t₀ = `start`, Δt = `every`, n = `steps`, s₀ = `initial`.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphprune.errors import InputError

SCHEDULES = ("oneshot", "iterative", "geometric", "cubic")


@dataclass(frozen=True)
class Schedule:
    """Sparsity over steps (see the module docstring)."""

    kind: str = "oneshot"
    final: float = 0.0
    steps: int = 1
    every: int = 1
    start: int = 0
    initial: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise InputError(f"unknown schedule '{self.kind}' (choose from "
                             f"{', '.join(SCHEDULES)})")
        for name in ("steps", "every"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"schedule {name} must be a positive integer, got "
                                 f"{getattr(self, name)}")
        if self.start < 0:
            raise InputError(f"schedule start must be >= 0, got {self.start}")
        if not 0.0 <= self.initial <= self.final:
            raise InputError(f"initial sparsity must be in [0, final sparsity {self.final}], "
                             f"got {self.initial}")

    @property
    def last(self) -> int:
        """The step at which the final sparsity is reached."""
        if self.kind == "oneshot":
            return self.start
        if self.kind == "cubic":
            return self.start + self.steps * self.every
        return self.start + (self.steps - 1) * self.every

    def at(self, t: int) -> float:
        """The sparsity from step t on (0 before the first pruning step)."""
        if t < self.start:
            return 0.0
        if self.kind == "oneshot" or t >= self.last:
            return self.final
        if self.kind == "cubic":
            k = (t - self.start) // self.every
            return self.final + (self.initial - self.final) * (1.0 - k / self.steps) ** 3
        k = (t - self.start) // self.every + 1
        if self.kind == "iterative":
            return self.final * k / self.steps
        return 1.0 - (1.0 - self.final) ** (k / self.steps)
