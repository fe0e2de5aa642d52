"""The library's entry points: `analyze`, `compress` (load → analyse → score → select →
rewrite → validate → report), `sparsify` (zeros in the weights, in place) and `apply_plan`.

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
from .io import check_loaded, check_opset, guard_input, load
from .ir import Graph, approx_bytes
from .metrics import count_macs, count_params
from .passes import rewrite, targets, validation
from .passes.calibration import Calibration
from .passes.options import Options
from .passes.selection import GroupChoice
from .passes.sparsify import sparsify_model
from .passes.stages import Analyse, FromPlan, Proof, Rewrite, Score, Select, Validate
from .plan import Plan, check_fingerprint, fingerprint, make_plan
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
    and generated inputs; `input_sizes` fixes dynamic input dims for validation.

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
    check_input_sizes(model, opts.input_sizes)
    calibration = None
    if opts.needs_calibration:
        with stage("reading calibration data"):
            calibration = Calibration(model, opts.calib, samples=opts.calib_samples,
                                      seed=opts.seed, sizes=opts.input_sizes)
    ctx.say("analysing dependencies")
    an = run_stage(ctx, Analyse(opts), model)
    scores = run_stage(ctx, Score(opts, calibration, ctx), an)
    picked = run_stage(ctx, Select(opts, model, calibration, ctx), an, scores)
    proof = _rewrite_and_prove(ctx, opts, model, an, picked, spill)
    report = _report(ctx, opts, model, an, picked, proof, calibration=calibration)
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
    calib: str | os.PathLike | dict | None = None,
    calib_samples: int | None = None,
) -> tuple[onnx.ModelProto, Report]:
    """Apply a saved plan (graphprune.plan) to the model it was made for, with the same
    exact check as compress (`seed`, `input_sizes`: of that check; `spill`: as for compress).
    The plan's settings say the scope and whether the interface may change. A plan with a
    `sparsity` record then sparsifies the pruned model's layers it lists again (`calib`,
    `calib_samples`: the data of a data-driven method, as for `sparsify`). Raises InputError
    when the plan does not fit the model."""
    if not isinstance(plan, Plan):
        plan = Plan.from_dict(plan) if isinstance(plan, dict) else Plan.load(plan)
    opts = Options.from_dict(plan.settings, seed=seed, input_sizes=input_sizes)
    ctx = RunContext(progress)
    model = _as_model(model_or_path)
    check_input_sizes(model, opts.input_sizes)
    check_fingerprint(model, plan)
    if plan.sparsity is not None and not plan.groups:  # a sparsify plan: no width to prune
        sopts = Options.from_sparsity_dict(plan.sparsity, input_sizes=input_sizes, calib=calib,
                                           calib_samples=calib_samples)
        return _sparsify(ctx, sopts, model, spill, plan)
    ctx.say("analysing dependencies")
    an = run_stage(ctx, Analyse(opts), model)
    picked = run_stage(ctx, FromPlan(plan, model), an)
    proof = _rewrite_and_prove(ctx, opts, model, an, picked, spill)
    report = _report(ctx, opts, model, an, picked, proof, plan=plan)
    if plan.sparsity is None:
        return proof.pruned, report
    sopts = Options.from_sparsity_dict(plan.sparsity, input_sizes=input_sizes, calib=calib,
                                       calib_samples=calib_samples)
    sparse, sreport = _sparsify(ctx, sopts, proof.pruned, spill, plan)
    report.sparsity, report.notes = sreport.sparsity, report.notes + sreport.notes
    report.timings, report.seconds = ctx.timings, ctx.seconds
    return sparse, report


@guard_input
def sparsify(
    model_or_path: onnx.ModelProto | str | os.PathLike,
    sparsity: float | None = None,
    pattern: str | None = None,
    method: str | None = None,
    *,
    options: Options | None = None,
    base_plan: Plan | dict | str | os.PathLike | None = None,
    progress: Progress | None = None,
    spill: rewrite.Spill | None = None,
    **settings: Any,
) -> tuple[onnx.ModelProto, Report]:
    """Zero weights of the model's MatMul, Gemm and Conv layers in place: the same graph,
    names and shapes, `sparsity` (default 0.5; implied by an N:M pattern) of each layer's
    weights zero in `pattern` ("unstructured", "2:4", "N:M": N kept of every M along the
    input channels), chosen by `method` ("magnitude", "wanda", "sparsegpt"). Options come
    as keywords or `options` as for compress; those of sparsify: `sparse_scope` (layer kinds
    linear, conv, head; default linear, conv), `protect`, `sequential` (data-driven methods:
    each wave of layers' statistics from the model already sparsified upstream; default
    True), `calib`/`calib_samples` (as for compress), `holdout` (the share of them held back
    for the fidelity measurement, default 0.25). `base_plan`: the plan that made this model
    from its original (compress's): `report.plan` then holds both, for `apply_plan` on the
    original.

    There is no exact check (weights change on purpose): the report's `sparsity` gives each
    layer's sparsity, verified against the pattern in the written model, the layers left
    dense and why, and fidelity against the input model on held-back samples. Raises
    InputError (bad options or input), ValidationError (the output fails onnx.checker,
    changes output shapes, becomes non-finite or lacks the pattern: nothing to write) and
    StageError naming the stage of any other failure."""
    opts = Options.build(options, sparsity=sparsity, pattern=pattern, method=method,
                         **settings)
    if base_plan is not None and not isinstance(base_plan, Plan):
        base_plan = (Plan.from_dict(base_plan) if isinstance(base_plan, dict)
                     else Plan.load(base_plan))
    model = _as_model(model_or_path)
    check_input_sizes(model, opts.input_sizes)
    return _sparsify(RunContext(progress), opts, model, spill, base_plan, record=True)


def _sparsify(ctx: RunContext, opts: Options, model: onnx.ModelProto,
              spill: rewrite.Spill | None, plan: Plan | None, *,
              record: bool = False) -> tuple[onnx.ModelProto, Report]:
    """Sparsify `model`: the plan's layers (`record` False: a plan replayed) or all (then the
    run's plan extends `plan`, a base plan, when given)."""
    calibration = None  # the data methods' samples, and the held-back ones
    if opts.sparsify_needs_data or opts.calib is not None:
        with stage("reading calibration data"):
            calibration = Calibration(model, opts.calib, samples=opts.calib_samples,
                                      seed=opts.seed, sizes=opts.input_sizes)
    if opts.sparsify_needs_data and opts.calib is None:
        ctx.note(f"{opts.method} ran on generated inputs (no --calib): real data tells more")
    only = None if record else plan.sparsity["layers"]
    result = sparsify_model(model, opts, ctx, calibration=calibration, spill=spill, only=only)
    with stage("report"):
        params = count_params(model)
        feeds = validation.make_inputs(model, batch=1, seed=opts.seed, sizes=opts.input_sizes)
        macs = count_macs(model, feeds)
        report = Report(params_before=params, params_after=params, macs_before=macs,
                        macs_after=macs, bytes_before=approx_bytes(model),
                        bytes_after=approx_bytes(result.model), criterion="", ratio=0.0,
                        aggregate="", normalize="", allocation="", notes=list(ctx.notes),
                        scope=[], sparsity=result.record)
        if record:
            entry = {**opts.sparsity_dict(), "layers": result.layers}
            report.plan = (Plan(plan.fingerprint, plan.groups, plan.settings, entry)
                           if plan is not None else Plan(fingerprint(model), [], {}, entry))
        else:
            report.plan = plan
    ctx.lap("report")
    report.timings, report.seconds = ctx.timings, ctx.seconds
    return result.model, report


def _rewrite_and_prove(ctx: RunContext, opts: Options, model: onnx.ModelProto, an: Analysis,
                       picked: targets.Selection, spill: rewrite.Spill | None) -> Proof:
    rewritten = run_stage(ctx, Rewrite(model, spill, ctx), an, picked.removed)
    return run_stage(ctx, Validate(opts, model, spill, ctx), rewritten, an)


# -- the report -----------------------------------------------------------------------------
def _report(ctx: RunContext, opts: Options, model: onnx.ModelProto, an: Analysis,
            picked: targets.Selection, proof: Proof, *, calibration: Calibration | None = None,
            plan: Plan | None = None) -> Report:
    """The report of a run, filled here and nowhere else (`plan`: the run applied it)."""
    with stage("report"):
        report = _fill(ctx, opts, model, an, picked, proof, calibration, plan)
    ctx.lap("report")
    report.timings, report.seconds = ctx.timings, ctx.seconds
    return report


def _fill(ctx: RunContext, opts: Options, model: onnx.ModelProto, an: Analysis,
          picked: targets.Selection, proof: Proof, calibration: Calibration | None,
          plan: Plan | None) -> Report:
    pruned = proof.pruned
    feeds = validation.make_inputs(model, batch=1, seed=opts.seed, sizes=opts.input_sizes)
    io = rewrite.removed_io(an, picked.removed)
    settings = plan.settings if plan is not None else {}
    report = Report(
        params_before=count_params(model), params_after=count_params(pruned),
        macs_before=count_macs(model, feeds),
        macs_after=count_macs(pruned, validation.shrink_feeds(feeds, io)),
        bytes_before=approx_bytes(model), bytes_after=approx_bytes(pruned),
        criterion=str(settings.get("criterion", "plan")) if plan else opts.criterion,
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
    if not sizes:
        return
    declared = {s[0]: s[2] for s in validation.input_specs(model)}
    for name, shape in sizes.items():
        if name not in declared:
            raise InputError(f"input shape given for '{name}', which is not a graph input "
                             f"(inputs: {', '.join(declared) or 'none'})")
        dims = declared[name]
        if not dims:
            continue  # no declared shape (or a scalar): onnxruntime judges it
        if len(shape) != len(dims):
            raise InputError(f"input shape for '{name}' has {len(shape)} dims, the model "
                             f"declares {len(dims)}")
        for k, (n, d) in enumerate(zip(shape, dims, strict=True)):
            if n < 1:
                raise InputError(f"input shape for '{name}': dim {k} must be positive, got {n}")
            if isinstance(d, int) and d != n:
                raise InputError(f"input shape for '{name}': dim {k} is {n}, the model fixes "
                                 f"it at {d}")
