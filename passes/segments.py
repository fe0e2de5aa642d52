"""Segmented exact check: the same runs as `validation.exact_check`, a piece of the graph at a
time, so that onnxruntime touches one segment's weights at a time, not a whole model's.

A cut is a set of tensors that are live at a position of a topological order of the graph:
made before it, read after it (or graph outputs). Cuts are taken where the original (masked)
graph and the pruned graph both have a position with exactly that live set (the rewrite keeps
tensor names; a cut whose live set it changed is simply not used), every ~SEGMENT_BYTES of
weights, preferring the cut with the fewest live tensors (between decoder layers: the
residual stream and the few tensors every layer reads). Each side runs segment after segment:
a segment is every node needed for the next cut's tensors from the previous cut's tensors and
the graph inputs, built as a model of its own with graph optimisations off, run on each
check input and dropped before the next. Each side carries its own activations (the pruned
side's have fewer channels); only the graph outputs are compared, exactly as the whole-graph
check compares them. Every node runs once, on the values the whole graph would give it, so
the outputs are those of the whole-graph runs.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from graphprune.errors import ValidationError, one_line
from graphprune.io import copy_fields

from . import noise, validation

SEGMENT_MIN_BYTES = 1 << 30
"""Models with at least this many bytes of weights are checked segment by segment."""
SEGMENT_BYTES = 256 << 20
"""About this many bytes of weights per segment (a cut is taken after at least this many,
at the position with the fewest live tensors before 1.5 times as many)."""


@dataclass
class Side:
    """One side of the check: a model, and the initializer values that replace its own
    (the masked original's masked weights), if any."""

    model: onnx.ModelProto
    overrides: dict[str, np.ndarray] | None = None


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(math.prod(t.dims) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
               for t in model.graph.initializer)


def _order(graph: onnx.GraphProto) -> list[int] | None:
    """A topological order of the nodes (the file's order where it is one), or None when the
    graph has subgraphs (their outer-scope reads are not inputs), a cycle or a tensor made
    twice: then the check runs whole."""
    producer: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute):
            return None
        for o in node.output:
            if o:
                if o in producer:
                    return None
                producer[o] = i
    deps = [{producer[x] for x in node.input if x in producer} for node in graph.node]
    users: list[list[int]] = [[] for _ in graph.node]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    return order if len(order) == len(graph.node) else None


def _live_sets(graph: onnx.GraphProto, order: list[int]) -> list[frozenset[str]]:
    """For each position p (0..len(order)): the tensors made by the nodes before p that a node
    at or after p reads, or that are graph outputs."""
    end = len(order)
    last = {o.name: end for o in graph.output}
    for pos, i in enumerate(order):
        for x in graph.node[i].input:
            if x:
                last[x] = max(last.get(x, -1), pos)
    live: set[str] = set()
    out = [frozenset()]
    for pos, i in enumerate(order):
        live = {x for x in live if last[x] > pos}
        live.update(o for o in graph.node[i].output if o and last.get(o, -1) > pos)
        out.append(frozenset(live))
    return out


