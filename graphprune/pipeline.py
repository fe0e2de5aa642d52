"""The compress pipeline: load → analyse → score → select → rewrite → validate → report."""

from __future__ import annotations

import functools
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from .analysis import DEFAULT_SCOPE, Analysis, Group, analyze_graph, apply_scope
from .errors import InputError, ValidationError, stage
from .io import check_loaded, check_opset, guard_input, load, mapped
from .ir import Graph, approx_bytes
from .metrics import count_macs, count_params
from .passes import inputs as check_inputs
from .passes import noise, rewrite, scoring, segments, selection, targets, validation, witness
from .passes.allocation import ALLOCATIONS
from .passes.calibration import Calibration
from .passes.inputs import CheckInputs
from .plan import Plan, check_fingerprint, make_plan, removed_from_plan
from .report import GroupReport, Report

Progress = Callable[[str], None]


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


@guard_input
def compress(
    model_or_path: onnx.ModelProto | str | os.PathLike,
    ratio: float = 0.4,
    criterion: str = "l1",
    *,
    round_to: int = 1,
    rounding: str = "down",
    protect: str | None = None,
    seed: int = 0,
    input_sizes: dict[str, list[int]] | None = None,
    progress: Progress | None = None,
    scope: tuple[str, ...] | list[str] | str = DEFAULT_SCOPE,
    aggregate: str = "sum",
    normalize: str | None = None,
    allocation: str = "uniform",
    max_group_ratio: float = 0.9,
    target_macs: float | None = None,
    target_params: float | None = None,
    target_latency: float | None = None,
    calib: str | os.PathLike | dict[str, np.ndarray] | None = None,
    calib_samples: int = 32,
    allow_io_change: bool = False,
    spill: rewrite.Spill | None = None,
    inputs: str | os.PathLike | dict[str, np.ndarray] | None = None,
) -> tuple[onnx.ModelProto, Report]:
    """Prune `ratio` of every prunable group's units and prove the result exact.

    Scoring: `criterion` (see `graphprune.passes.scoring.CRITERIA`), member scores combined by
    `aggregate` (sum/mean/max), normalised within groups by `normalize` (none/mean/max/sum/
    standard; None: the criterion's default). Data-driven criteria and the sensitivity scan
    run `calib` (arrays per graph input, or an .npz path; generated when None) through
    onnxruntime. `allocation` is uniform (ratio per group), global (one ranking) or
    sensitivity (measured error per cost); at most `max_group_ratio` of a group goes under
    global, sensitivity and targets. A target (`target_macs`, `target_params`,
    `target_latency`: fractions of the original) replaces `ratio` and is met by search.
    `report.plan` holds the plan (graphprune.plan) of the run. `rounding` (uniform
    allocation): "down" removes ⌊ratio·n⌋ units of a group of n, never more than asked; "up"
    removes ⌈ratio·n⌉ (Torch-Pruning's convention).

    `scope` picks unit kinds: channels, heads, ffn (default) and hidden (opt-in: the residual
    stream, through LayerNorm/RMSNorm, inexact). With hidden units removed, the exact check
    runs on the exact part of the plan and the report gives the full plan's fidelity.
    `allow_io_change`: graph inputs and outputs that carry state (units entering through an
    input and leaving through an output: a KV cache's past and present key/values) may
    shrink along static unit axes; the report lists the changed shapes (`io_changes`).
    `spill` (a `rewrite.Spill`, for large models): the rewritten weights go to its temporary
    file as they are made and the pruned model refers to them there as external data, until
    `graphprune.io.save_atomic` copies them out; keep it open until then.
    Validation inputs (passes/inputs.py): `inputs` (arrays by input name or an .npz path,
    samples on axis 0) are what the exact check runs; else, with `calib`, calibration
    samples held back from scoring; else `input_sizes` (shapes by input name, as given) and
    for dims left open the default shapes, or others the original runs on.
    Returns the pruned model and its report. Raises ValidationError (nothing to write) when
    the rewrite does not match the masked original.
    """
    scope = tuple(x.strip() for x in scope.split(",")) if isinstance(scope, str) else tuple(scope)
    if not 0.0 <= ratio < 1.0:
        raise InputError(f"ratio must be in [0, 1), got {ratio}")
    if round_to < 1:
        raise InputError(f"round-to must be a positive integer, got {round_to}")
    if rounding not in selection.ROUNDINGS:
        raise InputError(f"unknown rounding '{rounding}' (choose from "
                         f"{', '.join(selection.ROUNDINGS)})")
    if criterion not in scoring.CRITERIA:
        raise InputError(f"unknown criterion '{criterion}' "
                         f"(choose from {', '.join(sorted(scoring.CRITERIA))})")
    _check_regex(protect)
    req = _request(ratio, allocation, round_to, protect, max_group_ratio,
                   target_macs, target_params, target_latency)
    req.rounding = rounding
    try:
        scoring.check_options(criterion, aggregate, normalize)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    say = progress or (lambda _msg: None)
    clock = _Clock()
    model = _as_model(model_or_path)
    chosen, held = _check_inputs(model, input_sizes, inputs, calib, seed)
    clock.lap("inputs")
    calibration = None
    if criterion in scoring.NEEDS_DATA or allocation == "sensitivity":
        with stage("reading calibration data"):
            calibration = Calibration(model, calib, samples=calib_samples, seed=seed,
                                      inputs=chosen, hold_back=held)
    say("analysing dependencies")
    with stage("analysis"):
        an = analyze_graph(Graph(model), inexact="hidden" in scope, io=allow_io_change)
        apply_scope(an, scope)
    clock.lap("analysis")
    notes: list[str] = []
    say(f"scoring {sum(len(g.units) for g in an.groups)} units ({criterion})")
    with stage(f"scoring ({criterion})"):
        scores = scoring.score_units(an, criterion, seed, aggregate=aggregate,
                                     normalize=normalize, calibration=calibration,
                                     progress=say, notes=notes)
    clock.lap("scoring")
    with stage(f"selection ({allocation} allocation"
               + (f", {req.metric} target)" if req.metric else ")")):
        selector = targets.Selector(model, an, scores, req, calibration=calibration,
                                    feeds=chosen.feeds(model), progress=say, notes=notes)
        picked = _select(selector, model, an)
    clock.lap("selection")
    pruned, report = _rewrite_and_prove(model, an, picked.removed, picked.choices, seed,
                                        chosen, say, clock, spill)
    with stage("report"):
        report.criterion, report.ratio, report.scope = criterion, ratio, list(scope)
        _fill_selection(report, req, picked, an, aggregate,
                        normalize or scoring.DEFAULT_NORMALIZE[criterion], calibration, notes)
        report.plan = make_plan(model, an, picked.removed,
                                _settings(report, req, seed, allow_io_change))
    clock.finish(report)
    return pruned, report


