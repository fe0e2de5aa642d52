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

import dataclasses
import functools
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import onnx

from . import blocks, external, table
from .analysis import Analysis, Group, blocks_group, state_io
from .context import Progress, RunContext
from .errors import GraphpruneError, InputError, one_line, stage
from .io import check_opset, load
from .metrics import count_macs, count_params, node_macs
from .passes import heldout, rewrite, segments, targets, validation
from .passes import inputs as check_inputs
from .passes.calibration import Calibration
from .passes.inputs import CheckInputs
from .passes.options import Options
from .passes.recovery import Summary
from .passes.selection import GroupChoice, protected_groups, uniform_counts
from .passes.sparsify import sparsify_model
from .passes.stages import (
    Analyse,
    FromPlan,
    Proof,
    Recover,
    Rewrite,
    Score,
    Select,
    Validate,
)
from .plan import Plan, check_fingerprint, fingerprint, make_plan
from .reasons import plain, summary
from .report import GroupReport, Report, io_changes
from .table import terminal_width


@dataclass
class AnalysisResult:
    """What `graphprune.analyze` returns: the groups, why units stay, and a preview of what
    compress with the same options would remove (uniform allocation at `options.ratio`)."""

    analysis: Analysis
    options: Options | None = None
    protected: frozenset[int] = frozenset()
    """Indices of the groups --protect keeps."""
    removable: dict[int, int] | None = None
    """Group index → units compress removes from it at the ratio (uniform allocation)."""

    @property
    def groups(self) -> list[Group]:
        return self.analysis.groups

    @property
    def blockers(self) -> dict[str, int]:
        return dict(self.analysis.blockers)

    def to_dict(self) -> dict:
        g = self.analysis.graph
        groups = [gr.to_dict(g) for gr in self.groups]
        removable = self.removable or {}
        for k, d in enumerate(groups):
            d["protected"] = k in self.protected
            d["removed"] = removable.get(k, 0)
        out = {
            "groups": groups,
            "summary": {"total": len(groups),
                        "prunable": sum(1 for x in groups if x["prunable"] > 0),
                        "units": sum(x["units"] for x in groups),
                        "prunable_units": sum(x["prunable"] for x in groups),
                        "removed_units": sum(x["removed"] for x in groups)},
            "blockers": self.blockers,
        }
        if self.options is not None:
            o = self.options
            out["preview"] = {"ratio": o.ratio, "round_to": o.round_to, "rounding": o.rounding,
                              "scope": list(o.scope), "protect": o.protect,
                              "allow_io_change": o.allow_io_change}
        scope = self.options.scope if self.options else ()
        if "blocks" in scope:  # the residual blocks, and the joins that are none
            group = blocks_group(self.analysis)
            out["blocks"] = blocks.report(self.analysis.blocks, g, frozen=group.frozen
                                          if group else {})["list"]
            out["joins"] = [j.to_dict(g) for j in self.analysis.joins]
        return out

    def render(self, width: int | None = 0, limit: int | None = 40) -> str:
        """The terminal table (`width`: as Report.render; `limit`: groups shown, None: all).
        Reasons are in plain words, one per kind of cause; with `width` None (`--wide`)
        every reason is shown as recorded, with its node."""
        d = self.to_dict()
        width = terminal_width() if width == 0 else width
        scope = self.options.scope if self.options else ()
        state = [] if self.options and self.options.allow_io_change else _state_if_frozen(self)
        ratio = self.options.ratio if self.options else 0.0
        rows = []
        for gr, info in list(zip(self.groups, d["groups"], strict=True))[:limit]:
            why = ["protected by --protect"] if info["protected"] else []
            if width is None:
                why += [plain(r, scope=scope, state=state) for r in info["frozen_reasons"]]
            else:
                why += dict.fromkeys(plain(summary(r), scope=scope, state=state)
                                     for rs in gr.frozen.values() for r in rs)
            rows.append((gr.name, gr.kind, str(info["units"]), str(info["prunable"]),
                         str(info["units"] - info["removed"]), "; ".join(why) or "-"))
        columns = (table.Column("group", flex=True), table.Column("kind"),
                   table.Column("units", ">"), table.Column("prunable", ">"),
                   table.Column(f"kept@{ratio:g}", ">"),
                   table.Column("frozen because", flex=True, words=True))
        out = table.render(columns, rows, width)
        if limit is not None and len(self.groups) > limit:
            out.append(f"... {len(self.groups) - limit} more groups (--all)")
        s = d["summary"]
        out += table.paragraph(
            f"{s['total']} groups, {s['prunable']} prunable; {s['prunable_units']} of "
            f"{s['units']} units prunable, {s['removed_units']} removed at --ratio {ratio:g}",
            width)
        if d["blockers"]:
            out += table.paragraph("blockers (ops without a rule): " + ", ".join(
                f"{k} ×{v}" for k, v in sorted(d["blockers"].items())), width)
        return "\n".join(out)