def plan_cuts(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> list[frozenset[str]]:
    """The cuts (live sets) both graphs share, in order, every ~SEGMENT_BYTES of the
    reference's weights; [] when the graphs cannot be cut (then the check runs whole)."""
    order_r, order_c = _order(reference.graph), _order(candidate.graph)
    if order_r is None or order_c is None:
        return []
    outputs = [o.name for o in reference.graph.output]
    made = {o for n in reference.graph.node for o in n.output}
    made_c = {o for n in candidate.graph.node for o in n.output}
    if not all(o in made for o in outputs) or not all(o.name in made_c
                                                      for o in candidate.graph.output):
        return []
    live_r, live_c = _live_sets(reference.graph, order_r), _live_sets(candidate.graph, order_c)
    at_c: dict[frozenset[str], int] = {}
    for pos in range(1, len(order_c)):
        at_c.setdefault(live_c[pos], pos)
    size = {t.name: math.prod(t.dims) * onnx.helper.tensor_dtype_to_np_dtype(
        t.data_type).itemsize for t in reference.graph.initializer}
    seen: set[str] = set()
    spent = 0
    candidates = []  # (position in reference, weight bytes read before it, live set)
    for pos, i in enumerate(order_r):
        for x in reference.graph.node[i].input:
            if x in size and x not in seen:
                seen.add(x)
                spent += size[x]
        live = live_r[pos + 1]
        if live and pos + 1 < len(order_r) and live in at_c:
            candidates.append((pos + 1, spent, live))
    cuts: list[frozenset[str]] = []
    start, last_c = 0, 0
    k = 0
    while k < len(candidates):
        first = next((j for j in range(k, len(candidates))
                      if candidates[j][1] - start >= SEGMENT_BYTES
                      and at_c[candidates[j][2]] > last_c), None)
        if first is None:
            break
        window = [j for j in range(first, len(candidates))
                  if candidates[j][1] - start <= 1.5 * SEGMENT_BYTES
                  and at_c[candidates[j][2]] > last_c] or [first]
        best = min(window, key=lambda j: (len(candidates[j][2]), j))
        cuts.append(candidates[best][2])
        start, last_c, k = candidates[best][1], at_c[candidates[best][2]], best + 1
    return cuts


def _segments(model: onnx.ModelProto, cuts: list[frozenset[str]],
              ) -> list[tuple[list[int], frozenset[str], list[str], frozenset[str]]]:
    """Per segment: its nodes (in the graph's order), the tensors it reads from the previous
    cut, the tensors it hands on (the next cut's, or the graph outputs), and the previous
    cut (tensors of it that it hands on pass through)."""
    graph = model.graph
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    position = {i: p for p, i in enumerate(_order(graph) or [])}
    targets = [sorted(c) for c in cuts] + [[o.name for o in graph.output]]
    out = []
    before: frozenset[str] = frozenset()
    for want in targets:
        nodes: set[int] = set()
        reads: set[str] = set()
        stack = [x for x in want if x not in before]
        while stack:
            x = stack.pop()
            if x in before:
                reads.add(x)
                continue
            i = producer.get(x)
            if i is None or i in nodes:
                continue
            nodes.add(i)
            stack.extend(y for y in graph.node[i].input if y)
        out.append((sorted(nodes, key=position.__getitem__), frozenset(reads), want, before))
        before = frozenset(want)
    return out


def _covers(model: onnx.ModelProto, segments) -> bool:
    """Every node runs in some segment, as every node runs in the whole graph (a node no
    output needs could still fail in onnxruntime: then the graph is checked whole)."""
    return len({i for nodes, *_ in segments for i in nodes}) == len(model.graph.node)


def _sub_model(model: onnx.ModelProto, nodes: list[int], reads: frozenset[str],
               carried: dict[str, np.ndarray], hands: list[str]) -> onnx.ModelProto:
    """The segment as a model: graph inputs it reads, the carried tensors it reads (typed
    from their values), its nodes and initializers, the tensors it hands on as outputs."""
    graph = model.graph
    sub = onnx.ModelProto()
    copy_fields(model, sub, skip={"graph"})
    g = sub.graph
    g.name = graph.name
    used = {x for i in nodes for x in graph.node[i].input if x}
    made = {o for i in nodes for o in graph.node[i].output if o}
    for vi in graph.input:
        if vi.name in used:
            g.input.append(vi)
    for name in sorted(reads):
        value = carried[name]
        g.input.append(onnx.helper.make_tensor_value_info(
            name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), None))
    for t in graph.initializer:
        if t.name in used:
            g.initializer.append(t)
    for i in nodes:
        g.node.append(graph.node[i])
    for vi in graph.value_info:
        if vi.name in made and vi.name not in hands:
            g.value_info.append(vi)
    declared = {o.name: o for o in graph.output}
    for name in hands:
        if name in declared:
            g.output.append(declared[name])
        else:
            g.output.add().name = name  # untyped: onnxruntime infers it
    return sub


def _fresh(value: np.ndarray) -> np.ndarray:
    """A whole memory-mapped tensor mapped again, so the pages this segment's session
    touches are released with it (the caller's own view stays untouched)."""
    if (isinstance(value, np.memmap) and isinstance(value.filename, str)
            and value.flags.c_contiguous and value.base is not None
            and not isinstance(value.base, np.ndarray)):
        return np.memmap(value.filename, dtype=value.dtype, mode="r", offset=int(value.offset),
                         shape=value.shape)
    return value