@guard_input
def apply_plan(
    model_or_path: onnx.ModelProto | str | os.PathLike,
    plan: Plan | dict | str | os.PathLike,
    *,
    seed: int = 0,
    input_sizes: dict[str, list[int]] | None = None,
    progress: Progress | None = None,
    spill: rewrite.Spill | None = None,
    inputs: str | os.PathLike | dict[str, np.ndarray] | None = None,
) -> tuple[onnx.ModelProto, Report]:
    """Apply a saved plan (graphprune.plan) to the model it was made for, with the same
    exact check as compress (`spill`, `inputs`, `input_sizes`: as for compress). Raises
    InputError when the plan does not fit the model."""
    if not isinstance(plan, Plan):
        plan = Plan.from_dict(plan) if isinstance(plan, dict) else Plan.load(plan)
    say = progress or (lambda _msg: None)
    clock = _Clock()
    model = _as_model(model_or_path)
    check_fingerprint(model, plan)
    chosen, _ = _check_inputs(model, input_sizes, inputs, None, seed)
    clock.lap("inputs")
    say("analysing dependencies")
    st = plan.settings
    scope = tuple(st.get("scope") or DEFAULT_SCOPE)
    with stage("analysis"):
        an = analyze_graph(Graph(model), inexact="hidden" in scope,
                           io=bool(st.get("allow_io_change", False)))
        apply_scope(an, scope)
    removed = removed_from_plan(model, an, plan)
    choices = [selection.GroupChoice(g, [u for u in g.units if removed[u]]) for g in an.groups]
    clock.lap("analysis")
    pruned, report = _rewrite_and_prove(model, an, removed, choices, seed, chosen, say,
                                        clock, spill)
    report.criterion = str(st.get("criterion", "plan"))
    report.ratio = float(st.get("ratio", 0.0))
    report.allocation = "plan"
    report.scope = list(scope)
    report.target = dict(st.get("target") or {})
    if report.target:
        report.target["reached"] = round(_reached(report, report.target["metric"], {}), 4)
        report.target["met"] = _met(report.target)
    report.plan = plan
    clock.finish(report)
    return pruned, report


