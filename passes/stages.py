"""The stages of a run, each a pass with a contract: what it requires, what it guarantees.

A stage has a `name` (the report's timing key), a `label` (what an error calls it, with the
options that shaped it: "scoring (taylor)") and three methods over the same inputs, as
onnx-ir's passes have: `requires(*inputs)` checks what it needs, `run(*inputs)` does the work and
`ensures(result, *inputs)` checks what it promises. The checks are cheap (linear in units or
graph inputs and outputs) and run in every run; a broken promise raises ContractError, a bug,
which the driver's runner (`graphprune.pipeline.run_stage`) reports as an internal error
naming the stage (a StageError, exit 3), as it does any unexpected exception. The drivers
chain them:

    compress:  analysis → scoring → selection → [recovery] → rewrite → validation
    apply:     analysis → selection (from the plan) → [recovery] → rewrite → validation
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from graphprune import external
from graphprune.analysis import Analysis, analyze_graph, apply_scope
from graphprune.context import RunContext
from graphprune.errors import stage
from graphprune.ir import Graph
from graphprune.plan import Plan, removed_from_plan
from graphprune.report import io_changes

from . import prove, recovery, rewrite, scoring, targets
from .inputs import CheckInputs, resolve
from .options import Options
from .selection import GroupChoice, check_selection, drop_inner, protect_blocks
from .targets import Selection


class ContractError(Exception):
    """A pass broke its contract: a graphprune bug, never the input's fault."""


def expect(problem: str | None, what: str) -> None:
    """Raise ContractError naming `what` when a check found a `problem`."""
    if problem:
        raise ContractError(f"{what}: {problem}")


# -- analysis -------------------------------------------------------------------------------
@dataclass
class Analyse:
    """Groups of coupled units, frozen where the scope or a rule says so.
    Ensures: every group's units are distinct slot roots owned by no other group, frozen and
    prunable units split them, and units of a kind outside the scope are frozen."""

    opts: Options
    name = label = "analysis"

    def requires(self, model: onnx.ModelProto) -> None:
        expect(None if model.graph.output else "the graph has no outputs", "analysis input")

    def run(self, model: onnx.ModelProto) -> Analysis:
        an = analyze_graph(Graph(model), inexact="hidden" in self.opts.scope,
                           io=self.opts.allow_io_change, blocks="blocks" in self.opts.scope)
        apply_scope(an, self.opts.scope)
        protect_blocks(an, self.opts.protect)
        return an

    def ensures(self, an: Analysis, model: onnx.ModelProto) -> None:
        expect(check_groups(an, self.opts.scope), "analysis")


def check_groups(an: Analysis, scope: tuple[str, ...]) -> str | None:
    owner = np.full(len(an.roots), -1, dtype=np.int64)
    for gi, g in enumerate(an.groups):
        units = np.asarray(g.units, dtype=np.int64)
        if not len(units):
            return f"group '{g.name}' has no units"
        if (an.roots[units] != units).any():
            return f"group '{g.name}' holds a slot that is not a root"
        if (owner[units] >= 0).any() or len(np.unique(units)) != len(units):
            return f"group '{g.name}' shares units with another group"
        owner[units] = gi
        if not set(g.frozen) <= set(g.units):
            return f"group '{g.name}' freezes units it does not hold"
        if g.kind not in scope and g.prunable:
            return f"group '{g.name}' of kind {g.kind} is outside the scope but prunable"
    return None


# -- scoring --------------------------------------------------------------------------------
@dataclass
class Score:
    """One score per slot. Ensures: finite on every prunable unit."""

    opts: Options
    calibration: object
    ctx: RunContext
    name = "scoring"

    @property
    def label(self) -> str:
        return f"scoring ({self.opts.criterion})"

    def requires(self, an: Analysis) -> None:
        pass  # any analysis can be scored; options were validated when made

    def run(self, an: Analysis) -> np.ndarray:
        o = self.opts
        self.ctx.say(f"scoring {sum(len(g.units) for g in an.groups)} units ({o.criterion})")
        return scoring.score_units(an, o.criterion, o.seed, aggregate=o.aggregate,
                                   normalize=o.normalize, calibration=self.calibration,
                                   run=self.ctx, block_criterion=o.block_criterion)

    def ensures(self, scores: np.ndarray, an: Analysis) -> None:
        expect(scoring.check_scores(an, scores), "scores")