SessionMaker = Callable[[onnx.ModelProto, dict[str, np.ndarray]], ort.InferenceSession]


def _plain(sub: onnx.ModelProto, overrides: dict[str, np.ndarray]) -> ort.InferenceSession:
    return validation.session(sub, overrides=overrides)


def _split_sums(sub: onnx.ModelProto, overrides: dict[str, np.ndarray]) -> ort.InferenceSession:
    graph, values = noise.split_sums(sub, overrides)
    return validation.session(graph, overrides=values)


def _run_side(side: Side, segments, feeds: list[dict[str, np.ndarray]], what: str,
              make: SessionMaker = _plain) -> list[list[np.ndarray]]:
    """Every segment of `side` on every input set; the graph outputs of each run. `make`
    builds each segment's session (the noise sources evaluate the segments other ways)."""
    envs = [dict() for _ in feeds]
    outputs = [o.name for o in side.model.graph.output]
    for nodes, reads, hands, before in segments:
        passed = [h for h in hands if h in before]
        made = [h for h in hands if h not in passed]
        sess = None
        if made:
            sub = _sub_model(side.model, nodes, reads, envs[0], made)
            names = {t.name for t in sub.graph.initializer}
            overrides = {k: _fresh(v) for k, v in (side.overrides or {}).items() if k in names}
            try:
                sess = make(sub, overrides)
            except Exception as exc:  # noqa: BLE001 - a model onnxruntime rejects fails
                raise ValidationError(f"{what} fails in onnxruntime: "
                                      f"{one_line(exc, 300)}") from None
        for n, env in enumerate(envs):
            result = {h: env[h] for h in passed}
            if sess is not None:
                given = {x.name: env[x.name] if x.name in env else feeds[n][x.name]
                         for x in sess.get_inputs()}
                try:
                    values = sess.run(made, given)
                except Exception as exc:  # noqa: BLE001
                    raise ValidationError(f"{what} fails in onnxruntime: "
                                          f"{one_line(exc, 300)}") from None
                result.update(zip(made, values, strict=True))
            envs[n] = result
        del sess
    return [[env[o] for o in outputs] for env in envs]


def exact_check(reference: Side, candidate: Side, model: onnx.ModelProto, *, seed: int = 0,
                sizes: dict[str, list[int]] | None = None,
                io: validation.IoChanges | None = None,
                runs: validation.Runs | None = None) -> validation.CheckResult:
    """validation.exact_check's runs and comparisons, segment by segment (see the module);
    the whole-graph sequential check when the graphs share no cut, or a node would not run
    in any segment.

    Should an output fail the static tolerance, the reference's noise floor is measured on
    the whole reference path as the check runs it: every segment of the masked original
    evaluated the noise sources' ways (optimised sessions, split sums), carrying its own
    activations from segment to segment (an optimised session fuses within a segment only)."""
    cuts = plan_cuts(reference.model, candidate.model)
    ref_segments = _segments(reference.model, cuts) if cuts else []
    cand_segments = _segments(candidate.model, cuts) if cuts else []
    if not cuts or not _covers(reference.model, ref_segments) or not _covers(
            candidate.model, cand_segments):
        return validation.exact_check(
            lambda: validation.session(reference.model, overrides=reference.overrides),
            lambda: validation.session(candidate.model), model, seed=seed, sizes=sizes, io=io,
            noise=noise.sources(lambda: (reference.model, reference.overrides)), runs=runs)
    batches, feeds = validation.check_feeds(model, seed, sizes, runs)
    what = "the masked original"
    ref_outs = _run_side(reference, ref_segments, feeds, what)
    cand_feeds = [validation.shrink_feeds(f, io) for f in feeds]
    cand_outs = _run_side(candidate, cand_segments, cand_feeds, "the pruned model")
    names = [o.name for o in reference.model.graph.output]
    floor = [validation.NoiseSource(noise.OPTIMISED, lambda f: _run_side(
                 reference, ref_segments, f, what, noise.optimised_session)),
             validation.NoiseSource(noise.SPLIT_SUMS, lambda f: _run_side(
                 reference, ref_segments, f, what, _split_sums))]
    return validation.outcome(batches, names, ref_outs, cand_outs, io, feeds, floor)