class _Clock:
    def __init__(self) -> None:
        self.t0 = self.t = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.t, 4)
        self.t = now

    def finish(self, report: Report) -> None:
        self.lap("report")
        report.timings = self.timings
        report.seconds = round(time.perf_counter() - self.t0, 3)


def _rewrite_and_prove(model: onnx.ModelProto, an: Analysis, removed: np.ndarray,
                       choices: list[selection.GroupChoice], seed: int,
                       chosen: CheckInputs, say: Progress,
                       clock: _Clock, spill: rewrite.Spill | None = None,
                       ) -> tuple[onnx.ModelProto, Report]:
    say(f"rewriting ({int(removed.sum())} units removed)")
    inexact = _inexact_roots(an)
    exact_part = removed & ~inexact
    with stage("rewrite"):
        pruned = (rewrite.prune_model(model, an, exact_part, spill) if exact_part.any()
                  else _unchanged(model))
    clock.lap("rewrite")
    say("validating in onnxruntime")
    with stage("validation in onnxruntime"):
        check = _prove(model, pruned, an, exact_part, chosen, spill)
    fidelity = None
    if (removed & inexact).any():
        say("rewriting inexact (hidden-size) units and measuring fidelity")
        with stage("rewrite of the inexact (hidden-size) units"):
            pruned = rewrite.prune_model(model, an, removed, spill)
        with stage("fidelity measurement"):
            parts = validation.split(pruned)
            validation.structural_check(pruned, parts=parts)
            threads = validation.pair_threads()
            fidelity = validation.fidelity(
                validation.session(model, threads=threads),
                validation.session(pruned, parts=parts, threads=threads),
                model, io=rewrite.removed_io(an, removed),
                feeds=chosen.feeds(model, len(chosen.shapes) - 1, seed + 1))
    clock.lap("validation")
    if check.unproven:
        raise ValidationError(f"exact check not proven: {check.unproven}; nothing was written")
    if not check.passed:
        raise ValidationError(
            f"exact check failed: {check.failure()}; nothing was written. This is a graphprune "
            "bug: please report it with --verbose")
    with stage("report"):
        feeds = chosen.feeds(model)
        io = rewrite.removed_io(an, removed if fidelity is not None else exact_part)
        report = Report(
            params_before=count_params(model), params_after=count_params(pruned),
            macs_before=count_macs(model, feeds),
            macs_after=count_macs(pruned, validation.shrink_feeds(feeds, io)),
            bytes_before=approx_bytes(model),
            bytes_after=approx_bytes(pruned),
            exact_check=check.to_dict(), fidelity=fidelity or {},
        )
        _fill_groups(report, an, choices)
        report.io_changes = _io_report(model, pruned)
    return pruned, report


