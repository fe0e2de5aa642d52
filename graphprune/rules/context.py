"""What a rule sees of one node (`Ctx`) and the analysis state it reads and extends (`State`).

The analysis (graphprune/analysis.py) walks the graph and calls each node's rule with a
`Ctx`; rules label, couple and freeze slots, and record members and edits, only through it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..edits import Edit, Member
from ..ir import Dim, Graph
from ..shapeval import known_value, to_ints
from ..slots import Span, UnionFind


@dataclass
class State:
    """Spans and marks per tensor, the union-find of slots, and what the rewrite will do."""

    graph: Graph
    inexact: bool = False
    """Let units pass through statistics over their axis (hidden-size pruning), tagged."""
    uf: UnionFind = field(default_factory=UnionFind)
    spans: dict[str, list[Span]] = field(default_factory=dict)
    marks: dict[str, list[np.ndarray | None]] = field(default_factory=dict)
    """Per entry of a shape tensor: the slots whose count it is (read through Shape), or None."""
    members: list[Member] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    blockers: Counter = field(default_factory=Counter)


class Ctx:
    """What a rule sees of one node: its inputs' spans and constants, and ways to record."""

    def __init__(self, state: State, index: int) -> None:
        self.state = state
        self.index = index
        self.node: onnx.NodeProto = state.graph.nodes[index]
        self.graph = state.graph
        self.uf = state.uf
        self.opset = state.graph.opset
        self.marks_handled = False

    # -- reading ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.graph.node_name(self.index)

    def n_inputs(self) -> int:
        return len(self.node.input)

    def input(self, i: int) -> str:
        return self.node.input[i] if i < len(self.node.input) else ""

    def spans(self, i: int) -> list[Span]:
        return self.state.spans.get(self.input(i), [])

    def marks(self, i: int) -> list[np.ndarray | None] | None:
        return self.state.marks.get(self.input(i))

    def const(self, i: int) -> np.ndarray | None:
        return self.graph.const(self.input(i))

    def is_const(self, i: int) -> bool:
        """Whether input `i` is constant, without reading a weight's values."""
        return self.graph.is_const(self.input(i))

    def known(self, i: int) -> list[int | None] | None:
        """Entries of a small int input known statically (None per unknown entry)."""
        if not self.input(i):
            return None
        v = known_value(self.graph, self.input(i))
        return None if v is None else to_ints(v)

    def shape(self, i: int) -> list[Dim] | None:
        return self.graph.shape(self.input(i))

    def out_shape(self, i: int = 0) -> list[Dim] | None:
        return self.graph.shape(self.node.output[i]) if i < len(self.node.output) else None

    def rank(self, i: int) -> int | None:
        s = self.shape(i)
        return None if s is None else len(s)

    def used(self, out: int) -> bool:
        if out >= len(self.node.output) or not self.node.output[out]:
            return False
        name = self.node.output[out]
        return bool(self.graph.uses(name)) or name in self.graph.outputs

    @property
    def inexact_mode(self) -> bool:
        return self.state.inexact

    # -- recording -------------------------------------------------------------------------
    def set_out(self, i: int, spans: list[Span]) -> None:
        if spans and i < len(self.node.output) and self.node.output[i]:
            self.state.spans[self.node.output[i]] = spans

    def set_marks(self, i: int, marks: list[np.ndarray | None]) -> None:
        self.marks_handled = True
        if any(m is not None for m in marks):
            self.state.marks[self.node.output[i]] = marks

    def consume_marks(self, i: int, overridden: set[int]) -> None:
        """Input `i` is a shape whose entries in `overridden` the rewrite replaces: marks there
        are harmless; marks elsewhere mean a unit axis's size would leak into another size."""
        self.marks_handled = True
        for pos, m in enumerate(self.marks(i) or []):
            if m is not None and pos not in overridden:
                self.freeze(m, "channel count used for another size")

    def freeze_marks(self, why: str) -> None:
        """Sizes read as values stay as they are (their units frozen along one line, so the
        axis never shrinks); the op itself then sees unchanged values and its rule handles
        the tensors' units as usual."""
        self.marks_handled = True
        for i in range(self.n_inputs()):
            for m in self.marks(i) or []:
                if m is not None:
                    self.freeze(m, why)

    def fresh(self, n: int) -> np.ndarray:
        return self.uf.fresh(n)

    def unify(self, a: np.ndarray, b: np.ndarray) -> None:
        self.uf.unify(a, b)

    def freeze(self, ids: np.ndarray, why: str) -> None:
        self.uf.freeze(ids, f"{why} ({self.node.op_type} {self.name})")

    def freeze_spans(self, spans: list[Span], why: str) -> None:
        for s in spans:
            self.freeze(s.ids, why)

    def freeze_inputs(self, why: str) -> None:
        for i in range(self.n_inputs()):
            self.freeze_spans(self.spans(i), why)
            for m in self.marks(i) or []:
                if m is not None:
                    self.freeze(m, why)

    def member(self, i: int, span: Span, role: str, node: int | None = None) -> None:
        """Input `i` of this node (or of `node`) is sliced along `span` with the units."""
        self.state.members.append(Member(self.index if node is None else node, i, span, role))

    def edit(self, record: Edit) -> None:
        self.state.edits.append(record)

    def blocker(self) -> None:
        """This op, without a rule, stopped units (analyze lists it)."""
        self.state.blockers[self.node.op_type] += 1

    def tag(self, ids: np.ndarray, tag: str) -> None:
        self.uf.tag(ids, tag)
