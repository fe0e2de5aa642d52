"""One options object (`graphprune.Options`), `--rounding` under every allocation and target,
the run context, and the stages' contracts (a broken one is an internal error naming the
stage)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import onnx
import pytest
import zoo
from graphprune.passes import criteria, prove, selection, stages, targets

import graphprune
from graphprune.cli import main
from graphprune.context import RunContext
from graphprune.errors import InputError, StageError

SETTINGS_KEYS = ["criterion", "aggregate", "normalize", "allocation", "ratio", "round_to",
                 "rounding", "protect", "max_group_ratio", "scope", "seed", "allow_io_change",
                 "target", "recover", "refit_order", "recover_budget_mb", "graphprune"]
"""The plan's `settings`, in the order plans have always written them."""


def bottleneck() -> str:
    return str(zoo.exported("resnet_bottleneck", "torchscript"))


def removed_per_group(report) -> list[tuple[int, int]]:
    """(units, units removed) of every group that could lose units."""
    return [(d.units_before, d.units_before - d.units_after) for d in report.group_details
            if d.frozen == 0 and d.units_before > 1]


# -- the options object -----------------------------------------------------------------------
def test_options_are_frozen_validated_and_round_trip():
    opts = graphprune.Options(ratio=0.3, criterion="fpgm", scope="channels, ffn",
                              target_params=0.5, rounding="up")
    assert opts.scope == ("channels", "ffn") and opts.metric == "params" and opts.target == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.ratio = 0.5  # type: ignore[misc]
    d = opts.to_dict()
    assert list(d) == SETTINGS_KEYS
    assert d["normalize"] == "mean" and d["target"] == {"metric": "params", "value": 0.5}
    # the plan records the normalisation used (None: the criterion's default, fpgm's mean)
    assert graphprune.Options.from_dict(json.loads(json.dumps(d))) == dataclasses.replace(
        opts, normalize="mean", recover="none")
    with pytest.raises(InputError, match=r"ratio must be in \[0, 1\), got 1.0"):
        graphprune.Options(ratio=1.0)
    with pytest.raises(InputError, match="unknown scope width"):
        dataclasses.replace(opts, scope=("width",))
    with pytest.raises(InputError, match="calib-samples must be a positive integer, got 0"):
        graphprune.Options(calib_samples=0)
    with pytest.raises(InputError, match="plan settings"):
        graphprune.Options.from_dict({"target": {"metric": "watts", "value": 0.5}})


def test_compress_takes_options_or_keywords_alike():
    path = str(zoo.EXAMPLE)
    a, ra = graphprune.compress(path, 0.3, "l2", round_to=4)
    opts = graphprune.Options(ratio=0.3, criterion="l2", round_to=4)
    b, rb = graphprune.compress(path, options=opts)
    assert a.SerializeToString() == b.SerializeToString()
    assert ra.plan.settings == rb.plan.settings == opts.to_dict()
    # keywords given with `options` replace its fields
    c, rc = graphprune.compress(path, options=dataclasses.replace(opts, round_to=1), round_to=4)
    assert c.SerializeToString() == a.SerializeToString()
    with pytest.raises(TypeError, match="unknown option ratios"):
        graphprune.compress(path, ratios=0.3)


def test_apply_reads_its_options_from_the_plan(tmp_path):
    path = zoo.copy_example(tmp_path)
    pruned, report = graphprune.compress(str(path), 0.5, scope="channels", aggregate="max")
    again, rep2 = graphprune.apply_plan(str(path), report.plan.to_dict())
    assert again.SerializeToString() == pruned.SerializeToString()
    assert (rep2.scope, rep2.aggregate, rep2.criterion, rep2.allocation) == (
        ["channels"], "max", "l1", "plan")


# -- rounding ---------------------------------------------------------------------------------
def test_rounding_up_under_global_allocation_takes_the_ceiling_of_all_units():
    """--ratio 0.3 of the 464 candidate units: 139 (⌊139.2⌋) down, 140 (⌈139.2⌉) up."""
    reports = {r: graphprune.compress(bottleneck(), 0.3, allocation="global", rounding=r)[1]
               for r in ("down", "up")}
    down, up = (removed_per_group(reports[r]) for r in ("down", "up"))
    assert sum(n for n, _ in down) == sum(n for n, _ in up) == 464
    assert sum(c for _, c in down) == 139 == math.floor(0.3 * 464)
    assert sum(c for _, c in up) == 140 == math.ceil(0.3 * 464)
    # one ranking: up takes the next unit of that ranking, the largest group's 45th
    assert [c for _, c in up] == [c + (n == 128) for n, c in down]
    assert all(r.exact_check["passed"] for r in reports.values())
    assert reports["up"].plan.settings["rounding"] == "up"