def _io_report(model: onnx.ModelProto, pruned: onnx.ModelProto) -> list[dict]:
    """Graph inputs and outputs whose declared shapes changed: old → new."""
    def shapes(m: onnx.ModelProto, kind: str, values) -> dict[str, tuple]:
        inits = {t.name for t in m.graph.initializer}
        return {(kind, v.name): [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                 for d in v.type.tensor_type.shape.dim]
                for v in values if v.name not in inits}

    before = {**shapes(model, "input", model.graph.input),
              **shapes(model, "output", model.graph.output)}
    after = {**shapes(pruned, "input", pruned.graph.input),
             **shapes(pruned, "output", pruned.graph.output)}
    return [{"name": name, "kind": kind, "before": dims, "after": after[(kind, name)]}
            for (kind, name), dims in before.items()
            if (kind, name) in after and after[(kind, name)] != dims]


# -- allocation and targets -----------------------------------------------------------------
def _request(ratio, allocation, round_to, protect, max_group_ratio, target_macs,
             target_params, target_latency) -> targets.Request:
    if allocation not in ALLOCATIONS:
        raise InputError(f"unknown allocation '{allocation}' "
                         f"(choose from {', '.join(ALLOCATIONS)})")
    if not 0.0 < max_group_ratio < 1.0:
        raise InputError(f"max-group-ratio must be in (0, 1), got {max_group_ratio}")
    given = {k: v for k, v in (("macs", target_macs), ("params", target_params),
                               ("latency", target_latency)) if v is not None}
    if len(given) > 1:
        raise InputError(f"give one target, not {len(given)} "
                         f"({', '.join('--target-' + k for k in given)})")
    metric, value = next(iter(given.items()), (None, None))
    if value is not None and not 0.0 < value <= 1.0:
        raise InputError(f"target-{metric} must be a fraction of the original in (0, 1], "
                         f"got {value}")
    return targets.Request(ratio, allocation, round_to, protect, max_group_ratio, metric, value)


def _select(selector: targets.Selector, model: onnx.ModelProto,
            an: Analysis) -> targets.Selection:
    """Select; for MAC/parameter targets, correct the target when the rewritten model's real
    count strays from the cost model's (MACs of activation × activation products)."""
    req = selector.req
    picked = selector.select()
    if req.metric not in ("macs", "params") or not selector.cost.approximate(req.metric):
        return picked
    aim = req.target
    for _ in range(3):
        reached = _real_fraction(model, an, picked.removed, req.metric, selector.feeds)
        if abs(reached - req.target) <= targets.TOLERANCE * req.target:
            break
        aim = min(1.0, max(1e-6, aim + (req.target - reached)))
        picked = selector.select(aim)
    return picked


def _real_fraction(model, an, removed, metric: str, feeds) -> float:
    if not removed.any():
        return 1.0
    pruned = rewrite.prune_model(model, an, removed)
    if metric == "macs":
        before = count_macs(model, feeds)
        after = count_macs(pruned, validation.shrink_feeds(feeds, rewrite.removed_io(an, removed)))
        return after / before if before else 1.0
    before = count_params(model)
    return count_params(pruned) / before if before else 1.0


def _reached(report: Report, metric: str, latency: dict[str, float]) -> float:
    if metric == "macs":
        return report.macs_ratio
    if metric == "params":
        return report.params_ratio
    return latency["after"] / latency["before"] if latency.get("before") else 1.0


def _met(target: dict) -> bool:
    return abs(target["reached"] - target["value"]) <= targets.TOLERANCE * target["value"]


