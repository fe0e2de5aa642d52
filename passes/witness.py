"""When an output proves nothing: compare the tensors before it that do.

The exact check compares the masked original's outputs with the pruned model's. An output
that takes one value on the check's inputs matches any rewrite that keeps it there, a wrong
one too: PP-OCRv4's text detector, with 40% of its channels masked, drives every logit below
-100, its sigmoid map is exactly 0.0 everywhere, and a rewrite with one convolution's output
channels reversed passed. Such an output (`validation.uninformative`: one value, or one value
at 99% of its positions) is a weak witness; what it hides is upstream, where values still
vary.

So for every uninformative output whose computation reads a rewritten weight, walk back from
it through the masked original's graph, breadth first: evaluate the tensors that feed it, keep
those whose values vary (`uninformative` says None) and that exist in the pruned graph under
the same name (the rewrite keeps names), and walk on past the others; stop at the first depth
that gives any (the nearest). Then compare those tensors exactly as outputs are compared (the
same tolerances, the same noise floor measured on the masked original), on their kept
positions: a tensor that carries removed units is sliced by the analysis's slot spans (what
`rewrite.io_changes` does for graph inputs and outputs), one that carries none must be equal
as it is. Tensors computed from shapes alone (Shape, Size and what follows only from them)
legitimately differ and are never taken.

Nothing informative within MAX_DEPTH ops: the check is not proven (it fails, saying why),
never passed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import onnx

from graphprune.analysis import Analysis
from graphprune.ir import subgraph_references

from . import noise, rewrite, validation

MAX_DEPTH = 8
"""Ops walked back from an uninformative output before giving up."""
MAX_TENSORS = 64
"""Tensors evaluated per depth (the nearest first, in graph order)."""

Masked = noise.Masked
Values = dict[str, list[np.ndarray]]


def prove(check: validation.CheckResult, model: onnx.ModelProto, pruned: onnx.ModelProto,
          masked: Masked, an: Analysis, removed: np.ndarray, runs: validation.Runs,
          io: validation.IoChanges | None = None, *, threads: int = 0,
          ) -> validation.CheckResult:
    """`check` with the uninformative outputs it passed backed by the tensors before them
    (see the module): their runs are added (`for` names the output), `vacuous` says what
    was compared instead of what, and when nothing informative was found `unproven` says why
    and the check fails. A failed check, or one without uninformative outputs, is returned
    as it is."""
    if not check.passed or not check.uninformative:
        return check
    touched = changed_constants(model, pruned)
    graph = _Graph(model.graph, {o for n in pruned.graph.node for o in n.output})
    wanted = {o: why for o, why in check.uninformative.items()
              if graph.cone(o) & touched}  # an output no rewritten weight reaches is as it was
    if not wanted:
        return check
    ref_model, overrides = masked()
    evaluate = _evaluator(ref_model, overrides, runs, threads)
    keep = _keeper(an, removed)
    found = {o: graph.nearest(o, evaluate, keep) for o in wanted}
    names = list(dict.fromkeys(t for ts in found.values() for t in ts))
    vacuous = [{"output": o, "why": why, "compared": found[o]} for o, why in wanted.items()]
    result = validation.CheckResult(check.passed, check.max_abs_err, list(check.runs),
                                    dict(check.noise_errors), dict(check.uninformative),
                                    vacuous, None, dict(check.inputs))
    if names:
        values = evaluate(names)
        masks = {name: keep(name, values[name]) or {} for name in names}
        extra = _compare(ref_model, overrides, pruned, masks, runs, io, threads)
        owner = {t: o for o, ts in found.items() for t in ts}
        for r in extra.runs:
            r["for"] = owner[r["output"]]
        result.runs += extra.runs
        result.passed = extra.passed
        result.max_abs_err = max(result.max_abs_err, extra.max_abs_err)
        result.noise_errors.update(extra.noise_errors)
    lost = [o for o in wanted if not found[o]]
    if lost and result.passed:
        result.passed = False
        o = lost[0]
        result.unproven = (f"output '{o}' proves nothing on the check's inputs ({wanted[o]}) "
                           f"and no tensor within {MAX_DEPTH} ops before it varies there; give "
                           "inputs on which it varies with --inputs")
    return result


def changed_constants(model: onnx.ModelProto, pruned: onnx.ModelProto) -> set[str]:
    """Initializers and Constant outputs of `model` whose dims the rewrite changed (or that
    it dropped): the weights a rewrite error would show in."""
    def dims(m: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
        out = {t.name: tuple(t.dims) for t in m.graph.initializer}
        for node in m.graph.node:
            if node.op_type == "Constant" and node.output:
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                out[node.output[0]] = tuple(value.dims) if value is not None else ()
        return out

    after = dims(pruned)
    return {name for name, d in dims(model).items() if after.get(name) != d}


class _Graph:
    """The masked original's graph, read backwards: who produces what, which tensors depend
    on the inputs' values (not on their shapes alone), which the pruned graph also has."""

    def __init__(self, g: onnx.GraphProto, candidate: set[str]) -> None:
        nodes = list(g.node)
        self.producer = {o: k for k, n in enumerate(nodes) for o in n.output if o}
        self.reads = [[*dict.fromkeys([*n.input, *sorted(subgraph_references(n))])]
                      for n in nodes]
        self.outputs = {o.name for o in g.output}
        inits = {t.name for t in g.initializer}
        data = {i.name for i in g.input if i.name not in inits}
        for k, n in enumerate(nodes):  # graph order is topological
            if n.op_type not in ("Shape", "Size") and any(x in data for x in self.reads[k]):
                data.update(o for o in n.output if o)
        self.data = data
        self.candidate = candidate

    def cone(self, name: str) -> set[str]:
        """Every tensor `name` is computed from (itself included)."""
        seen, stack = {name}, [name]
        while stack:
            for x in self.feeding(stack.pop()):
                if x not in seen:
                    seen.add(x)
                    stack.append(x)
        return seen

    def feeding(self, name: str) -> list[str]:
        k = self.producer.get(name)
        return [x for x in self.reads[k] if x] if k is not None else []

    def nearest(self, output: str, evaluate: Callable[[list[str]], Values],
                keep: Callable[[str, list[np.ndarray]], dict | None]) -> list[str]:
        """The nearest tensors before `output` whose reference values vary and that can be
        compared on the pruned model (see the module), in graph order; [] when none within
        MAX_DEPTH."""
        frontier, seen = self.feeding(output), {output}
        for _ in range(MAX_DEPTH):
            frontier = [x for x in dict.fromkeys(frontier) if x not in seen][:MAX_TENSORS]
            seen.update(frontier)
            if not frontier:
                return []
            usable = [x for x in frontier if x in self.data and x in self.candidate
                      and x not in self.outputs]
            values = evaluate(usable) if usable else {}
            found = [x for x in usable if x in values and keep(x, values[x]) is not None
                     and validation.uninformative(values[x]) is None]
            if found:
                return found
            frontier = [y for x in frontier for y in self.feeding(x)]
        return []


