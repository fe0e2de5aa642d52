"""The library's entry points: `analyze`, `compress` (load → analyse → score → select →
rewrite → validate → report) and `apply_plan`.

This module is a driver, the top layer with the CLI and the package itself: drivers ← passes
(graphprune.passes) ← core (graph view, rules, analysis, plans, report, errors, model I/O);
nothing imports upward (tests/test_layers.py). A driver builds the options once
(`passes.options.Options`), runs the stages of `passes.stages` through `run_stage`, which
checks each stage's contract and names the stage of an internal error (`errors.stage`), and
fills the report in one place (`_report`).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import onnx

from .analysis import Analysis, Group, analyze_graph
from .context import Progress, RunContext
from .errors import InputError, stage
from .io import check_loaded, check_opset, guard_input, load, mapped
from .ir import Graph, approx_bytes
from .metrics import count_macs, count_params
from .passes import inputs as check_inputs
from .passes import rewrite, segments, targets, validation
from .passes.calibration import Calibration
from .passes.inputs import CheckInputs
from .passes.options import Options
from .passes.selection import GroupChoice
from .passes.stages import Analyse, FromPlan, Proof, Rewrite, Score, Select, Validate
from .plan import Plan, check_fingerprint, make_plan
from .report import GroupReport, Report, io_changes


@dataclass
class AnalysisResult:
    """What `graphprune.analyze` returns: the groups and why units stay."""

    analysis: Analysis

    @property
    def groups(self) -> list[Group]:
        return self.analysis.groups

    @property
    def blockers(self) -> dict[str, int]:
        return dict(self.analysis.blockers)

    def to_dict(self) -> dict:
        g = self.analysis.graph
        groups = [gr.to_dict(g) for gr in self.groups]
        return {
            "groups": groups,
            "summary": {"total": len(groups),
                        "prunable": sum(1 for x in groups if x["prunable"] > 0),
                        "units": sum(x["units"] for x in groups),
                        "prunable_units": sum(x["prunable"] for x in groups)},
            "blockers": self.blockers,
        }


def _as_model(model_or_path: onnx.ModelProto | str | os.PathLike, *,
              map_external: bool = False) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        check_opset(model_or_path)
        check_loaded(model_or_path)
        return model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        return load(model_or_path, external_data="map" if map_external else True)
    raise InputError(f"expected an onnx.ModelProto or a path, got {type(model_or_path).__name__}")


@guard_input
def analyze(model_or_path: onnx.ModelProto | str | os.PathLike, *,
            allow_io_change: bool = False) -> AnalysisResult:
    """Find the coupled groups of a model without changing it (`allow_io_change`: as
    compress with it, graph inputs/outputs that carry state may shrink)."""
    model = _as_model(model_or_path, map_external=True)  # weights read on demand
    with stage("analysis"):
        return AnalysisResult(analyze_graph(Graph(model), io=allow_io_change))


# -- stages ---------------------------------------------------------------------------------
class Pass(Protocol):
    """A stage of a run (see graphprune.passes.stages): `name` keys its timing, `label`
    names it in errors."""

    name: str

    @property
    def label(self) -> str: ...

    def requires(self, *inputs: Any) -> None: ...

    def run(self, *inputs: Any) -> Any: ...

    def ensures(self, result: Any, *inputs: Any) -> None: ...


def run_stage(ctx: RunContext, step: Pass, *inputs: Any) -> Any:
    """requires → run → ensures, timed as the stage's lap. graphprune's own errors (bad
    input, a failed exact check, an inner stage's StageError) pass through as they are;
    anything else, a broken contract included, is a bug: a StageError naming the stage
    ("scoring (taylor) failed: …", exit 3)."""
    with stage(step.label):
        step.requires(*inputs)
        result = step.run(*inputs)
        step.ensures(result, *inputs)
    ctx.lap(step.name)
    return result


# -- compress and apply ---------------------------------------------------------------------
@guard_input
def compress(
    model_or_path: onnx.ModelProto | str | os.PathLike,
    ratio: float | None = None,
    criterion: str | None = None,
    *,
    options: Options | None = None,
    progress: Progress | None = None,
    spill: rewrite.Spill | None = None,
    **settings: Any,
) -> tuple[onnx.ModelProto, Report]:
    """Prune `ratio` (default 0.4) of every prunable group's units and prove the result exact.

    Options come as keywords (those of `graphprune.Options`, below) or as `options`, an
    `Options` (keywords given as well replace its fields).

    Scoring: `criterion` (default l1; see `graphprune.passes.scoring.CRITERIA`), member
    scores combined by `aggregate` (sum/mean/max), normalised within groups by `normalize`
    (none/mean/max/sum/standard; None: the criterion's default). Data-driven criteria and the
    sensitivity scan run `calib` (arrays per graph input, or an .npz path; generated when
    None; `calib_samples` of them) through onnxruntime. `allocation` is uniform (ratio per
    group), global (one ranking) or sensitivity (measured error per cost); at most
    `max_group_ratio` of a group goes under global, sensitivity and targets. A target
    (`target_macs`, `target_params`, `target_latency`: fractions of the original) replaces
    `ratio` and is met by search. `round_to` keeps unit counts at multiples of it, `protect`
    (a regex) keeps the groups touching matching node names. `rounding`: "down" removes
    ⌊ratio·n⌋ units of a group of n, never more than asked; "up" removes ⌈ratio·n⌉
    (Torch-Pruning's convention); under global and sensitivity allocation of all candidate
    units, under a target it sets when uniform allocation's groups take their next unit.
    `report.plan` holds the plan (graphprune.plan) of the run; `seed` seeds random scores
    and generated inputs. The exact check runs `inputs` (real inputs: arrays by input name or
    an .npz path, samples on axis 0), else calibration samples held back from scoring (with
    `calib`), else seeded inputs of `input_sizes` (shapes by input name, as given) and, for
    dims left open, of the default shapes or others the original runs on
    (graphprune/passes/inputs.py).

    `scope` picks unit kinds: channels, heads, ffn (default) and hidden (opt-in: the residual
    stream, through LayerNorm/RMSNorm, inexact). With hidden units removed, the exact check
    runs on the exact part of the plan and the report gives the full plan's fidelity.
    `allow_io_change`: graph inputs and outputs that carry state (units entering through an
    input and leaving through an output: a KV cache's past and present key/values) may
    shrink along static unit axes; the report lists the changed shapes (`io_changes`).
    `progress` receives progress lines. `spill` (a `rewrite.Spill`, for large models): the
    rewritten weights go to its temporary file as they are made and the pruned model refers
    to them there as external data, until `graphprune.io.save_atomic` copies them out; keep
    it open until then.
    Returns the pruned model and its report. Raises InputError (bad options or input),
    ValidationError (nothing to write) when the rewrite does not match the masked original,
    and StageError naming the stage of any other failure (a bug).
    """
    opts = Options.build(options, ratio=ratio, criterion=criterion, **settings)
    ctx = RunContext(progress)
    model = _as_model(model_or_path)
    chosen, held = _check_inputs(model, opts, opts.calib)
    ctx.lap("inputs")
    calibration = None
    if opts.needs_calibration:
        with stage("reading calibration data"):
            calibration = Calibration(model, opts.calib, samples=opts.calib_samples,
                                      seed=opts.seed, inputs=chosen, hold_back=held)
    ctx.say("analysing dependencies")
    an = run_stage(ctx, Analyse(opts), model)
    scores = run_stage(ctx, Score(opts, calibration, ctx), an)
    picked = run_stage(ctx, Select(opts, model, calibration, ctx, chosen.feeds(model)), an,
                       scores)
    proof = _rewrite_and_prove(ctx, opts, model, an, picked, spill, chosen)
    report = _report(ctx, opts, model, an, picked, proof, chosen, calibration=calibration)
    return proof.pruned, report


@guard_input
def apply_plan(
    model_or_path: onnx.ModelProto | str | os.PathLike,
    plan: Plan | dict | str | os.PathLike,
    *,
    seed: int = 0,
    input_sizes: dict[str, list[int]] | None = None,
    progress: Progress | None = None,
    spill: rewrite.Spill | None = None,
    inputs: str | os.PathLike | dict | None = None,
) -> tuple[onnx.ModelProto, Report]:
    """Apply a saved plan (graphprune.plan) to the model it was made for, with the same
    exact check as compress (`seed`, `input_sizes`, `inputs`: of that check; `spill`: as
    for compress). The plan's settings say the scope and whether the interface may change.
    Raises InputError when the plan does not fit the model."""
    if not isinstance(plan, Plan):
        plan = Plan.from_dict(plan) if isinstance(plan, dict) else Plan.load(plan)
    opts = Options.from_dict(plan.settings, seed=seed, input_sizes=input_sizes, inputs=inputs)
    ctx = RunContext(progress)
    model = _as_model(model_or_path)
    check_fingerprint(model, plan)
    chosen, _ = _check_inputs(model, opts, None)
    ctx.lap("inputs")
    ctx.say("analysing dependencies")
    an = run_stage(ctx, Analyse(opts), model)
    picked = run_stage(ctx, FromPlan(plan, model), an)
    proof = _rewrite_and_prove(ctx, opts, model, an, picked, spill, chosen)
    report = _report(ctx, opts, model, an, picked, proof, chosen, plan=plan)
    return proof.pruned, report


def _rewrite_and_prove(ctx: RunContext, opts: Options, model: onnx.ModelProto, an: Analysis,
                       picked: targets.Selection, spill: rewrite.Spill | None,
                       chosen: CheckInputs) -> Proof:
    rewritten = run_stage(ctx, Rewrite(model, spill, ctx), an, picked.removed)
    return run_stage(ctx, Validate(opts, model, spill, ctx, chosen), rewritten, an)


# -- validation inputs ----------------------------------------------------------------------
def _check_inputs(model: onnx.ModelProto, opts: Options,
                  calib: str | os.PathLike | dict | None) -> tuple[CheckInputs, int]:
    """The exact check's inputs (passes/inputs.py) and how many calibration samples, at the
    end of `calib`, they hold back from scoring: `opts.inputs` (given values), else held-back
    calibration samples, else shapes (`opts.input_sizes` as given, open dims by trying). A
    model too large to run whole once more (validated segment by segment) gets the default
    shapes, not run."""
    run = "never" if _large(model) else "choose"
    if opts.inputs is not None or calib is None:
        with stage("choosing validation inputs"):
            return check_inputs.resolve(model, opts.input_sizes, opts.inputs, seed=opts.seed,
                                        run=run), 0
    with stage("reading calibration data"):
        given = check_inputs.load_arrays(calib, validation.input_specs(model),
                                         "calibration data")
    held = check_inputs.hold_back(given)
    with stage("choosing validation inputs"):
        if not held:
            chosen = check_inputs.resolve(model, opts.input_sizes, seed=opts.seed, run=run)
            chosen.notes.append(f"calibration data has {given.samples} sample(s), too few to "
                                "hold any back for validation: generated inputs checked")
            return chosen, 0
        where = calib if isinstance(calib, (str, os.PathLike)) else "calibration arrays"
        source = (f"held-back calibration samples {given.samples - held}-{given.samples - 1} "
                  f"of {where} (never used for scoring)")
        return check_inputs.resolve(model, data=given.tail(held), seed=opts.seed, run=run,
                                    source=source), held


def _large(model: onnx.ModelProto) -> bool:
    """Validated segment by segment (passes/prove.py): not run whole to choose inputs."""
    return mapped(model) and segments.weight_bytes(model) >= segments.SEGMENT_MIN_BYTES


# -- the report -----------------------------------------------------------------------------
def _report(ctx: RunContext, opts: Options, model: onnx.ModelProto, an: Analysis,
            picked: targets.Selection, proof: Proof, chosen: CheckInputs, *,
            calibration: Calibration | None = None, plan: Plan | None = None) -> Report:
    """The report of a run, filled here and nowhere else (`plan`: the run applied it)."""
    with stage("report"):
        report = _fill(ctx, opts, model, an, picked, proof, chosen, calibration, plan)
    ctx.lap("report")
    report.timings, report.seconds = ctx.timings, ctx.seconds
    return report


def _fill(ctx: RunContext, opts: Options, model: onnx.ModelProto, an: Analysis,
          picked: targets.Selection, proof: Proof, chosen: CheckInputs,
          calibration: Calibration | None, plan: Plan | None) -> Report:
    pruned = proof.pruned
    feeds = chosen.feeds(model)
    io = rewrite.removed_io(an, picked.removed)
    settings = plan.settings if plan is not None else {}
    report = Report(
        params_before=count_params(model), params_after=count_params(pruned),
        macs_before=count_macs(model, feeds),
        macs_after=count_macs(pruned, validation.shrink_feeds(feeds, io)),
        bytes_before=approx_bytes(model), bytes_after=approx_bytes(pruned),
        criterion=str(settings.get("criterion", "plan")) if plan else opts.criterion,
        criterion_detail=ctx.details.get("criterion", ""),
        ratio=float(settings.get("ratio", 0.0)) if plan else opts.ratio,
        aggregate=opts.aggregate, normalize=opts.normalization,
        allocation="plan" if plan else opts.allocation,
        latency_ms={k: round(v * 1e3, 4) for k, v in picked.latency.items()},
        calibration=calibration.describe() if calibration is not None else {},
        sensitivity={an.groups[gi].name: [[c, round(e, 6)] for c, e in sorted(curve)]
                     for gi, curve in picked.curves.items()},
        notes=list(ctx.notes), exact_check=proof.check.to_dict(), scope=list(opts.scope),
        fidelity=proof.fidelity, blockers=dict(an.blockers),
        io_changes=io_changes(model, pruned),
        plan=plan if plan is not None else make_plan(model, an, picked.removed, opts.to_dict()),
    )
    _groups(report, picked.choices)
    if opts.metric:
        reached = {"macs": report.macs_ratio, "params": report.params_ratio}.get(
            opts.metric, _latency_ratio(picked.latency))
        report.target = targets.outcome(opts.metric, opts.target, reached)
        if plan is None and not report.target["met"] and reached > opts.target:
            report.notes.append(
                f"the {opts.metric} target was not reached: removing at most "
                f"{opts.max_group_ratio:.0%} of each group (--max-group-ratio) and keeping "
                f"frozen units gets to {reached:.3f}")
    return report


def _latency_ratio(latency: dict[str, float]) -> float:
    return latency["after"] / latency["before"] if latency.get("before") else 1.0


def _groups(report: Report, choices: list[GroupChoice]) -> None:
    """Per group: units before and after, frozen and why; the summary counts."""
    reasons: Counter = Counter()
    for c in choices:
        g = c.group
        why = sorted({r for rs in g.frozen.values() for r in rs})
        if c.protected:
            why = ["protected by --protect", *why]
        if c.kept:
            why = [c.kept, *why]
        report.group_details.append(GroupReport(
            g.name, len(g.units), len(g.units) - len(c.removed), len(g.frozen), why, g.kind))
        for rs in g.frozen.values():
            for r in dict.fromkeys(_base_reason(x) for x in rs):  # not a set: JSON order
                reasons[r] += 1
    report.groups = {
        "total": len(choices),
        "pruned": sum(1 for c in choices if c.removed),
        "frozen": sum(1 for c in choices if not c.group.prunable),
    }
    report.frozen_reasons = dict(reasons)


def _base_reason(reason: str) -> str:
    """'no rule for op X (X node_3)' → 'no rule for op X', for the summary table."""
    cut = reason.rfind(" (")
    return reason[:cut] if cut > 0 else reason


def check_input_sizes(model: onnx.ModelProto, sizes: dict[str, list[int]] | None) -> None:
    """Shapes given for validation must name graph inputs and fit their declared shapes
    (rank, static dims); said now, in one line, not when onnxruntime refuses them."""
    check_inputs.check_sizes(validation.input_specs(model), sizes)
