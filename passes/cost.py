"""Cost model: parameters and MACs of the pruned model for any set of removed units, without
rewriting it (the target search evaluates hundreds of candidate plans).

Every member tensor keeps the fraction of its elements whose positions survive, the product
over its spans of the kept fraction of each. Parameters: the member tensors' elements shrink by
that fraction. MACs of Conv/ConvTranspose/Gemm/MatMul-with-a-constant are proportional to
their weight's element count (out positions × reduction size, spatial sizes unchanged), so they
shrink by the weight's kept fraction too. MACs of other nodes (activation × activation
products) are taken as unchanged; the pipeline counts the real model afterwards and corrects
the target when they moved.
"""

from __future__ import annotations

import numpy as np
import onnx

from graphprune.analysis import Analysis
from graphprune.ir import Graph
from graphprune.metrics import FLOAT_TYPES, count_params, node_macs

METRICS = ("macs", "params")
"""The metrics the cost model counts (a latency target is measured, not counted)."""


class CostModel:
    def __init__(self, model: onnx.ModelProto, an: Analysis, feeds: dict[str, np.ndarray]):
        self.an = an
        per_node = node_macs(model, feeds)
        self.before = {"macs": float(sum(per_node)), "params": float(count_params(model))}
        spans: dict[int, int] = {}  # id(span) → index
        span_roots: list[np.ndarray] = []
        by_use: dict[tuple[int, int], list[int]] = {}
        for m in an.members:
            if id(m.span) not in spans:
                spans[id(m.span)] = len(span_roots)
                span_roots.append(an.roots[m.span.ids.ravel()])
            by_use.setdefault((m.node, m.index), []).append(spans[id(m.span)])
        self.seg = np.concatenate([np.full(len(r), k) for k, r in enumerate(span_roots)]
                                  or [np.zeros(0, int)])
        self.flat = np.concatenate(span_roots or [np.zeros(0, int)]).astype(np.int64)
        self.sizes = np.array([len(r) for r in span_roots] or [1], dtype=np.float64)
        self.n_spans = len(span_roots)
        self.terms = {"macs": self._mac_terms(by_use, per_node),
                      "params": self._param_terms(by_use)}
        self.untracked = self.before["macs"] - float(self.terms["macs"][0].sum())

    def approximate(self, metric: str) -> bool:
        """Whether some cost of `metric` escapes the model (MACs of weight-free products)."""
        return metric == "macs" and self.untracked > 0

    def _mac_terms(self, by_use, per_node) -> tuple[np.ndarray, np.ndarray]:
        weights, idx = [], []
        for i, macs in enumerate(per_node):
            use = next((by_use[(i, k)] for k in (1, 0) if (i, k) in by_use), None)
            if macs and use is not None:
                weights.append(macs)
                idx.append(use)
        return np.array(weights, dtype=np.float64), self._pad(idx)

    def _param_terms(self, by_use) -> tuple[np.ndarray, np.ndarray]:
        g = self.an.graph
        seen: set[str] = set()
        weights, idx = [], []
        for (node, index), use in sorted(by_use.items()):
            name = g.nodes[node].input[index]
            root = g.const_root(name) or name
            value = g.const(name)
            if root in seen or value is None or not _counted(g, root, value):
                continue
            seen.add(root)
            weights.append(float(value.size))
            idx.append(use)
        return np.array(weights, dtype=np.float64), self._pad(idx)

    def _pad(self, idx: list[list[int]]) -> np.ndarray:
        width = max((len(x) for x in idx), default=1)
        return np.array([x + [self.n_spans] * (width - len(x)) for x in idx] or
                        np.zeros((0, 1)), dtype=np.int64)

    def kept_fractions(self, removed: np.ndarray) -> np.ndarray:
        """Kept fraction of every span, plus a trailing 1 (padding)."""
        gone = removed[self.flat].astype(np.float64)
        lost = np.bincount(self.seg, weights=gone, minlength=self.n_spans)
        return np.append(1.0 - lost / self.sizes[:self.n_spans], 1.0)

    def evaluate(self, removed: np.ndarray) -> dict[str, float]:
        """Absolute MACs and parameters after removing `removed` (bool per root)."""
        frac = self.kept_fractions(removed)
        out = {}
        for metric, (w, idx) in self.terms.items():
            kept = frac[idx].prod(axis=1) if len(w) else np.zeros(0)
            out[metric] = self.before[metric] - float(np.sum(w * (1.0 - kept)))
        return out

    def fraction(self, removed: np.ndarray, metric: str) -> float:
        before = self.before[metric]
        return self.evaluate(removed)[metric] / before if before else 1.0

    def unit_saving(self, units: list[int], metric: str) -> float:
        """Cost saved per unit when `units` (of one group) alone are removed."""
        if not units:
            return 0.0
        removed = np.zeros(len(self.an.roots), dtype=bool)
        removed[units] = True
        return (self.before[metric] - self.evaluate(removed)[metric]) / len(units)


def _counted(g: Graph, root: str, value: np.ndarray) -> bool:
    """Counted by metrics.count_params: floating-point initializers and Constant outputs."""
    if root in g.initializers:
        return g.initializers[root].data_type in FLOAT_TYPES
    return np.issubdtype(value.dtype, np.floating)