def _evaluator(model: onnx.ModelProto, overrides: dict[str, np.ndarray] | None,
               runs: validation.Runs, threads: int) -> Callable[[list[str]], Values]:
    """Values of tensors of the masked original on every run's inputs (numeric ones only)."""
    cache: Values = {}

    def evaluate(names: list[str]) -> Values:
        todo = [n for n in names if n not in cache]
        if todo:
            sess = _session(model, overrides, todo, threads)
            outs = [sess.run(None, f) for f in runs.feeds]
            for k, name in enumerate(todo):
                values = [np.asarray(out[k]) for out in outs]
                if all(v.dtype.kind in "biuf" for v in values):
                    cache[name] = values
        return {n: cache[n] for n in names if n in cache}

    return evaluate


def _session(model: onnx.ModelProto, overrides: dict[str, np.ndarray] | None,
             names: list[str], threads: int):
    """`model` (with `overrides`) in a check session whose outputs are `names`."""
    parts = validation.split(model, overrides)
    _set_outputs(parts.graph, names)
    return validation.session(model, overrides=overrides, parts=parts, threads=threads)


def _set_outputs(model: onnx.ModelProto, names: list[str]) -> None:
    del model.graph.output[:]
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` whose graph outputs are `names` (for the noise sources)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _set_outputs(out, names)
    return out


def _keeper(an: Analysis, removed: np.ndarray
            ) -> Callable[[str, list[np.ndarray]], dict[int, np.ndarray] | None]:
    """keep(name, values): per axis, the positions of tensor `name` the pruned model keeps
    ({} when it carries no removed unit), or None when its spans do not fit its values
    (units folded into a dynamic axis) or are no rectangle."""
    gone = removed[an.roots] if len(removed) else removed

    def keep(name: str, values: list[np.ndarray]) -> dict[int, np.ndarray] | None:
        axes: dict[int, np.ndarray] = {}
        for span in an.spans.get(name, []):
            if span.tiled or any(a >= v.ndim or v.shape[a] != n for v in values
                                 for a, n in zip(span.axes, span.ids.shape, strict=True)):
                return None
            mask = ~gone[span.ids]
            if mask.all():
                continue
            masks = rewrite.rectangle(mask)
            if masks is None:
                return None
            for a, m in zip(span.axes, masks, strict=True):
                axes[a] = axes[a] & m if a in axes else m
        return axes

    return keep


def _compare(model: onnx.ModelProto, overrides: dict[str, np.ndarray] | None,
             pruned: onnx.ModelProto, masks: dict[str, dict[int, np.ndarray]],
             runs: validation.Runs, io: validation.IoChanges | None,
             threads: int) -> validation.CheckResult:
    """The exact check over the tensors of `masks` on their kept positions, as over outputs:
    one model's session at a time, the masked original's noise floor when a tolerance
    needs it."""
    names = list(masks)
    changes = {**(io or {}), **masks}

    @functools.cache
    def reference() -> tuple[onnx.ModelProto, dict[str, np.ndarray] | None]:
        return _with_outputs(model, names), overrides

    floor = noise.sources(reference, threads=threads)

    def candidate():
        parts = validation.split(pruned)
        _set_outputs(parts.graph, names)
        return validation.session(pruned, parts=parts, threads=threads)

    return validation.exact_check(lambda: _session(model, overrides, names, threads),
                                  candidate, model, io=changes, noise=floor, runs=runs)