def _state_if_frozen(result: AnalysisResult) -> list[str]:
    """Inputs/outputs carrying state, looked for only when units stay for reaching one."""
    if not any("graph input" in r or "graph output" in r
               for g in result.groups for rs in g.frozen.values() for r in rs):
        return []
    return state_io(result.analysis.graph, inexact="hidden" in (
        result.options.scope if result.options else ()))


def _as_model(model_or_path: onnx.ModelProto | str | os.PathLike, *,
              map_external: bool = False) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        check_opset(model_or_path)
        external.check_loaded(model_or_path)
        return model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        return load(model_or_path, external_data="map" if map_external else True)
    raise InputError(f"expected an onnx.ModelProto or a path, got {type(model_or_path).__name__}")


F = TypeVar("F", bound=Callable)


def guard_input(fn: F) -> F:
    """For API entry points whose first argument is a model or a path.

    When anything fails that is not already an InputError, ask whether the input model itself
    is at fault (`inputs.problem`); if it is, raise a one-line InputError (exit 2)
    from the failure instead of reporting a graphprune bug. Otherwise the failure goes on as
    it is (a StageError names the stage that failed).
    """

    @functools.wraps(fn)
    def guarded(model_or_path, *args, **kwargs):
        try:
            return fn(model_or_path, *args, **kwargs)
        except InputError:
            raise
        except Exception as exc:
            text = next((e for e in (exc, exc.__cause__) if isinstance(e, UnicodeDecodeError)),
                        None)
            if text is not None:  # protobuf decodes string fields when first read
                raise InputError("the input model cannot be used: a name or text in it is "
                                 f"not valid UTF-8 ({one_line(text, 300)})") from exc
            opts = kwargs.get("options")  # an Options holds them when keywords do not
            why = _diagnose(model_or_path,
                            kwargs.get("input_sizes", getattr(opts, "input_sizes", None)),
                            kwargs.get("seed", getattr(opts, "seed", 0)),
                            kwargs.get("inputs", getattr(opts, "inputs", None)))
            if why is None:
                raise
            raise InputError(f"the input model cannot be used: {why}") from exc

    return guarded  # type: ignore[return-value]


def _diagnose(model_or_path, sizes, seed, data) -> str | None:
    """`inputs.problem` with the run's validation inputs (shapes, given values)."""
    try:
        if isinstance(model_or_path, onnx.ModelProto):
            return check_inputs.problem(model_or_path, sizes, data, seed)
        if isinstance(model_or_path, (str, os.PathLike, bytes)):
            return check_inputs.problem(load(model_or_path, external_data="map"), sizes, data,
                                        seed)
    except GraphpruneError as exc:
        return str(exc)
    except Exception:  # noqa: BLE001 - a failed diagnosis must not hide the original error
        return None
    return None


