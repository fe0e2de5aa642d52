"""Input moments of weight-consuming nodes, streamed through onnxruntime.

What recovery (refit, bias compensation) and sparsity (SparseGPT's H = 2·E[x xᵀ]) need to
know about a layer is the first and second moments of its input, seen the way the layer's
weight sees it: one *row* per output position, as wide as one output's dot product.

- MatMul against a constant [K, N] weight: the input's last axis, every leading position a
  row (width K).
- Gemm: the rows of A (columns when transA), width K; the weight as [N, K] is alpha·B
  (transposed unless transB).
- Conv (1-D/2-D/3-D, grouped, depthwise, dilated, strided, padded, auto_pad): the input
  *unfolded* into patches (im2col), one row per output position, C/group·∏kernel wide, in
  the order of the weight's flattening W[o].reshape(-1) (channel-major, then kernel taps).
  Zero padding is part of the patch, so the moments count it as the zeros the conv reads.
  Each group of a grouped conv has its own rows: moments are kept per group.

For a *site* (such a node) the accumulators hold, in float64, per group g:

    n          rows seen
    sum        Σ x                 -> mean()      = E[x]          [G, d]
    gram       Σ x xᵀ              -> second()    = E[x xᵀ]       [G, d, d]
    and, with a paired model run in lockstep on the same samples (its input x'):
    psum       Σ x'                -> paired_mean() = E[x']       [G, d]
    cross      Σ x' xᵀ             -> cross()     = E[x' xᵀ]      [G, d, d]

`augmented()` and `augmented_cross()` give the same for x̃ = [x; 1] (a bias column), [G, d+1,
d+1]. A site whose accumulators would exceed the byte budget is not collected: it is listed
in `Collected.skipped` with the reason, for the caller's fallback.

API (everything the sparsity and recovery passes use):

    site = moments.site(graph, node)      # Site, or Unsupported(reason) raised
    got = moments.collect(model, [site, ...], batches,
                          second=True,            # gram; False: means only
                          paired=other_model,     # optional: cross moments E[x' xᵀ]
                          overrides=..., paired_overrides=...,  # weights by name
                          budget=BUDGET, progress=print)
    got.moments[site.node].second()       # E[x xᵀ] of node's input in `model`
    got.skipped                           # {node: why}
    a, b = got.moments[site.node].folds()  # with halves=True: every other sample, and the rest
    rows = moments.rows(site, value)      # [G, n, d]: a batch of the input as rows
    w = moments.weight_rows(site, W)      # the weight as [G, out/G, d] (dot with the rows)
    W = moments.weight_from_rows(site, w, like=W)   # and back to the weight's own layout

Sequential use (layer by layer, each from the model updated so far): call `collect` once per
step with the updated weights as `overrides` (by initializer name: no model copy); the
session is built over the part of the graph that feeds the sites (`upto`), so an early
layer's step does not run the whole model. `batches` is any iterable of feeds (re-iterable
when several steps read it: a list, or `Calibration.batches` called again).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from graphprune import external
from graphprune.ir import Graph, attr, subgraph_references

from . import validation

BUDGET = 512 << 20
"""Bytes of float64 accumulators one site may hold (gram and cross together)."""
ROW_CHUNK = 1 << 14
"""Rows multiplied at once: bounds the float64 copy of a batch's rows (conv patches)."""


class Unsupported(ValueError):
    """A node whose input moments this module cannot describe (the message says why)."""