def _fill_selection(report: Report, req: targets.Request, picked: targets.Selection,
                    an: Analysis, aggregate: str, normalize: str, calibration,
                    notes: list[str]) -> None:
    report.aggregate, report.normalize, report.allocation = aggregate, normalize, req.allocation
    report.notes = list(dict.fromkeys(notes))
    if calibration is not None:
        report.calibration = calibration.describe()
    if picked.latency:
        report.latency_ms = {k: round(v * 1e3, 4) for k, v in picked.latency.items()}
    if req.metric:
        reached = _reached(report, req.metric, picked.latency)
        report.target = {"metric": req.metric, "value": req.target, "reached": round(reached, 4),
                         "tolerance": targets.TOLERANCE}
        report.target["met"] = _met(report.target)
        if not report.target["met"] and reached > req.target:
            report.notes.append(f"the {req.metric} target was not reached: removing at most "
                                f"{req.max_group_ratio:.0%} of each group (--max-group-ratio) "
                                f"and keeping frozen units gets to {reached:.3f}")
    report.sensitivity = {an.groups[gi].name: [[c, round(e, 6)] for c, e in sorted(curve)]
                          for gi, curve in picked.curves.items()}


def _settings(report: Report, req: targets.Request, seed: int, allow_io: bool) -> dict:
    from . import __version__

    return {"criterion": report.criterion, "aggregate": report.aggregate,
            "normalize": report.normalize, "allocation": req.allocation, "ratio": req.ratio,
            "round_to": req.round_to, "rounding": req.rounding, "protect": req.protect,
            "max_group_ratio": req.max_group_ratio, "scope": report.scope, "seed": seed,
            "allow_io_change": allow_io,
            "target": ({"metric": req.metric, "value": req.target} if req.metric else None),
            "graphprune": __version__}


def _inexact_roots(an: Analysis) -> np.ndarray:
    mask = np.zeros(len(an.roots), dtype=bool)
    for root, tags in an.uf.tags.items():
        if "inexact" in tags:
            mask[root] = True
    return mask


def _check_regex(protect: str | None) -> None:
    if protect is not None:
        try:
            re.compile(protect)
        except re.error as exc:
            raise InputError(f"--protect '{protect}' is not a valid regular expression "
                             f"({exc})") from None


def check_input_sizes(model: onnx.ModelProto, sizes: dict[str, list[int]] | None) -> None:
    """Shapes given for validation must name graph inputs and fit their declared shapes
    (rank, static dims); said now, in one line, not when onnxruntime refuses them."""
    check_inputs.check_sizes(validation.input_specs(model), sizes)


def _check_inputs(model: onnx.ModelProto, sizes: dict[str, list[int]] | None,
                  data: str | os.PathLike | dict[str, np.ndarray] | None,
                  calib: str | os.PathLike | dict[str, np.ndarray] | None,
                  seed: int) -> tuple[CheckInputs, int]:
    """The exact check's inputs (passes/inputs.py) and how many calibration samples, at the
    end of `calib`, they hold back from scoring: given `data`, else held-back calibration
    samples, else shapes (`sizes` as given, open dims by search). A model too large to run
    whole once more (segment-by-segment validation) gets the default shapes unrun."""
    run = "never" if _large(model) else "choose"
    if data is not None or calib is None:
        with stage("choosing validation inputs"):
            return check_inputs.resolve(model, sizes, data, seed=seed, run=run), 0
    specs = validation.input_specs(model)
    with stage("reading calibration data"):
        given = check_inputs.load_arrays(calib, specs, "calibration data")
    held = check_inputs.hold_back(given)
    with stage("choosing validation inputs"):
        if not held:
            chosen = check_inputs.resolve(model, sizes, seed=seed, run=run)
            chosen.notes.append(f"calibration data has {given.samples} sample(s), too few to "
                                "hold any back for validation: generated inputs checked")
            return chosen, 0
        first = given.samples - held
        where = calib if isinstance(calib, (str, os.PathLike)) else "calibration arrays"
        source = (f"held-back calibration samples {first}-{given.samples - 1} of {where} "
                  "(never used for scoring)")
        return check_inputs.resolve(model, data=given.tail(held), seed=seed, run=run,
                                    source=source), held