# -- selection ------------------------------------------------------------------------------
@dataclass
class Select:
    """The removed units (allocation, target search). Requires scores as the scoring pass
    ensures them. Ensures the selection contract (`selection.check_selection`): no frozen
    unit removed, at least one unit kept per group, protected groups untouched."""

    opts: Options
    model: onnx.ModelProto
    calibration: object
    ctx: RunContext
    feeds: dict | None = None
    """Inputs of the cost model and latency runs (the exact check's first run's)."""
    name = "selection"

    @property
    def label(self) -> str:
        o = self.opts
        return f"selection ({o.allocation} allocation" + (
            f", {o.metric} target)" if o.metric else ")")

    def requires(self, an: Analysis, scores: np.ndarray) -> None:
        expect(scoring.check_scores(an, scores), "selection input")

    def run(self, an: Analysis, scores: np.ndarray) -> Selection:
        return targets.select(self.model, an, scores, self.opts, calibration=self.calibration,
                              run=self.ctx, feeds=self.feeds)

    def ensures(self, sel: Selection, an: Analysis, scores: np.ndarray) -> None:
        expect(check_selection(an, sel.removed, sel.choices), "selection")


@dataclass
class FromPlan:
    """The removed units a saved plan names (InputError when it does not fit the model).
    Ensures the selection contract, as `Select`."""

    plan: Plan
    model: onnx.ModelProto
    name = "selection"
    label = "selection (from the plan)"

    def requires(self, an: Analysis) -> None:
        pass  # removed_from_plan checks the plan against the model and says why not

    def run(self, an: Analysis) -> Selection:
        removed = removed_from_plan(self.model, an, self.plan)
        drop_inner(an, removed)
        return Selection(removed, [GroupChoice(g, [u for u in g.units if removed[u]])
                                   for g in an.groups])

    def ensures(self, sel: Selection, an: Analysis) -> None:
        expect(check_selection(an, sel.removed, sel.choices), "selection")


# -- recovery -------------------------------------------------------------------------------
@dataclass
class Recover:
    """The sinks of the removed units updated from calibration data (`recovery.recover`): a
    model in the original's shape, its analysis and the same removal in it. Ensures the
    updated model keeps the original's graph inputs and outputs and that every group loses
    the same units as selected."""

    opts: Options
    model: onnx.ModelProto
    calibration: object
    ctx: RunContext
    spill: external.Spill | None = None
    name = "recovery"

    @property
    def label(self) -> str:
        o = self.opts
        return f"recovery ({o.recovery}" + (f", {o.refit_order})" if o.recovery == "refit"
                                            else ")")

    def requires(self, an: Analysis, removed: np.ndarray) -> None:
        expect(None if removed.shape == (len(an.roots),) else
               f"{removed.shape[0]} flags for {len(an.roots)} slots", "recovery input")

    def run(self, an: Analysis, removed: np.ndarray) -> recovery.Recovered:
        return recovery.recover(self.model, an, removed, self.opts, self.calibration,
                                self.ctx, self.spill)

    def ensures(self, rec: recovery.Recovered, an: Analysis, removed: np.ndarray) -> None:
        expect(check_interface(self.model, rec.model, an, np.zeros_like(removed)), "recovery")
        lost = [[int(rec.removed[u]) for u in g.units] for g in rec.an.groups]
        want = [[int(removed[u]) for u in g.units] for g in an.groups]
        expect(None if lost == want else "the removal changed", "recovery")