@dataclass(frozen=True)
class Conv:
    """A convolution's geometry: kernel, strides, dilations, pads (begin…, end…) or auto_pad."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]
    auto_pad: str = "NOTSET"

    def padding(self, spatial: tuple[int, ...]) -> list[tuple[int, int]]:
        """(begin, end) zero padding per spatial axis for an input of these sizes."""
        if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = []
            for n, k, s, d in zip(spatial, self.kernel, self.strides, self.dilations,
                                  strict=True):
                total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
                small = total // 2
                out.append((small, total - small) if self.auto_pad == "SAME_UPPER"
                           else (total - small, small))
            return out
        if self.auto_pad == "VALID":
            return [(0, 0)] * len(self.kernel)
        r = len(self.kernel)
        return list(zip(self.pads[:r], self.pads[r:], strict=True))


@dataclass(frozen=True)
class Site:
    """A node whose input is contracted against a constant weight."""

    node: int
    name: str
    op: str  # MatMul, Gemm, Conv
    x: str  # the activation input
    weight: int  # input index of the weight
    groups: int  # rows per output position (grouped conv: one per group)
    width: int  # d: one row's length
    outputs: int  # output features (all groups)
    conv: Conv | None = None
    trans_a: bool = False
    trans_b: bool = False
    alpha: float = 1.0

    @property
    def taps(self) -> int:
        """Kernel positions per input channel (1 for MatMul/Gemm)."""
        return math.prod(self.conv.kernel) if self.conv else 1

    def accumulator_bytes(self, paired: bool, second: bool = True,
                          halves: bool = False) -> int:
        """float64 bytes `collect` keeps for this site (twice as many with `halves`)."""
        d = self.width
        mats = (1 if second else 0) + (1 if paired else 0)
        return 8 * self.groups * (mats * d * d + 2 * d) * (2 if halves else 1)


def site(graph: Graph, node: int) -> Site:
    """The site of `graph.nodes[node]`, or Unsupported saying why it is none."""
    n = graph.nodes[node]
    name = graph.node_name(node)
    if n.op_type not in ("MatMul", "Gemm", "Conv"):
        raise Unsupported(f"{n.op_type} {name}: no input moments for this op")
    w = graph.const(n.input[1]) if len(n.input) > 1 else None
    if w is None:
        raise Unsupported(f"{n.op_type} {name} has no constant weight")
    if n.op_type == "MatMul":
        rank = graph.rank(n.input[0])
        if w.ndim != 2 or graph.is_const(n.input[0]) or (rank is not None and rank < 2):
            raise Unsupported(f"MatMul {name} is not activation × constant matrix")
        return Site(node, name, "MatMul", n.input[0], 1, 1, int(w.shape[0]), int(w.shape[1]))
    if n.op_type == "Gemm":
        ta, tb = bool(attr(n, "transA", 0)), bool(attr(n, "transB", 0))
        alpha = float(attr(n, "alpha", 1.0))
        if w.ndim != 2 or alpha == 0.0:
            raise Unsupported(f"Gemm {name} has no usable constant weight")
        k, out = (w.shape[1], w.shape[0]) if tb else (w.shape[0], w.shape[1])
        return Site(node, name, "Gemm", n.input[0], 1, 1, int(k), int(out), trans_a=ta,
                    trans_b=tb, alpha=alpha)
    r = w.ndim - 2  # Conv
    if r < 1:
        raise Unsupported(f"Conv {name} has a weight of rank {w.ndim}")
    auto = attr(n, "auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    geo = Conv(tuple(int(k) for k in w.shape[2:]),
               tuple(attr(n, "strides", None) or [1] * r),
               tuple(attr(n, "dilations", None) or [1] * r),
               tuple(attr(n, "pads", None) or [0] * 2 * r), auto)
    groups = int(attr(n, "group", 1))
    return Site(node, name, "Conv", n.input[0], 1, groups,
                int(w.shape[1]) * math.prod(geo.kernel), int(w.shape[0]), geo)


# -- rows ---------------------------------------------------------------------------------------
def unfold(x: np.ndarray, geo: Conv) -> np.ndarray:
    """im2col: [N, C, *spatial] → [N, *out, C, *kernel], zero padding included; entry
    [n, o…, c, t…] = x_padded[n, c, o·stride + t·dilation]."""
    r = len(geo.kernel)
    pads = geo.padding(tuple(x.shape[2:]))
    xp = np.pad(x, [(0, 0), (0, 0), *pads]) if any(b or e for b, e in pads) else x
    out = [(xp.shape[2 + a] - (geo.kernel[a] - 1) * geo.dilations[a] - 1) // geo.strides[a] + 1
           for a in range(r)]
    if any(o < 1 for o in out):
        raise Unsupported(f"kernel {geo.kernel} does not fit input {list(x.shape[2:])}")
    taps = []
    for t in itertools.product(*(range(k) for k in geo.kernel)):
        index = tuple(slice(t[a] * geo.dilations[a],
                            t[a] * geo.dilations[a] + (out[a] - 1) * geo.strides[a] + 1,
                            geo.strides[a]) for a in range(r))
        taps.append(xp[(slice(None), slice(None), *index)])
    stacked = np.stack(taps, axis=2)  # [N, C, T, *out]
    stacked = stacked.reshape(*stacked.shape[:2], *geo.kernel, *out)
    order = [0, *range(2 + r, 2 + 2 * r), 1, *range(2, 2 + r)]
    return stacked.transpose(order)


def rows(s: Site, value: np.ndarray) -> np.ndarray:
    """One batch of the site's input as rows: [G, n, d] (see the module docstring)."""
    if s.op == "Conv":
        if value.ndim != 2 + len(s.conv.kernel):
            raise Unsupported(f"{s.name}: input of rank {value.ndim} for a "
                              f"{len(s.conv.kernel)}-D conv")
        c = value.shape[1]
        if c != s.groups * (s.width // s.taps):
            raise Unsupported(f"{s.name}: {c} input channels, the weight expects "
                              f"{s.groups * (s.width // s.taps)}")
        u = unfold(value, s.conv)  # [N, *out, C, *k]
        n = math.prod(u.shape[:1 + len(s.conv.kernel)])
        u = u.reshape(n, s.groups, s.width)
        return u.transpose(1, 0, 2)
    if s.op == "Gemm" and s.trans_a:
        value = value.T
    if value.shape[-1] != s.width:
        raise Unsupported(f"{s.name}: input width {value.shape[-1]}, the weight expects "
                          f"{s.width}")
    return value.reshape(1, -1, s.width)


def weight_rows(s: Site, w: np.ndarray) -> np.ndarray:
    """The weight as [G, out/G, d]: output o of group g is the dot product of row
    weight_rows[g, o] with that group's input rows (Gemm's alpha included)."""
    w = np.asarray(w, dtype=np.float64)
    if s.op == "Conv":
        return w.reshape(s.groups, s.outputs // s.groups, s.width)
    if s.op == "Gemm":
        return s.alpha * (w if s.trans_b else w.T)[None]
    return w.T[None]


def weight_from_rows(s: Site, wr: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Inverse of `weight_rows`: rows back in the layout (and dtype) of the weight `like`."""
    wr = np.asarray(wr, dtype=np.float64)
    if s.op == "Conv":
        out = wr.reshape(like.shape)
    elif s.op == "Gemm":
        out = wr[0] / s.alpha
        out = out if s.trans_b else out.T
    else:
        out = wr[0].T
    return np.ascontiguousarray(out.astype(like.dtype))


# -- accumulators -------------------------------------------------------------------------------
@dataclass
class Moments:
    """Streamed sums of one site's input rows (see the module docstring)."""

    site: Site
    n: int = 0
    sum: np.ndarray | None = None
    gram: np.ndarray | None = None
    psum: np.ndarray | None = None
    cross: np.ndarray | None = None
    half: Moments | None = None
    """With `halves`: the same sums over every other sample (the first of each pair), for
    two-fold cross-validation (`folds`)."""
    samples: int = 0

    @classmethod
    def empty(cls, s: Site, second: bool, paired: bool, halves: bool = False) -> Moments:
        g, d = s.groups, s.width
        return cls(s, 0, np.zeros((g, d)), np.zeros((g, d, d)) if second else None,
                   np.zeros((g, d)) if paired else None,
                   np.zeros((g, d, d)) if paired else None,
                   cls.empty(s, second, paired) if halves else None)

    def add(self, value: np.ndarray, paired: np.ndarray | None = None) -> None:
        """Add one batch of the input (and the paired model's input on the same samples)."""
        r = rows(self.site, value)
        p = None if paired is None else rows(self.site, paired)
        if p is not None and p.shape != r.shape:
            raise Unsupported(f"{self.site.name}: paired input has rows {p.shape}, "
                              f"not {r.shape}")
        self._sums(r, p)
        lead = value.shape[1] if self.site.op == "Gemm" and self.site.trans_a else (
            value.shape[0] if value.ndim else 1)
        if self.half is not None and lead and r.shape[1] % lead == 0:
            per = r.shape[1] // lead  # rows are sample-major: each leading item's rows
            first = (np.arange(lead) + self.samples) % 2 == 0
            pick = np.repeat(first, per)
            self.half._sums(r[:, pick], None if p is None else p[:, pick])
        self.samples += lead

    def _sums(self, r: np.ndarray, p: np.ndarray | None) -> None:
        for g in range(r.shape[0]):
            for start in range(0, r.shape[1], ROW_CHUNK):
                a = np.ascontiguousarray(r[g, start:start + ROW_CHUNK], dtype=np.float64)
                self.sum[g] += a.sum(axis=0)
                if self.gram is not None:
                    self.gram[g] += a.T @ a
                if p is not None and self.cross is not None:
                    b = np.ascontiguousarray(p[g, start:start + ROW_CHUNK], dtype=np.float64)
                    self.psum[g] += b.sum(axis=0)
                    self.cross[g] += b.T @ a
        self.n += r.shape[1]

    def folds(self) -> tuple[Moments, Moments] | None:
        """The two halves (every other sample; with `halves`), None when one is empty."""
        h = self.half
        if h is None or h.n == 0 or h.n == self.n:
            return None

        def rest(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a - b

        other = Moments(self.site, self.n - h.n, rest(self.sum, h.sum),
                        rest(self.gram, h.gram), rest(self.psum, h.psum),
                        rest(self.cross, h.cross))
        return h, other

    def mean(self) -> np.ndarray:
        """E[x], [G, d]."""
        return self.sum / max(self.n, 1)

    def second(self) -> np.ndarray:
        """E[x xᵀ], [G, d, d]."""
        if self.gram is None:
            raise ValueError("second moments were not collected (second=False)")
        return self.gram / max(self.n, 1)

    def paired_mean(self) -> np.ndarray:
        """E[x'] of the paired model's input, [G, d]."""
        if self.psum is None:
            raise ValueError("no paired model was run")
        return self.psum / max(self.n, 1)

    def cross_moment(self) -> np.ndarray:
        """E[x' xᵀ]: paired model's input (rows) against this model's (columns), [G, d, d]."""
        if self.cross is None:
            raise ValueError("no paired model was run")
        return self.cross / max(self.n, 1)

    def augmented(self) -> np.ndarray:
        """E[x̃ x̃ᵀ] with x̃ = [x; 1], [G, d+1, d+1]."""
        return _augment(self.second(), self.mean(), self.mean())

    def augmented_cross(self) -> np.ndarray:
        """E[x̃' x̃ᵀ] with x̃ = [x; 1], x̃' = [x'; 1], [G, d+1, d+1]."""
        return _augment(self.cross_moment(), self.paired_mean(), self.mean())


def _augment(m: np.ndarray, row_mean: np.ndarray, col_mean: np.ndarray) -> np.ndarray:
    g, a, b = m.shape
    out = np.empty((g, a + 1, b + 1))
    out[:, :a, :b] = m
    out[:, :a, b] = row_mean
    out[:, a, :b] = col_mean
    out[:, a, b] = 1.0
    return out


@dataclass
class Collected:
    """What `collect` gathered: moments by node index, and the sites it left out, why."""

    moments: dict[int, Moments] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)


# -- streaming ----------------------------------------------------------------------------------
def collect(model: onnx.ModelProto, sites: list[Site], batches: Iterable[dict[str, np.ndarray]],
            *, second: bool = True, paired: onnx.ModelProto | None = None,
            overrides: dict[str, np.ndarray] | None = None,
            paired_overrides: dict[str, np.ndarray] | None = None,
            halves: bool = False, budget: int = BUDGET,
            progress: Callable[[str], None] | None = None) -> Collected:
    """Moments of every site's input in `model` over `batches` (see the module docstring).

    `paired`: a model with the same site inputs (same tensor names and shapes: the original
    beside its updated or masked copy) run on the same batches; cross moments pair its input
    (rows) with `model`'s (columns). `overrides` / `paired_overrides`: initializer values by
    name that replace the models' own (the weights of a sequential step). `halves`: also
    keep the sums of every other sample (`Moments.folds`: two folds for cross-validation).
    Sites over `budget` bytes of accumulators are skipped (`Collected.skipped`). The
    statistics sessions use
    onnxruntime's optimisations: they measure, they prove nothing."""
    out = Collected()
    live = []
    for s in sites:
        need = s.accumulator_bytes(paired is not None, second, halves)
        if need > budget:
            out.skipped[s.node] = (f"its input statistics need {need / 2**20:.0f} MB "
                                   f"(rows of {s.width}), over the budget of "
                                   f"{budget / 2**20:.0f} MB")
        else:
            live.append(s)
            out.moments[s.node] = Moments.empty(s, second, paired is not None, halves)
    if not live:
        return out
    names = list(dict.fromkeys(s.x for s in live))
    sess = _session(model, names, overrides)
    other = None if paired is None else _session(paired, names, paired_overrides)
    for k, feeds in enumerate(batches):
        if progress is not None:
            progress(f"input statistics of {len(live)} layers: batch {k + 1}")
        values = dict(zip(names, sess.run(names, feeds), strict=True))
        pvalues = (None if other is None
                   else dict(zip(names, other.run(names, feeds), strict=True)))
        for s in live:
            out.moments[s.node].add(values[s.x], None if pvalues is None else pvalues[s.x])
    return out


def _session(model: onnx.ModelProto, names: list[str],
             overrides: dict[str, np.ndarray] | None) -> ort.InferenceSession:
    part = upto(model, names)
    kept = {t.name for t in part.graph.initializer}
    own = {k: v for k, v in (overrides or {}).items() if k in kept}
    return validation.session(part, overrides=own or None, optimize=True)


def upto(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` whose outputs are the tensors `names`, with only the nodes and
    initializers that compute them (graph inputs all stay: feeds need not change)."""
    g = model.graph
    needed = set(names)
    keep = []
    for node in reversed(g.node):
        if any(o in needed for o in node.output if o):
            keep.append(node)
            needed.update(i for i in node.input if i)
            needed.update(subgraph_references(node))
    out = external.shell(model, skip=("node", "initializer", "input", "output", "value_info"))
    out.graph.node.extend(reversed(keep))
    inits = [t for t in g.initializer if t.name in needed]
    out.graph.initializer.extend(inits)
    dropped = {t.name for t in g.initializer} - {t.name for t in inits}
    out.graph.input.extend(i for i in g.input if i.name not in dropped)  # old exporters list
    out.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    return out
