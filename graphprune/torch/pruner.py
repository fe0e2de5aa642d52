"""`Pruner`: structured pruning inside a torch training loop, decided by the ONNX analysis.

The module is exported once (`export.export_module`), analysed by the same stages as
`graphprune compress` (analysis with its scope, scoring, selection: allocation, targets,
round-to), and every member of every group is located on the module's parameters and buffers
(`mapping`). Pruning applies the selection as masks; `export()` hands the masked module to
the same rewrite and exact check as `graphprune apply`.

The mask contract (`masks`: module tensor name → bool tensor, True where kept):
  - at every pruning step the removed positions are set to zero in the parameters (source
    weights, sink weights, biases, BatchNorm/LayerNorm parameters) and buffers (BatchNorm
    running statistics);
  - gradients of masked parameters are masked by a tensor hook during backward;
  - optimizers given to `attach` (or `Pruner(optimizer=...)`) get a step post-hook that sets
    the removed positions of the parameters and of every per-parameter state tensor of the
    parameter's shape (SGD momentum, Adam's moments) back to zero after each
    `optimizer.step()`; so masked entries stay exactly zero through weight decay, momentum
    and Adam. Without an attached optimizer call `apply_masks(optimizer)` after each step.
Removed units stay removed: later pruning steps only add to them.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from graphprune.analysis import Analysis
from graphprune.context import Progress, RunContext
from graphprune.errors import InputError, StageError, ValidationError, stage
from graphprune.io import save_atomic
from graphprune.ir import Graph
from graphprune.passes import inputs as check_inputs
from graphprune.passes import prove, scoring
from graphprune.passes.calibration import Calibration
from graphprune.passes.criteria import aggregate
from graphprune.passes.options import Options
from graphprune.passes.selection import check_selection
from graphprune.passes.stages import Analyse, Score, Select
from graphprune.pipeline import apply_plan, run_stage
from graphprune.plan import Plan, fingerprint, make_plan
from graphprune.report import Report

from .export import Exported, as_args, export_module, feeds_of, module_tensors
from .mapping import Mapping, keep_masks, map_members
from .schedule import Schedule
from .units import GRADIENT_CRITERIA, GradientStats, SliceIndex, unit_weights

REMOVED_SCORE = -1e30
"""Score of units an earlier step removed: below any other, so every allocation takes them
first and a later step only adds to them."""


@dataclass
class GroupInfo:
    """A group as the module sees it: its units and the module tensors its members slice."""

    name: str
    kind: str
    units: int
    removed: list[int]
    frozen: dict[int, list[str]]
    tensors: list[tuple[str, tuple[int, ...], str]]
    """(module tensor, axes the units run along, role: source/sink/param) per member."""


class Pruner:
    """Prune a torch module during training with graphprune's analysis (see the module doc).

    Goal: `ratio` of every group's units (default 0.4), or `target_macs` / `target_params`
    (fractions of the original to keep). Scoring: `criterion` is a gradient criterion
    (`taylor`, `movement`, `obd`: call `accumulate()` after `loss.backward()`) or any ONNX
    criterion (l1, l2, fpgm, lamp, bn-scale, random, activation, apoz, wanda), computed on
    the current weights by the same scoring pass as `graphprune compress`; the data-driven
    ones run `calib` (a tensor or tuple of tensors with samples on axis 0, as `forward` takes
    them, or arrays by graph input name; default: the example inputs). `scope`,
    `allocation`, `round_to`, `rounding`, `aggregate`, `normalize`, `max_group_ratio`,
    `seed`: as for `graphprune.compress`. `protect`: a regex; groups with a member on a
    module tensor (or ONNX node) whose name matches are left alone.

    Schedule (`graphprune.torch.schedule`): `schedule` is oneshot, iterative, geometric or
    cubic; `steps` (n), `every` (Δt), `start` (t₀), `initial` (s₀). Each `step()` call is
    one step. `dynamic_shapes` is passed to torch.export (the ONNX model of `export()` has
    the same dynamic axes). `progress` receives progress lines.
    """

    def __init__(self, model: torch.nn.Module, example_inputs: Any, *,
                 ratio: float | None = None, target_macs: float | None = None,
                 target_params: float | None = None, criterion: str = "l1",
                 scope: str | tuple[str, ...] | None = None, allocation: str = "uniform",
                 round_to: int = 1, rounding: str = "down", protect: str | None = None,
                 schedule: str = "oneshot", steps: int = 1, every: int = 1, start: int = 0,
                 initial: float = 0.0, aggregate: str = "sum", normalize: str | None = None,
                 max_group_ratio: float = 0.9, calib: Any = None, calib_samples: int = 32,
                 seed: int = 0, dynamic_shapes: Any = None,
                 optimizer: torch.optim.Optimizer | None = None,
                 progress: Progress | None = None) -> None:
        self.module, self.args = model, as_args(example_inputs)
        self.criterion, self.dynamic_shapes = criterion, dynamic_shapes
        self.ctx = RunContext(progress)
        self.opts = _options(criterion, ratio=ratio, target_macs=target_macs,
                             target_params=target_params, scope=scope, allocation=allocation,
                             round_to=round_to, rounding=rounding, aggregate=aggregate,
                             normalize=normalize, max_group_ratio=max_group_ratio,
                             calib_samples=calib_samples, seed=seed)
        final = self.opts.ratio if self.opts.metric is None else 1.0 - float(self.opts.target)
        self.schedule = Schedule(schedule, final, steps, every, start, initial)
        self.ctx.say("exporting the module")
        self.exported: Exported = export_module(model, self.args, dynamic_shapes=dynamic_shapes)
        self.ctx.say("analysing dependencies")
        self.an: Analysis = run_stage(self.ctx, Analyse(self.opts), self.exported.model)
        tensors = self.tensors
        self.mapping: Mapping = map_members(
            self.an, self.exported.names, {n: tuple(t.shape) for n, t in tensors.items()})
        if protect:
            _protect(self.an, self.mapping, protect)
        self.indexes = [SliceIndex(s, self.mapping.shapes[s.tensor]) for s in self.mapping.slices]
        self.calib = _calibration_arrays(self.exported, calib, self.args)
        self.removed = np.zeros(len(self.an.roots), dtype=bool)
        self.sparsity, self.t = 0.0, 0
        self.stats = (GradientStats(criterion, self.indexes) if criterion in GRADIENT_CRITERIA
                      else None)
        self.extra_masks: dict[str, torch.Tensor] = {}
        self._keep: dict[str, torch.Tensor] = {}
        self._hooks: dict[str, Any] = {}
        self._optimizers: list[tuple[torch.optim.Optimizer, Any]] = []
        self._snapshot: dict[str, torch.Tensor] | None = None
        self._settings = self.opts.to_dict()
        if optimizer is not None:
            self.attach(optimizer)

    # -- the module's tensors ---------------------------------------------------------------
    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """The module's parameters and buffers by canonical name (tied: the first name)."""
        out: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        for name, t in module_tensors(self.module).items():
            if id(t) not in seen:
                seen.add(id(t))
                out[name] = t
        return out

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """Module tensor name → bool tensor of its shape, True where kept (tensors with
        something removed only)."""
        return dict(self._keep)

    @property
    def notes(self) -> list[str]:
        return list(self.ctx.notes)

    # -- schedule ---------------------------------------------------------------------------
    def step(self) -> bool:
        """One step of the schedule: prunes when its sparsity grows at this step. Returns
        whether it pruned."""
        s = self.schedule.at(self.t)
        self.t += 1
        if s > self.sparsity + 1e-12:
            self.prune(s)
            return True
        return False

    @property
    def done(self) -> bool:
        """Whether the schedule has reached its final sparsity."""
        return self.t > self.schedule.last

    def prune(self, sparsity: float | None = None) -> np.ndarray:
        """Prune to `sparsity` (default: the final one) now: score the units on the current
        weights (or gathered gradients), select with the removed units first, mask. Returns
        the removed flags per slot root."""
        s = self.schedule.final if sparsity is None else float(sparsity)
        opts = self._options_at(s)
        model, an = self._current()
        calibration = self._calibration(model, opts)
        scores = self._scores(an, opts, calibration)
        scores[self.removed] = REMOVED_SCORE
        self.ctx.say(f"selecting (sparsity {s:.3f})")
        picked = run_stage(self.ctx, Select(opts, model, calibration, self.ctx), an, scores)
        removed = picked.removed | self.removed
        problem = check_selection(self.an, removed, [
            dataclasses.replace(c, removed=[u for u in c.group.units if removed[u]])
            for c in picked.choices])
        if problem:
            raise StageError(f"selection (torch path) failed: {problem}")
        self.removed, self.sparsity = removed, s
        self._settings = {**opts.to_dict(), "criterion": self._plan_criterion()}
        self._update_masks()
        if self.stats is not None:
            self.stats.restart()
        return removed

    def _options_at(self, s: float) -> Options:
        if self.opts.metric is None:
            return dataclasses.replace(self.opts, ratio=min(s, 0.999999))
        return dataclasses.replace(self.opts, **{f"target_{self.opts.metric}": max(1e-6, 1 - s)})

    def _plan_criterion(self) -> str | None:
        return self.criterion if self.criterion in scoring.CRITERIA else None

    # -- scoring ----------------------------------------------------------------------------
    def scores(self) -> dict[str, np.ndarray]:
        """Every group's unit scores now (group name → scores in unit order), as the next
        pruning step would rank them (before removed units are put first)."""
        model, an = self._current()
        scores = self._scores(an, self.opts, self._calibration(model, self.opts))
        return {g.name: scores[g.units] for g in self.an.groups}

    def accumulate(self) -> None:
        """Gather gradient statistics of this batch (call after loss.backward(); for gradient
        criteria; a no-op for the others)."""
        if self.stats is not None:
            self.stats.add(self.tensors)

    def _scores(self, an: Analysis, opts: Options, calibration: Any) -> np.ndarray:
        if self.stats is None:
            return np.array(run_stage(self.ctx, Score(opts, calibration, self.ctx), an),
                            dtype=np.float64)
        if self.stats.batches == 0 and not any(a is not None for a in self.stats.acc):
            raise InputError(f"criterion '{self.criterion}' scores from gradients: call "
                             "pruner.accumulate() after loss.backward() before pruning")
        total = aggregate(len(an.roots), self.stats.member_scores(), opts.aggregate)
        return scoring.normalize_groups(an, total, opts.normalization)

    def _current(self) -> tuple[onnx.ModelProto, Analysis]:
        """The exported model with the module's current weights, and the analysis on it."""
        model = self.onnx_model()
        return model, dataclasses.replace(self.an, graph=Graph(model))

    def onnx_model(self) -> onnx.ModelProto:
        """The module's ONNX model (as analysed) holding its current weights."""
        tensors = self.tensors
        model = onnx.ModelProto()
        model.CopyFrom(self.exported.model)
        for init in model.graph.initializer:
            name = self.exported.names.get(init.name)
            if name is not None:
                value = tensors[name].detach().cpu().numpy()
                init.CopyFrom(numpy_helper.from_array(value, init.name))
        return model

    def _calibration(self, model: onnx.ModelProto, opts: Options) -> Calibration | None:
        if not opts.needs_calibration:
            return None
        return Calibration(model, self.calib, samples=opts.calib_samples, seed=opts.seed)

    # -- masks ------------------------------------------------------------------------------
    def _update_masks(self) -> None:
        tensors = self.tensors
        keep = keep_masks(self.mapping, self.removed)
        masks = {}
        for name in dict.fromkeys([*keep, *self.extra_masks]):
            t = tensors[name]
            m = torch.ones(t.shape, dtype=torch.bool, device=t.device)
            if name in keep:
                m &= torch.from_numpy(keep[name]).to(t.device)
            if name in self.extra_masks:
                m &= self.extra_masks[name].to(device=t.device, dtype=torch.bool)
            masks[name] = m
        self._keep = masks
        for name in masks:
            t = tensors[name]
            if name not in self._hooks and isinstance(t, torch.nn.Parameter) and t.requires_grad:
                self._hooks[name] = t.register_hook(self._grad_hook(name))
        self.apply_masks()

    def _grad_hook(self, name: str):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            keep = self._keep.get(name)
            return grad if keep is None else grad.masked_fill(~keep, 0)
        return hook

    def add_mask(self, name: str, keep: torch.Tensor) -> None:
        """Also zero the positions of module tensor `name` where `keep` is False, under the
        same contract as the unit masks (the hook for element-level, unstructured sparsity:
        `export()` keeps those zeros in the dense weights; only units are removed)."""
        tensors = self.tensors
        if name not in tensors or tuple(keep.shape) != tuple(tensors[name].shape):
            raise InputError(f"add_mask: no module tensor '{name}' of shape {tuple(keep.shape)}")
        self.extra_masks[name] = keep.detach().bool()
        self._update_masks()

    def apply_masks(self, *optimizers: torch.optim.Optimizer) -> None:
        """Zero the removed positions of the module's tensors and of the per-parameter state
        of the attached optimizers and of `optimizers`."""
        tensors = self.tensors
        by_id = {id(t): name for name, t in tensors.items()}
        with torch.no_grad():
            for name, keep in self._keep.items():
                tensors[name].masked_fill_(~keep, 0)
            for opt in [*optimizers, *(o for o, _ in self._optimizers)]:
                for p, state in opt.state.items():
                    keep = self._keep.get(by_id.get(id(p), ""))
                    if keep is None:
                        continue
                    for v in state.values():
                        if isinstance(v, torch.Tensor) and v.shape == keep.shape:
                            v.masked_fill_(~keep, 0)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Keep masked entries zero through `optimizer.step()` (a step post-hook)."""
        if any(o is optimizer for o, _ in self._optimizers):
            return
        handle = optimizer.register_step_post_hook(lambda *_: self.apply_masks())
        self._optimizers.append((optimizer, handle))
        self.apply_masks()

    def detach(self) -> None:
        """Remove the gradient hooks and optimizer hooks (the masks' zeros stay)."""
        for h in self._hooks.values():
            h.remove()
        for _, h in self._optimizers:
            h.remove()
        self._hooks, self._optimizers = {}, []

    # -- regularisation ---------------------------------------------------------------------
    def regularization(self, *, bn: float = 0.0, group: float = 0.0) -> torch.Tensor:
        """A term to add to the loss: `bn`·Σ|γ| over the BatchNorm scales of prunable units
        (network slimming, Liu et al. 2017) + `group`·Σ_u √(Σ w²) over each prunable unit's
        positions in all its members (group lasso), so training drives whole units to zero.
        Frozen and removed units are left out."""
        if bn < 0 or group < 0 or bn == group == 0:
            raise InputError("regularization needs bn > 0 or group > 0 (and neither negative)")
        live = np.zeros(len(self.an.roots), dtype=bool)
        for g in self.an.groups:
            live[g.prunable] = True
        live &= ~self.removed
        tensors = self.tensors
        params = {n for n, t in tensors.items() if isinstance(t, torch.nn.Parameter)}
        terms: list[torch.Tensor] = []
        if group > 0:
            terms.append(group * self._group_lasso(tensors, params, live))
        if bn > 0:
            for ix in self.indexes:
                m = ix.slice.member
                if (ix.slice.tensor in params and m.role == "param" and m.index == 1
                        and self.an.graph.nodes[m.node].op_type == "BatchNormalization"):
                    t = tensors[ix.slice.tensor]
                    w = unit_weights(ix, live, t.device, t.dtype)
                    terms.append(bn * (ix.sums(t.abs()) * w).sum())
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def _group_lasso(self, tensors: dict[str, torch.Tensor], params: set[str],
                     live: np.ndarray) -> torch.Tensor:
        pos = np.full(len(self.an.roots), -1, dtype=np.int64)
        units = np.flatnonzero(live)
        pos[units] = np.arange(len(units))
        total: torch.Tensor | None = None
        for ix in self.indexes:
            if ix.slice.tensor not in params:
                continue
            local = pos[ix.units]
            if (local < 0).all():
                continue
            t = tensors[ix.slice.tensor]
            sq = ix.sums(t * t)
            inside = torch.from_numpy(local >= 0).to(t.device)
            where = torch.from_numpy(np.maximum(local, 0)).to(t.device)
            part = torch.zeros(len(units), dtype=t.dtype, device=t.device).index_add(
                0, where[inside], sq[inside])
            total = part if total is None else total + part
        if total is None:
            return torch.zeros(())
        return torch.sqrt(total + 1e-12).sum()

    # -- lottery tickets --------------------------------------------------------------------
    def snapshot(self) -> None:
        """Keep the current weights and buffers (iteration k; k = 0: the initialisation) for
        `rewind`."""
        self._snapshot = {n: t.detach().clone() for n, t in self.tensors.items()}

    def rewind(self, *, reset_optimizer: bool = True) -> None:
        """Reset every weight and buffer to the snapshot, keeping the masks (the removed
        positions stay zero); `reset_optimizer` clears the attached optimizers' state."""
        if self._snapshot is None:
            raise InputError("rewind() needs a snapshot(): call it at the iteration to rewind to")
        tensors = self.tensors
        with torch.no_grad():
            for name, value in self._snapshot.items():
                tensors[name].copy_(value)
        if reset_optimizer:
            for opt, _ in self._optimizers:
                opt.state.clear()
        self.apply_masks()

    # -- results ----------------------------------------------------------------------------
    @property
    def plan(self) -> Plan:
        """The plan (graphprune.plan format, as `compress --plan-out` writes) of the current
        masks; each group also lists the module tensors it slices (`params`: name → axes)."""
        settings = {k: v for k, v in self._settings.items() if v is not None or k != "criterion"}
        settings["torch"] = {"criterion": self.criterion, "schedule": self.schedule.kind,
                             "step": self.t, "sparsity": round(self.sparsity, 6)}
        plan = make_plan(self.exported.model, self.an, self.removed, settings)
        tensors = {g.name: g.tensors for g in self.groups}
        for entry in plan.groups:
            entry["params"] = {name: list(axes) for name, axes, _ in tensors[entry["name"]]}
        return plan

    @property
    def groups(self) -> list[GroupInfo]:
        """Every group with its removed units and the module tensors its members slice."""
        by_member = {id(s.member): s for s in self.mapping.slices}
        out = []
        for g in self.an.groups:
            slices = [by_member[id(m)] for m in g.members if id(m) in by_member]
            tensors = list(dict.fromkeys((s.tensor, s.axes, s.role) for s in slices))
            out.append(GroupInfo(g.name, g.kind, len(g.units),
                                 [k for k, u in enumerate(g.units) if self.removed[u]],
                                 dict(g.frozen), tensors))
        return out

    def export(self, path: str | None = None, *, external: bool | None = None, seed: int = 0,
               input_sizes: dict[str, list[int]] | None = None
               ) -> tuple[onnx.ModelProto, Report]:
        """The dense pruned ONNX model and its report: the masked module is exported again
        and `graphprune.apply_plan` rewrites it with this plan and proves the result equal
        to it (the exact check; ValidationError when it fails). Written to `path` when given
        (atomically; `external`: as `graphprune.save_atomic`)."""
        self.apply_masks()
        self.ctx.say("exporting the masked module")
        exported = export_module(self.module, self.args, dynamic_shapes=self.dynamic_shapes)
        if fingerprint(exported.model) != fingerprint(self.exported.model):
            raise InputError("the module exports to another graph than when the Pruner "
                             "analysed it (its architecture or forward changed)")
        masked = self._check_masked(exported.model, seed, input_sizes)
        pruned, report = apply_plan(exported.model, self.plan, seed=seed,
                                    input_sizes=input_sizes, progress=self.ctx.progress)
        report.notes.append(masked)
        if path is not None:
            save_atomic(pruned, path, external=external)
        return pruned, report

    def _check_masked(self, model: onnx.ModelProto, seed: int,
                      sizes: dict[str, list[int]] | None) -> str:
        """The masked module's export must equal the masked original of that export (its
        removed units' sink slices zeroed by the rewrite's own reading of the analysis), so
        that the exact check of the rewrite against the masked original is one against the
        masked module. A mask on the wrong positions fails here (ValidationError)."""
        exact = self.removed & ~prove.inexact_roots(self.an)
        if not exact.any():
            return "nothing removed: the export is the module"
        an = dataclasses.replace(self.an, graph=Graph(model))
        with stage("exact check of the masked module"):
            chosen = check_inputs.resolve(model, sizes, seed=seed)
            check = prove.prove(model, model, an, exact, chosen)
        if not check.passed:
            raise ValidationError("the masked module does not match the masked original of "
                                  "its own export (its masks miss positions the plan removes): "
                                  + check.failure())
        return (f"masked module = masked original of its export (max abs err "
                f"{check.max_abs_err:.1e})")

    def shrink(self) -> torch.nn.Module:
        """A physically smaller copy of the module (see graphprune.torch.shrink)."""
        from .shrink import shrink

        self.apply_masks()
        return shrink(self.module, self.args, self.mapping, self.removed)


def _options(criterion: str, **given: Any) -> Options:
    """Options of the run; a gradient criterion scores outside the registry, the options
    carry l1 for validation and its own default normalisation (mean)."""
    onnx_criterion = criterion if criterion not in GRADIENT_CRITERIA else "l1"
    if criterion not in GRADIENT_CRITERIA and criterion not in scoring.CRITERIA:
        raise InputError(f"unknown criterion '{criterion}' (choose from "
                         f"{', '.join(sorted({*scoring.CRITERIA, *GRADIENT_CRITERIA}))})")
    if criterion in ("taylor", "obd") or criterion == "movement":
        given["normalize"] = given.get("normalize") or "mean"
    targets = [k for k in ("target_macs", "target_params") if given.get(k) is not None]
    if given.get("ratio") is not None and targets:
        raise InputError(f"give a ratio or a target, not both (ratio and {targets[0]})")
    if given.get("scope") is None:
        given.pop("scope")
    return Options.build(None, criterion=onnx_criterion, **given)


def _protect(an: Analysis, mapping: Mapping, pattern: str) -> None:
    """Freeze the units of groups with a member on a module tensor or node matching."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise InputError(f"protect '{pattern}' is not a valid regular expression ({exc})") from None
    on = {id(s.member): s.tensor for s in mapping.slices}
    for g in an.groups:
        names = [on.get(id(m), "") for m in g.members]
        names += [an.graph.node_name(m.node) for m in g.members]
        if any(rx.search(n) for n in names if n):
            for u in g.units:
                g.frozen.setdefault(u, []).append(f"protected by protect='{pattern}'")


def _calibration_arrays(exported: Exported, calib: Any, args: tuple) -> dict[str, np.ndarray]:
    """Calibration data by graph input name: the given arrays, tensors (as `forward` takes
    them) or, by default, the example inputs."""
    if isinstance(calib, dict):
        return {k: np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v)
                for k, v in calib.items()}
    return feeds_of(exported, args if calib is None else as_args(calib))
