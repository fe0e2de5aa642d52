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
from .io import check_loaded, check_opset, guard_input, load
from .ir import Graph, approx_bytes
from .metrics import count_macs, count_params
from .passes import heldout, rewrite, targets, validation
from .passes.calibration import Calibration
from .passes.options import Options
from .passes.recovery import Summary
from .passes.selection import GroupChoice
from .passes.stages import Analyse, FromPlan, Proof, Recover, Rewrite, Score, Select, Validate
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
    calibration = _calibration(model, opts)
    fit, held = _split(calibration, opts)
    ctx.say("analysing dependencies")
    an = run_stage(ctx, Analyse(opts), model)
    scores = run_stage(ctx, Score(opts, fit, ctx), an)
    picked = run_stage(ctx, Select(opts, model, fit, ctx), an, scores)
    proof, recovered = _recover_rewrite_prove(ctx, opts, model, an, picked, spill, fit, held)
    report = _report(ctx, opts, model, an, picked, proof, calibration=calibration,
                     recovery=recovered)
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
    calib: Any = None,
    calib_samples: int = 32,
    holdout: float = 0.25,
    recover: str | None = None,
) -> tuple[onnx.ModelProto, Report]:
    """Apply a saved plan (graphprune.plan) to the model it was made for, with the same
    exact check as compress (`seed`, `input_sizes`: of that check; `spill`: as for compress).
    The plan's settings say the scope, whether the interface may change and the recovery;
    a plan that recovers weights re-runs it on `calib` (a fine-tuned copy has other weights;
    `calib_samples`, `holdout` as for compress), which it then needs, unless `recover`
    replaces the plan's method ("none"). Raises InputError when the plan does not fit the
    model or its recovery has no data."""
    if not isinstance(plan, Plan):
        plan = Plan.from_dict(plan) if isinstance(plan, dict) else Plan.load(plan)
    given = {"recover": recover} if recover is not None else {}
    opts = Options.from_dict(plan.settings, seed=seed, input_sizes=input_sizes, calib=calib,
                             calib_samples=calib_samples, holdout=holdout, **given)
    if opts.recovery != "none" and calib is None:
        raise InputError(f"the plan recovers the kept weights ({opts.recovery}) from "
                         "calibration data: give the data to recover from (--calib), or "
                         "--recover none")
    ctx = RunContext(progress)
    model = _as_model(model_or_path)
    check_input_sizes(model, opts.input_sizes)
    check_fingerprint(model, plan)
    calibration = _calibration(model, opts) if opts.recovery != "none" else None
    fit, held = _split(calibration, opts)
    ctx.say("analysing dependencies")
    an = run_stage(ctx, Analyse(opts), model)
    picked = run_stage(ctx, FromPlan(plan, model), an)
    proof, recovered = _recover_rewrite_prove(ctx, opts, model, an, picked, spill, fit, held)
    report = _report(ctx, opts, model, an, picked, proof, plan=plan, calibration=calibration,
                     recovery=recovered)
    return proof.pruned, report


def _calibration(model: onnx.ModelProto, opts: Options) -> Calibration | None:
    if not opts.needs_calibration:
        return None
    with stage("reading calibration data"):
        return Calibration(model, opts.calib, samples=opts.calib_samples, seed=opts.seed,
                           sizes=opts.input_sizes)


def _split(calibration: Calibration | None, opts: Options,
           ) -> tuple[Calibration | None, Calibration | None]:
    """(samples for statistics, samples held back to measure recovery): with recovery the
    last `holdout` share of the calibration data is never used by anything else."""
    if calibration is None or opts.recovery == "none":
        return calibration, None
    return calibration.split(opts.holdout)


def _recover_rewrite_prove(ctx: RunContext, opts: Options, model: onnx.ModelProto,
                           an: Analysis, picked: targets.Selection,
                           spill: rewrite.Spill | None, fit: Calibration | None,
                           held: Calibration | None) -> tuple[Proof, Summary]:
    """Recovery (when asked for and something was removed), then the rewrite of the updated
    model proven against it, then fidelity on the held-back samples."""
    method = opts.recovery
    if method == "none":
        why = ("--recover none" if opts.recover == "none" else
               "no calibration data: give real samples (--calib) to refit the kept weights "
               "(--recover refit)")
        return _rewrite_and_prove(ctx, opts, model, an, picked.removed, spill), Summary(
            "none", reason=why)
    if not picked.removed.any():
        proof = _rewrite_and_prove(ctx, opts, model, an, picked.removed, spill)
        return proof, Summary(method, reason="nothing was removed")
    rec = run_stage(ctx, Recover(opts, model, fit, ctx, spill), an, picked.removed)
    proof = _rewrite_and_prove(ctx, opts, rec.model, rec.an, rec.removed, spill)
    rec.summary.samples_used = fit.samples
    if held is not None:
        ctx.say(f"recovery: fidelity on {held.samples} held-back samples")
        with stage("fidelity on held-back samples"):
            rec.summary.fidelity_before, rec.summary.fidelity_after = heldout.before_and_after(
                model, an, picked.removed, proof.pruned, held.batches())
            rec.summary.samples_held_back = held.samples
        ctx.lap("held-back fidelity")
    else:
        ctx.note(f"recovery: no calibration samples held back to measure it ({fit.samples} "
                 "samples, --holdout)")
    return proof, rec.summary


def _rewrite_and_prove(ctx: RunContext, opts: Options, model: onnx.ModelProto, an: Analysis,
                       removed, spill: rewrite.Spill | None) -> Proof:
    rewritten = run_stage(ctx, Rewrite(model, spill, ctx), an, removed)
    return run_stage(ctx, Validate(opts, model, spill, ctx), rewritten, an)


# -- the report -----------------------------------------------------------------------------
def _report(ctx: RunContext, opts: Options, model: onnx.ModelProto, an: Analysis,
            picked: targets.Selection, proof: Proof, *, calibration: Calibration | None = None,
            plan: Plan | None = None, recovery: Summary | None = None) -> Report:
    """The report of a run, filled here and nowhere else (`plan`: the run applied it)."""
    with stage("report"):
        report = _fill(ctx, opts, model, an, picked, proof, calibration, plan)
        if recovery is not None:
            report.recovery = recovery.to_dict()
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