@guard_input
def analyze(model_or_path: onnx.ModelProto | str | os.PathLike, *,
            allow_io_change: bool = False, options: Options | None = None,
            **settings: Any) -> AnalysisResult:
    """Find the coupled groups of a model without changing it, as compress with the same
    options would see them: units of kinds outside `scope` and groups `protect` matches stay,
    and `result.removable` previews how many units each group loses at `ratio` (uniform
    allocation, `round_to`, `rounding`). `allow_io_change`: graph inputs/outputs that carry
    state may shrink. Options as for compress (`options`, or keywords)."""
    opts = Options.build(options, allow_io_change=allow_io_change or None, **settings)
    model = _as_model(model_or_path, map_external=True)  # weights read on demand
    with stage("analysis"):
        an = Analyse(opts).run(model)
        protected = frozenset(protected_groups(an, opts.protect))
        return AnalysisResult(an, opts, protected, uniform_counts(an, opts, protected))


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
    spill: external.Spill | None = None,
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
    `max_group_ratio` of a group goes under global, sensitivity and targets; the sensitivity
    scan's `sensitivity_trials` are "plain" (removed units zeroed) or "compensated" (their
    mean contribution moved into their sinks' biases, as `recover="bias"` does; the default
    when recovery runs). A target
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
    `progress` receives progress lines. `spill` (a `external.Spill`, for large models): the
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
    chosen, held_n = _check_inputs(model, opts, opts.calib)
    ctx.lap("inputs")
    calibration = _calibration(model, opts, chosen, held_n)
    fit, held = _split(calibration, opts)
    ctx.say("analysing dependencies")
    an = run_stage(ctx, Analyse(opts), model)
    scores = run_stage(ctx, Score(opts, fit, ctx), an)
    picked = run_stage(ctx, Select(opts, model, fit, ctx, chosen.feeds(model)), an, scores)
    proof, recovered = _recover_rewrite_prove(ctx, opts, model, an, picked, spill, fit, held,
                                              chosen)
    report = _report(ctx, opts, model, an, picked, proof, chosen, calibration=calibration,
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
    spill: external.Spill | None = None,
    inputs: str | os.PathLike | dict | None = None,
    calib: str | os.PathLike | dict | None = None,
    calib_samples: int | None = None,
    holdout: float = 0.25,
    recover: str | None = None,
) -> tuple[onnx.ModelProto, Report]:
    """Apply a saved plan (graphprune.plan) to the model it was made for, with the same
    exact check as compress (`seed`, `input_sizes`, `inputs`: of that check; `spill`: as
    for compress). The plan's settings say the scope, whether the interface may change and
    the recovery; a plan that recovers weights re-runs it on `calib` (a fine-tuned copy has
    other weights; `calib_samples`, `holdout` as for compress), which it then needs, unless
    `recover` replaces the plan's method ("none"). A plan with a `sparsity` record then
    sparsifies the pruned model's layers it lists again (`calib`, `calib_samples`: the data of
    a data-driven method, as for `sparsify`). Raises InputError when the plan does not fit
    the model or its recovery has no data."""
    if not isinstance(plan, Plan):
        plan = Plan.from_dict(plan) if isinstance(plan, dict) else Plan.load(plan)
    given = {"recover": recover} if recover is not None else {}
    if calib_samples is not None:
        given["calib_samples"] = calib_samples
    opts = Options.from_dict(plan.settings, seed=seed, input_sizes=input_sizes, inputs=inputs,
                             calib=calib, holdout=holdout, **given)
    if (plan.blocks or any(g["name"] == "blocks" for g in plan.groups)) and (
            "blocks" not in opts.scope):  # a hand-written plan that names blocks
        opts = Options.build(opts, scope=(*opts.scope, "blocks"))
    if opts.recovery != "none" and calib is None:
        raise InputError(f"the plan recovers the kept weights ({opts.recovery}) from "
                         "calibration data: give the data to recover from (--calib), or "
                         "--recover none")
    ctx = RunContext(progress)
    model = _as_model(model_or_path)
    check_fingerprint(model, plan)
    if plan.sparsity is not None and not plan.groups:  # a sparsify plan: no width to prune
        sopts = Options.from_sparsity_dict(plan.sparsity, input_sizes=input_sizes, calib=calib,
                                           calib_samples=calib_samples)
        return _sparsify(ctx, sopts, model, spill, plan)
    recovering = opts.recovery != "none"
    chosen, held_n = _check_inputs(model, opts, calib if recovering else None)
    ctx.lap("inputs")
    calibration = _calibration(model, opts, chosen, held_n) if recovering else None
    fit, held = _split(calibration, opts)
    ctx.say("analysing dependencies")
    an = run_stage(ctx, Analyse(opts), model)
    picked = run_stage(ctx, FromPlan(plan, model), an)
    with stage("reading the removed units' weights"):
        warning = unmasked(an, picked.removed)
    proof, recovered = _recover_rewrite_prove(ctx, opts, model, an, picked, spill, fit, held,
                                              chosen)
    report = _report(ctx, opts, model, an, picked, proof, chosen, plan=plan,
                     calibration=calibration, recovery=recovered)
    if warning:
        report.warnings.append(warning)
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
    spill: external.Spill | None = None,
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
              spill: external.Spill | None, plan: Plan | None, *,
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
                        macs_after=macs, bytes_before=external.approx_bytes(model),
                        bytes_after=external.approx_bytes(result.model), criterion="", ratio=0.0,
                        aggregate="", normalize="", allocation="", notes=list(ctx.notes),
                        scope=[], sparsity=result.record)
        if record:
            entry = {**opts.sparsity_dict(), "layers": result.layers}
            report.plan = (dataclasses.replace(plan, sparsity=entry) if plan is not None
                           else Plan(fingerprint(model), [], {}, sparsity=entry))
        else:
            report.plan = plan
    ctx.lap("report")
    report.timings, report.seconds = ctx.timings, ctx.seconds
    return result.model, report