@pytest.mark.parametrize("metric", ["macs", "params"])
def test_rounding_up_under_a_target_removes_a_unit_of_every_group_first(metric):
    """Uniform allocation under a target keeps groups near one ratio R: ⌊R·n⌋ units each
    with rounding down, ⌈R·n⌉ with up, so at a mild target (0.9 of the original) up takes a
    unit of every group, while down leaves the 8-unit groups whole (⌊8R⌋ = 0) and takes more
    of the large ones to reach the same target."""
    reports = {r: graphprune.compress(bottleneck(), rounding=r, **{f"target_{metric}": 0.9})[1]
               for r in ("down", "up")}
    for report in reports.values():
        assert report.target["met"] and report.exact_check["passed"]
    down, up = (removed_per_group(reports[r]) for r in ("down", "up"))
    assert [c for n, c in down if n == 8] == [0, 0, 0, 0]
    assert all(c >= 1 for _, c in up)
    biggest = {r: max(g, key=lambda x: x[0]) for r, g in (("down", down), ("up", up))}
    assert biggest["up"][1] < biggest["down"][1]  # the 128-unit group loses fewer with up
    if metric == "macs":
        assert [c for _, c in down] == [1, 2, 0, 0, 0, 0, 5, 1, 1, 1, 1, 9, 2, 2, 2, 2]
        assert [c for _, c in up] == [1] * 16


# -- the run context --------------------------------------------------------------------------
def test_progress_goes_to_the_callback_only(capsys):
    lines: list[str] = []
    graphprune.compress(str(zoo.EXAMPLE), 0.4, progress=lines.append)
    assert lines[0] == "analysing dependencies" and lines[-1] == "validating in onnxruntime"
    assert any(line.startswith("scoring ") for line in lines)
    assert capsys.readouterr() == ("", "")


# -- contracts --------------------------------------------------------------------------------
def test_internal_error_names_its_stage(monkeypatch):
    def broken(ctx):
        raise RuntimeError("boom")

    monkeypatch.setitem(criteria.CRITERIA, "l1", broken)
    with pytest.raises(StageError, match=r"^scoring \(l1\) failed: RuntimeError: boom$") as info:
        graphprune.compress(str(zoo.EXAMPLE), 0.4)
    assert isinstance(info.value.__cause__, RuntimeError) and info.value.exit_code == 3


def test_scores_must_be_finite(monkeypatch):
    def nan_scores(ctx):
        return np.full(len(ctx.an.roots), np.nan)

    monkeypatch.setitem(criteria.CRITERIA, "l2", nan_scores)
    with pytest.raises(StageError, match=r"^scoring \(l2\) failed: ContractError: scores: "
                                         ".*non-finite"):
        graphprune.compress(str(zoo.EXAMPLE), 0.4, criterion="l2")


def test_selection_must_keep_frozen_units(monkeypatch):
    real = targets.select

    def greedy(model, an, scores, opts, **kw):
        sel = real(model, an, scores, opts, **kw)
        g = next(g for g in an.groups if g.frozen)
        sel.removed[next(iter(g.frozen))] = True
        return sel

    monkeypatch.setattr(targets, "select", greedy)
    with pytest.raises(StageError, match=r"^selection \(uniform allocation\) failed: "
                                         "ContractError: .*a frozen unit was removed"):
        graphprune.compress(str(zoo.EXAMPLE), 0.4)


def test_rewrite_must_keep_the_interface(monkeypatch, capsys, tmp_path):
    real = prove.rewrite_exact

    def renaming(model, an, exact, spill=None):
        out = real(model, an, exact, spill)
        out.graph.output[0].name = "renamed"
        return out

    monkeypatch.setattr(prove, "rewrite_exact", renaming)
    with pytest.raises(StageError, match="^rewrite failed: ContractError: .*inputs or outputs"):
        graphprune.compress(str(zoo.EXAMPLE), 0.4)
    out = tmp_path / "o.onnx"
    code = main(["compress", str(zoo.EXAMPLE), "-o", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 3 and not out.exists()
    assert err.startswith("graphprune: internal error: rewrite failed: ContractError: ")
    assert err.count("\n") == 1 and err.rstrip().endswith("(rerun with --verbose and report it)")


def test_contract_checks_pass_on_a_real_run():
    """The checks the stages run, called directly on a real analysis and selection."""
    model = onnx.load(bottleneck())
    opts = graphprune.Options(ratio=0.5, allocation="global")
    an = stages.Analyse(opts).run(model)
    assert stages.check_groups(an, opts.scope) is None
    scores = stages.Score(opts, None, RunContext()).run(an)
    sel = targets.select(model, an, scores, opts)
    assert selection.check_selection(an, sel.removed, sel.choices) is None
    sel.choices[0].removed.append(sel.choices[0].group.units[0])
    assert "choice lists" in selection.check_selection(an, sel.removed, sel.choices)
