"""Cost model: parameters and MACs of the pruned model for any set of removed units, without
rewriting it (the target search evaluates hundreds of candidate plans).

Every member tensor keeps the fraction of its elements whose positions survive, the product
over its spans of the kept fraction of each. Parameters: the member tensors' elements shrink by
that fraction. MACs of Conv/ConvTranspose/Gemm/MatMul-with-a-constant are proportional to
their weight's element count (out positions × reduction size, spatial sizes unchanged), so they
shrink by the weight's kept fraction too. MACs of other nodes (activation × activation
products) are taken as unchanged; the pipeline counts the real model afterwards and corrects
the target when they moved.

Removed residual blocks (graphprune.blocks) take every node and weight that goes with them
(together: what only they read, a mask or table their branches share, goes too): their MACs
(attention products included) and parameters leave whole, and the width terms of those
nodes and weights stop counting, so units inside a block are never counted twice.
"""

from __future__ import annotations

import numpy as np
import onnx

from graphprune.analysis import Analysis
from graphprune.blocks import elements, together
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
        self.term_nodes: list[int] = []  # node of each MAC term
        self.term_roots: list[str] = []  # weight of each parameter term
        self.terms = {"macs": self._mac_terms(by_use, per_node),
                      "params": self._param_terms(by_use)}
        self.untracked = self.before["macs"] - float(self.terms["macs"][0].sum())
        self.node_macs = np.array(per_node, dtype=np.float64)
        self._gone: dict[frozenset[int], tuple[np.ndarray, set[str]]] = {}

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
                self.term_nodes.append(i)
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
            self.term_roots.append(root)
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
        live, whole = self._blocks_gone(removed)
        out = {}
        for metric, (w, idx) in self.terms.items():
            kept = frac[idx].prod(axis=1) if len(w) else np.zeros(0)
            out[metric] = self.before[metric] - float(np.sum((w * (1.0 - kept))[live[metric]]))
            out[metric] -= whole[metric]
        return out

    def _blocks_gone(self, removed: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Per metric: which width terms still count (their node or weight is not in a
        removed block), and what the removed blocks take whole."""
        n_macs, n_params = len(self.terms["macs"][0]), len(self.terms["params"][0])
        gone = frozenset(b.unit for b in self.an.blocks if removed[b.unit])
        if not gone:
            return ({"macs": np.ones(n_macs, bool), "params": np.ones(n_params, bool)},
                    {"macs": 0.0, "params": 0.0})
        if gone not in self._gone:
            nodes, names = together(self.an.graph, [b for b in self.an.blocks if b.unit in gone])
            dead = np.zeros(len(self.node_macs), dtype=bool)
            dead[sorted(nodes)] = True
            self._gone[gone] = (dead, set(names))
        dead, weights = self._gone[gone]
        g = self.an.graph
        live = {"macs": ~dead[np.array(self.term_nodes, dtype=np.int64)],
                "params": np.array([r not in weights for r in self.term_roots], dtype=bool)}
        whole = {"macs": float(self.node_macs[dead].sum()),
                 "params": float(sum(elements(g, w) for w in weights))}
        return live, whole

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