def unmasked(an: Analysis, removed: np.ndarray) -> str | None:
    """Why the pruned model will not compute what this model computes, when the removed
    units' sink weights are not zero here (a plan applied to a model not fine-tuned with its
    masks): the exact check compares against this model with them masked, which differs."""
    hits = []
    for g in an.groups:
        if not removed[g.units].any():
            continue
        worst, scale = 0.0, 0.0
        for m in g.members:
            if m.role != "sink":
                continue
            w = an.graph.const(an.graph.nodes[m.node].input[m.index])
            if w is None or not np.issubdtype(w.dtype, np.floating):
                continue
            shape = [1] * w.ndim
            for a, n in zip(m.span.axes, m.span.ids.shape, strict=True):
                shape[a] = n
            gone = removed[an.roots[m.span.ids]].reshape(shape)
            worst = max(worst, float(np.max(np.abs(w) * gone, initial=0.0)))
            scale = max(scale, float(np.max(np.abs(w) * ~gone, initial=0.0)))
        if worst > 0:
            hits.append((g.name, worst, scale))
    if not hits:
        return None
    name, worst, scale = hits[0]
    return (f"the plan's removed units are not zero in this model ({len(hits)} group"
            f"{'s' if len(hits) > 1 else ''}, e.g. '{name}': removed weights up to "
            f"{worst:.3g}, kept up to {scale:.3g}): the output is not equal to this model but "
            "to it with those units masked (the exact check proves that); fine-tune with the "
            "plan's masks to make them zero")


def _calibration(model: onnx.ModelProto, opts: Options, chosen: CheckInputs,
                 held_n: int) -> Calibration | None:
    """The calibration samples (the exact check's held-back ones, `held_n`, left out)."""
    if not opts.needs_calibration:
        return None
    with stage("reading calibration data"):
        return Calibration(model, opts.calib, samples=opts.calib_samples, seed=opts.seed,
                           inputs=chosen, hold_back=held_n)


def _split(calibration: Calibration | None, opts: Options,
           ) -> tuple[Calibration | None, Calibration | None]:
    """(samples for statistics, samples held back to measure recovery): with recovery the
    last `holdout` share of the calibration data is never used by anything else."""
    if calibration is None or opts.recovery == "none":
        return calibration, None
    return calibration.split(opts.holdout)


def _recover_rewrite_prove(ctx: RunContext, opts: Options, model: onnx.ModelProto,
                           an: Analysis, picked: targets.Selection,
                           spill: external.Spill | None, fit: Calibration | None,
                           held: Calibration | None,
                           chosen: CheckInputs) -> tuple[Proof, Summary]:
    """Recovery (when asked for and something was removed), then the rewrite of the updated
    model proven against it, then fidelity on the held-back samples."""
    method = opts.recovery
    if method == "none":
        why = ("--recover none" if opts.recover == "none" else
               "no calibration data: give real samples (--calib) to refit the kept weights "
               "(--recover refit)")
        return _rewrite_and_prove(ctx, opts, model, an, picked.removed, spill, chosen), Summary(
            "none", reason=why)
    if not picked.removed.any():
        proof = _rewrite_and_prove(ctx, opts, model, an, picked.removed, spill, chosen)
        return proof, Summary(method, reason="nothing was removed")
    rec = run_stage(ctx, Recover(opts, model, fit, ctx, spill), an, picked.removed)
    proof = _rewrite_and_prove(ctx, opts, rec.model, rec.an, rec.removed, spill, chosen)
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
                       removed: np.ndarray, spill: external.Spill | None,
                       chosen: CheckInputs) -> Proof:
    rewritten = run_stage(ctx, Rewrite(model, spill, ctx), an, removed)
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
    return external.mapped(model) and external.weight_bytes(model) >= segments.SEGMENT_MIN_BYTES


# -- the report -----------------------------------------------------------------------------
def _report(ctx: RunContext, opts: Options, model: onnx.ModelProto, an: Analysis,
            picked: targets.Selection, proof: Proof, chosen: CheckInputs, *,
            calibration: Calibration | None = None, plan: Plan | None = None,
            recovery: Summary | None = None) -> Report:
    """The report of a run, filled here and nowhere else (`plan`: the run applied it)."""
    with stage("report"):
        report = _fill(ctx, opts, model, an, picked, proof, chosen, calibration, plan, recovery)
        if recovery is not None:
            report.recovery = recovery.to_dict()
    ctx.lap("report")
    report.timings, report.seconds = ctx.timings, ctx.seconds
    return report