def _large(model: onnx.ModelProto) -> bool:
    """Validated segment by segment (see _prove): never run whole for choosing inputs."""
    return mapped(model) and segments.weight_bytes(model) >= segments.SEGMENT_MIN_BYTES


def _unchanged(model: onnx.ModelProto) -> onnx.ModelProto:
    """Nothing removed (ratio 0, or no prunable unit): the output is the input, as is."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _prove(model: onnx.ModelProto, pruned: onnx.ModelProto, an: Analysis, removed,
           chosen: CheckInputs, spill: rewrite.Spill | None = None) -> validation.CheckResult:
    """Checker + exact check of `pruned` against the masked original on the chosen inputs;
    outputs that prove nothing there are backed by the tensors before them (witness)."""
    runs = chosen.runs(model)

    @functools.cache
    def masked() -> tuple[onnx.ModelProto, dict[str, np.ndarray] | None]:
        overrides = rewrite.mask_overrides(model, an, removed, spill)
        if overrides is None:
            return rewrite.masked_model(model, an, removed), None
        return model, overrides

    check = _exact(model, pruned, an, removed, runs, masked, spill)
    check.inputs = chosen.describe()
    return witness.prove(check, model, pruned, masked, an, removed, runs,
                         rewrite.removed_io(an, removed))


def _exact(model: onnx.ModelProto, pruned: onnx.ModelProto, an: Analysis, removed,
           runs: validation.Runs, masked: noise.Masked,
           spill: rewrite.Spill | None = None) -> validation.CheckResult:
    """Checker + exact check of `pruned` against the masked original (`masked` makes it)."""
    parts = validation.split(pruned)  # shared by the checker and the session
    try:
        validation.structural_check(pruned, parts=parts)
    except ValidationError:
        try:  # a complaint the original shares (a deprecated op, say) is not ours to fix
            validation.structural_check(model)
        except ValidationError:
            pass
        else:
            raise
    io = rewrite.removed_io(an, removed)

    def reference(threads: int = 0):
        overrides = rewrite.mask_overrides(model, an, removed, spill)
        if overrides is None:
            return validation.session(rewrite.masked_model(model, an, removed),
                                      threads=threads)
        known = an.graph.loaded_initializers() if an.graph.model is model else None
        return validation.session(model, overrides=overrides, parts=validation.split(
            model, overrides, known=known), threads=threads)

    floor = noise.sources(masked)  # the reference's float noise, should the static check fail
    if (mapped(model) or mapped(pruned)) and (
            segments.weight_bytes(model) >= segments.SEGMENT_MIN_BYTES):
        # a large model: the same runs, a segment of each graph at a time (see segments)
        del parts
        overrides = rewrite.mask_overrides(model, an, removed, spill)
        ref = (segments.Side(rewrite.masked_model(model, an, removed)) if overrides is None
               else segments.Side(model, overrides))
        return segments.exact_check(ref, segments.Side(pruned), model, io=io, runs=runs)
    if mapped(model) or mapped(pruned):
        # weights memory-mapped (a large model): one model's weights in memory at a time,
        # the reference's runs first, then the candidate's on the same inputs
        del parts
        return validation.exact_check(reference, lambda: validation.session(pruned), model,
                                      io=io, noise=floor, runs=runs)
    # half the cores for each session: exact_check runs the two side by side
    threads = validation.pair_threads()
    candidate = validation.session(pruned, parts=parts, threads=threads)
    del parts
    return validation.exact_check(reference(threads), candidate, model, io=io, noise=floor,
                                  runs=runs)


def _fill_groups(report: Report, an: Analysis, choices: list[selection.GroupChoice]) -> None:
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
    report.blockers = dict(an.blockers)
    report.frozen_reasons = dict(reasons)


def _base_reason(reason: str) -> str:
    """'no rule for op X (X node_3)' → 'no rule for op X', for the summary table."""
    cut = reason.rfind(" (")
    return reason[:cut] if cut > 0 else reason