# -- rewrite and validation -----------------------------------------------------------------
@dataclass
class Rewritten:
    """The rewrite of a selection's exact part (`exact`: removed units the masked original
    reproduces; `removed`: all of them)."""

    pruned: onnx.ModelProto
    removed: np.ndarray
    exact: np.ndarray


@dataclass
class Rewrite:
    """The model without the selection's exact units. Ensures the original's interface: the
    same graph inputs and outputs, in order, whose declared shapes change only where units
    of state leave them (allow_io_change)."""

    model: onnx.ModelProto
    spill: external.Spill | None
    ctx: RunContext
    name = label = "rewrite"

    def requires(self, an: Analysis, removed: np.ndarray) -> None:
        expect(None if removed.shape == (len(an.roots),) else
               f"{removed.shape[0]} flags for {len(an.roots)} slots", "rewrite input")

    def run(self, an: Analysis, removed: np.ndarray) -> Rewritten:
        self.ctx.say(f"rewriting ({int(removed.sum())} units removed)")
        exact = removed & ~prove.inexact_roots(an)
        return Rewritten(prove.rewrite_exact(self.model, an, exact, self.spill), removed, exact)

    def ensures(self, out: Rewritten, an: Analysis, removed: np.ndarray) -> None:
        expect(check_interface(self.model, out.pruned, an, out.exact), "rewrite")


def check_interface(model: onnx.ModelProto, pruned: onnx.ModelProto, an: Analysis,
                    removed: np.ndarray) -> str | None:
    def names(m: onnx.ModelProto) -> tuple[list[str], list[str]]:
        inits = {t.name for t in m.graph.initializer}
        return ([v.name for v in m.graph.input if v.name not in inits],
                [v.name for v in m.graph.output])

    if names(model) != names(pruned):
        return "graph inputs or outputs differ from the original's"
    allowed = rewrite.removed_io(an, removed)
    moved = [c["name"] for c in io_changes(model, pruned) if c["name"] not in allowed]
    return f"declared shape of '{moved[0]}' changed" if moved else None


@dataclass
class Proof:
    """What validation hands on: the model to write, its exact check and, when inexact units
    were removed, the full plan's fidelity per output."""

    pruned: onnx.ModelProto
    check: object  # validation.CheckResult
    fidelity: dict
    inexact: bool


@dataclass
class Validate:
    """The exact check of the rewrite against the masked original (ValidationError when it
    fails: nothing is written), then the inexact units' rewrite and its fidelity. Requires a
    rewrite of removed units only (and its interface promise). Ensures a passed check."""

    opts: Options
    model: onnx.ModelProto
    spill: external.Spill | None
    ctx: RunContext
    inputs: CheckInputs | None = None
    """The exact check's inputs (passes/inputs.py; None: the default shapes, not run)."""
    name = "validation"
    label = "validation in onnxruntime"

    def requires(self, rw: Rewritten, an: Analysis) -> None:
        expect(None if not (rw.exact & ~rw.removed).any() else
               "units rewritten that were not removed", "validation input")

    def run(self, rw: Rewritten, an: Analysis) -> Proof:
        o = self.opts
        self.ctx.say("validating in onnxruntime")
        chosen = self.inputs or resolve(self.model, o.input_sizes, seed=o.seed, run="never")
        check = prove.prove(self.model, rw.pruned, an, rw.exact, chosen, self.spill, self.ctx)
        if not check.passed:
            raise prove.failure(check)
        if not (rw.removed & ~rw.exact).any():
            return Proof(rw.pruned, check, {}, False)
        self.ctx.say("rewriting inexact (hidden-size) units and measuring fidelity")
        with stage("rewrite of the inexact (hidden-size) units"):
            pruned = rewrite.prune_model(self.model, an, rw.removed, self.spill)
        with stage("fidelity measurement"):
            fidelity = prove.fidelity(self.model, pruned, an, rw.removed, o.seed, chosen)
        return Proof(pruned, check, fidelity, True)

    def ensures(self, proof: Proof, rw: Rewritten, an: Analysis) -> None:
        expect(None if proof.check.passed else "the exact check did not pass", "validation")