def _fill(ctx: RunContext, opts: Options, model: onnx.ModelProto, an: Analysis,
          picked: targets.Selection, proof: Proof, chosen: CheckInputs,
          calibration: Calibration | None, plan: Plan | None,
          recovery: Summary | None = None) -> Report:
    pruned = proof.pruned
    feeds = chosen.feeds(model)
    io = rewrite.removed_io(an, picked.removed)
    settings = plan.settings if plan is not None else {}
    report = Report(
        params_before=count_params(model), params_after=count_params(pruned),
        macs_before=count_macs(model, feeds),
        macs_after=count_macs(pruned, validation.shrink_feeds(feeds, io)),
        bytes_before=external.approx_bytes(model),
        bytes_after=external.approx_bytes(pruned),
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
    _groups(report, picked.choices, an, picked.removed)
    report.io_state = _io_state(an, opts, report)
    if an.blocks:
        group = blocks_group(an)
        report.blocks = blocks.report(
            an.blocks, an.graph, picked.removed, frozen=group.frozen if group else {},
            scores=ctx.figures.get("block_scores"), criterion=ctx.figures.get(
                "block_criterion"), macs=node_macs(model, feeds))
    if opts.metric:
        reached = {"macs": report.macs_ratio, "params": report.params_ratio}.get(
            opts.metric, _latency_ratio(picked.latency))
        report.target = {**targets.outcome(opts.metric, opts.target, reached), **picked.search}
        explained = picked.search.get("flat") or picked.search.get("reachable") is False
        recovered = recovery is not None and recovery.method != "none" and not recovery.reason
        if plan is None and not report.target["met"] and reached > opts.target \
                and not explained:
            report.notes.append(
                f"the params target was not reached: recovery ({recovery.method}) added "
                "parameters (a bias for each updated layer that had none, a copy of a shared "
                f"weight it refit), so the written model keeps {reached:.3f} of them; "
                "`--recover none` keeps the width plan's count, or aim lower"
                if recovered and opts.metric == "params" else
                f"the {opts.metric} target was not reached: removing at most "
                f"{opts.max_group_ratio:.0%} of each group (--max-group-ratio) and keeping "
                f"frozen units gets to {reached:.3f}")
    return report


def _latency_ratio(latency: dict[str, float]) -> float:
    return latency["after"] / latency["before"] if latency.get("before") else 1.0


def _groups(report: Report, choices: list[GroupChoice], an: Analysis, removed) -> None:
    """Per group: units before and after (none after when its block was removed), frozen
    and why; the summary counts."""
    reasons: Counter = Counter()
    gone = {u for b in an.blocks if removed[b.unit] for u in b.inner}
    for c in choices:
        g = c.group
        why = sorted({r for rs in g.frozen.values() for r in rs})
        if c.protected:
            why = ["protected by --protect", *why]
        if c.kept:
            why = [c.kept, *why]
        after = 0 if g.units[0] in gone else len(g.units) - len(c.removed)
        report.group_details.append(GroupReport(
            g.name, len(g.units), after, len(g.frozen), why, g.kind))
        for rs in g.frozen.values():
            for r in dict.fromkeys(summary(x) for x in rs):  # not a set: JSON order
                reasons[r] += 1
    report.groups = {
        "total": len(choices),
        "pruned": sum(1 for c in choices if c.removed),
        "frozen": sum(1 for c in choices if not c.group.prunable),
    }
    report.frozen_reasons = dict(reasons)


def _io_state(an: Analysis, opts: Options, report: Report) -> list[str]:
    """Graph inputs/outputs that carry state and stayed (without allow_io_change), looked
    for only when some units stay because they reach one."""
    if opts.allow_io_change or not any("graph input" in r or "graph output" in r
                                       for r in report.frozen_reasons):
        return []
    return state_io(an.graph, inexact="hidden" in opts.scope)


def check_input_sizes(model: onnx.ModelProto, sizes: dict[str, list[int]] | None) -> None:
    """Shapes given for validation must name graph inputs and fit their declared shapes
    (rank, static dims); said now, in one line, not when onnxruntime refuses them."""
    check_inputs.check_sizes(validation.input_specs(model), sizes)
