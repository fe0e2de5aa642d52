"""The compress pipeline: load → analyse → score → select → rewrite → validate → report."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from .analysis import DEFAULT_SCOPE, Analysis, Group, analyze_graph, apply_scope
from .errors import InputError, ValidationError
from .io import check_opset, guard_input, load
from .ir import Graph, approx_bytes
from .metrics import count_macs, count_params
from .passes import rewrite, scoring, selection, validation
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


def _as_model(model_or_path: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        check_opset(model_or_path)
        return model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        return load(model_or_path)
    raise InputError(f"expected an onnx.ModelProto or a path, got {type(model_or_path).__name__}")


@guard_input
def analyze(model_or_path: onnx.ModelProto | str | os.PathLike) -> AnalysisResult:
    """Find the coupled groups of a model without changing it."""
    model = _as_model(model_or_path)
    return AnalysisResult(analyze_graph(Graph(model)))


@guard_input
def compress(
    model_or_path: onnx.ModelProto | str | os.PathLike,
    ratio: float = 0.4,
    criterion: str = "l1",
    *,
    round_to: int = 1,
    protect: str | None = None,
    seed: int = 0,
    input_sizes: dict[str, list[int]] | None = None,
    progress: Progress | None = None,
    scope: tuple[str, ...] | list[str] | str = DEFAULT_SCOPE,
) -> tuple[onnx.ModelProto, Report]:
    """Prune `ratio` of every prunable group's units and prove the result exact.

    `scope` picks unit kinds: channels, heads, ffn (default) and hidden (opt-in: the residual
    stream, through LayerNorm/RMSNorm, inexact). With hidden units removed, the exact check
    runs on the exact part of the plan and the report gives the full plan's fidelity.
    Returns the pruned model and its report. Raises ValidationError (nothing to write) when
    the rewrite does not match the masked original.
    """
    scope = tuple(x.strip() for x in scope.split(",")) if isinstance(scope, str) else tuple(scope)
    if not 0.0 <= ratio < 1.0:
        raise InputError(f"ratio must be in [0, 1), got {ratio}")
    if round_to < 1:
        raise InputError(f"round-to must be a positive integer, got {round_to}")
    if criterion not in scoring.CRITERIA:
        raise InputError(f"unknown criterion '{criterion}' "
                         f"(choose from {', '.join(sorted(scoring.CRITERIA))})")
    _check_regex(protect)
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 4)
        return now

    model = _as_model(model_or_path)
    t = time.perf_counter()
    say("analysing dependencies")
    an = analyze_graph(Graph(model), inexact="hidden" in scope)
    apply_scope(an, scope)
    t = lap("analysis", t)
    say(f"scoring {sum(len(g.units) for g in an.groups)} units ({criterion})")
    scores = scoring.score_units(an, criterion, seed)
    removed, choices = selection.select_uniform(an, scores, ratio, round_to, protect)
    t = lap("selection", t)
    say(f"rewriting ({int(removed.sum())} units removed)")
    inexact = _inexact_roots(an)
    exact_part = removed & ~inexact
    pruned = rewrite.prune_model(model, an, exact_part) if exact_part.any() else _unchanged(model)
    t = lap("rewrite", t)
    say("validating in onnxruntime")
    check, pruned_bytes = _prove(model, pruned, an, exact_part, seed, input_sizes)
    fidelity = None
    if (removed & inexact).any():
        say("rewriting inexact (hidden-size) units and measuring fidelity")
        pruned = rewrite.prune_model(model, an, removed)
        pruned_bytes = validation.serialize(pruned)
        validation.structural_check(pruned, pruned_bytes)
        fidelity = validation.fidelity(validation.session(model),
                                       validation.session(pruned, pruned_bytes), model,
                                       seed=seed, sizes=input_sizes)
    t = lap("validation", t)
    if not check.passed:
        bad = max((r for r in check.runs if not r["passed"]), key=lambda r: r["max_abs_err"])
        raise ValidationError(
            f"exact check failed: output '{bad['output']}' at batch {bad['batch']} differs from "
            f"the masked original by {bad['max_abs_err']:.3e} (output scale {bad['scale']:.3e}); "
            "nothing was written. This is a graphprune bug: please report it with --verbose")
    feeds = validation.make_inputs(model, batch=1, seed=seed, sizes=input_sizes)
    report = Report(
        params_before=count_params(model), params_after=count_params(pruned),
        macs_before=count_macs(model, feeds), macs_after=count_macs(pruned, feeds),
        bytes_before=approx_bytes(model),
        bytes_after=len(pruned_bytes) if pruned_bytes else approx_bytes(pruned),
        criterion=criterion, ratio=ratio,
        exact_check=check.to_dict(),
        scope=list(scope), fidelity=fidelity or {},
    )
    _fill_groups(report, an, choices)
    lap("report", t)
    report.timings = timings
    report.seconds = round(time.perf_counter() - t0, 3)
    return pruned, report


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


def _unchanged(model: onnx.ModelProto) -> onnx.ModelProto:
    """Nothing removed (ratio 0, or no prunable unit): the output is the input, as is."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _prove(model: onnx.ModelProto, pruned: onnx.ModelProto, an: Analysis, removed,
           seed: int, sizes: dict[str, list[int]] | None):
    """Checker + exact check of `pruned` against the masked original."""
    data = validation.serialize(pruned)
    try:
        validation.structural_check(pruned, data)
    except ValidationError:
        try:  # a complaint the original shares (a deprecated op, say) is not ours to fix
            validation.structural_check(model)
        except ValidationError:
            pass
        else:
            raise
    candidate = validation.session(pruned, data)
    overrides = rewrite.mask_overrides(model, an, removed)
    if overrides is not None:
        reference = validation.session(model, overrides=overrides)
    else:
        reference = validation.session(rewrite.masked_model(model, an, removed))
    return validation.exact_check(reference, candidate, model, seed=seed, sizes=sizes), data


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
            for r in set(_base_reason(x) for x in rs):
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

