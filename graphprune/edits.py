"""What the analysis asks the rewrite to change, as plain data.

A *member* is a constant sliced when its units go. An *edit* is a size encoding that must
follow the units kept: a few declarative records (an attribute set to a count, a shape entry
set or scaled from an axis count, Split sizes, Slice bounds, Gather indices). The rules emit
them; the rewrite (passes/rewrite.py) interprets them by type, and reports list them through
`describe`. Records hold slot ids, never values: what a count is depends on the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx

from .slots import Span

if TYPE_CHECKING:
    from .ir import Graph


IoChanges = dict[str, dict[int, np.ndarray]]
"""Graph input/output name -> axis -> keep mask, for the interfaces that shrink
(allow_io_change): what the rewrite does to them, and what the exact check feeds and
compares on them."""


@dataclass(frozen=True, eq=False)
class Member:
    """Input `index` of node `node` is a constant sliced along `span` when slots go."""

    node: int
    index: int
    span: Span
    role: str  # "source" (produces units), "sink" (contracts them), "param" (per-unit values)


@dataclass(frozen=True, eq=False)
class Edit:
    """A size encoding of node `node` that the rewrite sets from the units kept."""

    node: int

    def ids(self) -> list[np.ndarray]:
        """The slot ids whose removal changes the encoding."""
        raise NotImplementedError

    def what(self, graph: Graph) -> str:
        raise NotImplementedError

    def change(self, roots: np.ndarray) -> str:
        raise NotImplementedError

    def describe(self, graph: Graph, roots: np.ndarray) -> dict[str, str]:
        """One line for plans and reports: which node, which encoding, set to what."""
        return {"node": graph.node_name(self.node), "what": self.what(graph),
                "edit": self.change(roots)}


@dataclass(frozen=True, eq=False)
class AttrCount(Edit):
    """Attribute `name` (a conv's group, num_groups, num_heads) := number of kept `units`."""

    name: str
    units: np.ndarray

    def ids(self) -> list[np.ndarray]:
        return [self.units]

    def what(self, graph: Graph) -> str:
        return self.name

    def change(self, roots: np.ndarray) -> str:
        return f"set to {_count(self.units, roots)}"


@dataclass(frozen=True, eq=False)
class EntryCount(Edit):
    """Entry `pos` of size input `index` (a Reshape/Expand shape, Resize sizes) := kept
    positions of `span` along `axis`."""

    index: int
    pos: int
    span: Span
    axis: int

    def ids(self) -> list[np.ndarray]:
        return [self.span.ids]

    def what(self, graph: Graph) -> str:
        return f"{_input_name(graph, self.node, self.index)}[{self.pos}]"

    def change(self, roots: np.ndarray) -> str:
        return f"set to {_count(line(self.span, self.axis), roots)}"


@dataclass(frozen=True, eq=False)
class EntryScale(EntryCount):
    """Entry `pos` of size input `index` := entry / `period` × kept positions of `span` along
    `axis` (a batch-folded head axis: B·H becomes B·H′). The same entry as EntryCount's, a
    different change (the rewrite tells them apart by type)."""

    period: int

    def change(self, roots: np.ndarray) -> str:
        return f"scale by {_count(line(self.span, self.axis), roots)} / {self.period}"


@dataclass(frozen=True, eq=False)
class SplitSizes(Edit):
    """A Split's sizes := kept positions of each piece."""

    pieces: tuple[np.ndarray, ...]

    def ids(self) -> list[np.ndarray]:
        return list(self.pieces)

    def what(self, graph: Graph) -> str:
        return "split"

    def change(self, roots: np.ndarray) -> str:
        return "set to " + ", ".join(_count(p, roots) for p in self.pieces)


@dataclass(frozen=True, eq=False)
class SliceBounds(Edit):
    """Bounds of the `k`-th sliced axis, which carried `axis_ids` and kept `kept` from
    position `start` on := the same range among the kept positions."""

    k: int
    axis_ids: np.ndarray
    start: int
    kept: np.ndarray

    def ids(self) -> list[np.ndarray]:
        return [self.axis_ids]

    def what(self, graph: Graph) -> str:
        return f"starts[{self.k}], ends[{self.k}]"

    def change(self, roots: np.ndarray) -> str:
        return f"move to the kept positions ({_count(self.kept, roots)})"


@dataclass(frozen=True, eq=False)
class GatherIndices(Edit):
    """Gather indices `pos` into an axis carrying `ids` := the picked positions that are
    kept, renumbered among the kept ones."""

    axis_ids: np.ndarray
    pos: np.ndarray

    def ids(self) -> list[np.ndarray]:
        return [self.axis_ids]

    def what(self, graph: Graph) -> str:
        return "indices"

    def change(self, roots: np.ndarray) -> str:
        return f"renumber among the kept positions ({_count(self.axis_ids, roots)})"


def line(span: Span, axis: int) -> np.ndarray:
    """The ids along `axis` of a span (first position of its other axes)."""
    k = span.axes.index(axis)
    index = tuple(slice(None) if j == k else 0 for j in range(span.ids.ndim))
    return span.ids[index]


def _count(ids: np.ndarray, roots: np.ndarray) -> str:
    """How a count of kept positions follows the units: kept units, 64 per kept unit…"""
    r = roots[np.ravel(ids)]
    _, counts = np.unique(r, return_counts=True)
    if len(counts) == len(r):
        return f"kept units (of {len(r)})"
    if np.all(counts == counts[0]):
        return f"{counts[0]} per kept unit (of {len(counts)})"
    return f"kept positions (of {len(r)} over {len(counts)} units)"


def _input_name(graph: Graph, node: int, index: int) -> str:
    """The schema's name of an input (`shape`, `sizes`), else `input N`."""
    n = graph.nodes[node]
    try:
        schema = onnx.defs.get_schema(n.op_type, graph.opset, n.domain)
    except onnx.defs.SchemaError:
        return f"input {index}"
    return schema.inputs[index].name if index < len(schema.inputs) else f"input {index}"
