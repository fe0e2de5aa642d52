"""Where every member of the analysis lies in the module's parameters and buffers.

A member is a constant input of an ONNX node, sliced along its span when units go. In the
torch path that constant is a module tensor, read directly or through layout ops the analysis
folds (`ir.folds`: the Transpose the exporter puts before the MatMul of a Linear on 3-D input,
a Reshape, the Split/Slice/Gather piece of a fused QKV weight). Following those ops on a
tensor of element *indices* instead of values tells, for every element of the member, which
element of the module tensor it is, so a member's units land on the module tensor exactly,
whatever layout ops stand between (`Slice`).

Axes, for the common layers (the sink is the consuming side, `role == "sink"`):
  - nn.Linear weight [out, in]: source axis 0, sink axis 1 (also under the exporter's
    Transpose → MatMul: the Transpose's permutation is followed back);
  - nn.Conv*d weight [out, in/groups, *k]: source axis 0, sink axis 1 (depthwise: axis 0
    carries both, as one unit per channel);
  - nn.ConvTranspose*d weight [in, out/groups, *k]: source axis 1, sink axis 0;
  - biases, BatchNorm weight/bias/running_mean/running_var, LayerNorm (hidden scope): axis 0;
  - GPT-2's Conv1D weight [in, out] (addmm): source axis 1, sink axis 0.
A member whose constant is not a module tensor (a constant computed in `forward`, the zero
bias the exporter gives a convolution without one), or whose positions cannot be traced onto
one, cannot be masked. Where it is a sink, its units are frozen, with the reason: the masked
module would still read them, and the rewrite (proven against the masked original, whose sinks
are zero) would not be equal to it. Where it is a source or a per-unit parameter, the rewrite
slices the constant and the module needs no mask there (the units' sinks are masked), so the
member is only listed (`Mapping.constants`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphprune import ops
from graphprune.analysis import Analysis, Group
from graphprune.edits import Member
from graphprune.ir import Graph, folds


@dataclass(eq=False)
class Slice:
    """One member on one module tensor: within `region` (per tensor axis the positions the
    member covers; None: all of them), the unit root of a position depends only on its
    coordinates along `axes` (ascending), given by `roots` (shaped as the region along
    those axes)."""

    tensor: str
    axes: tuple[int, ...]
    roots: np.ndarray
    region: tuple[np.ndarray | None, ...]
    member: Member

    @property
    def role(self) -> str:
        return self.member.role

    def index(self, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
        """Open-mesh index of the region (np.ix_), over a tensor of `shape`."""
        return np.ix_(*[np.arange(n) if r is None else r for n, r in zip(shape, self.region,
                                                                           strict=True)])

    def expanded(self, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Per-unit-position `values` (shaped as `roots`) broadcast over the region."""
        sizes = [n if r is None else len(r) for n, r in zip(shape, self.region, strict=True)]
        view = [sizes[a] if a in self.axes else 1 for a in range(len(shape))]
        return np.broadcast_to(values.reshape(view), sizes)


@dataclass
class Mapping:
    """The analysis on the module: slices per member, tensor shapes, units that froze."""

    slices: list[Slice]
    shapes: dict[str, tuple[int, ...]]
    frozen: dict[int, str]
    """Unit root → why it cannot be masked on the module (its units are frozen)."""
    constants: list[str]
    """Source and parameter members that are no module tensor (sliced in ONNX only)."""

    def by_tensor(self) -> dict[str, list[Slice]]:
        out: dict[str, list[Slice]] = {}
        for s in self.slices:
            out.setdefault(s.tensor, []).append(s)
        return out


def map_members(an: Analysis, names: dict[str, str],
                shapes: dict[str, tuple[int, ...]]) -> Mapping:
    """Locate every member on the module (`names`: initializer → module tensor name;
    `shapes`: module tensor name → shape) and freeze, in `an.groups`, every unit carried by
    a member that is not on a module tensor."""
    slices, frozen, constants = [], {}, []
    for m in an.members:
        got = locate(an, m, names)
        if isinstance(got, Slice):
            slices.append(got)
            continue
        if m.role != "sink":
            constants.append(got)
            continue
        for r in np.unique(an.roots[m.span.ids]).tolist():
            frozen.setdefault(int(r), got)
    owner = {u: g for g in an.groups for u in g.units}
    for r, why in frozen.items():
        g: Group | None = owner.get(r)
        if g is not None and why not in g.frozen.get(r, []):
            g.frozen.setdefault(r, []).append(why)
    return Mapping(slices, {n: shapes[n] for n in dict.fromkeys(s.tensor for s in slices)},
                   frozen, constants)


def fold_chain(graph: Graph, name: str) -> tuple[str, list[tuple[int, int]]] | None:
    """The initializer a constant folds from and the (node, output) steps from it to the
    constant, in order; None when it comes from no initializer through layout ops alone."""
    steps = []
    while name not in graph.initializers:
        p = graph.producer.get(name)
        if p is None or not folds(graph.nodes[p]):
            return None
        node = graph.nodes[p]
        steps.append((p, list(node.output).index(name)))
        name = node.input[0]
    return name, steps[::-1]


def locate(an: Analysis, m: Member, names: dict[str, str]) -> Slice | str:
    """The member's slice of a module tensor, or why there is none."""
    g = an.graph
    node = g.nodes[m.node]
    where = f"input {m.index} of {node.op_type} {g.node_name(m.node)}"
    if m.span.tiled:
        return f"{where} is tiled along a dynamic axis"
    chain = fold_chain(g, node.input[m.index])
    if chain is None or chain[0] not in names:
        what = node.input[m.index] if chain is None else chain[0]
        return f"'{what}' ({where}) is no parameter or buffer of the module"
    root, steps = chain
    roots = an.roots[m.span.ids]
    if all(g.nodes[p].op_type in ("Identity", "Transpose") for p, _ in steps):
        return _permuted(an, m, names[root], len(g.initializers[root].dims), steps, roots)
    return _traced(an, m, names[root], root, steps, roots, where)


def _permuted(an: Analysis, m: Member, tensor: str, rank: int, steps: list[tuple[int, int]],
              roots: np.ndarray) -> Slice:
    """Identity and Transpose only: member axis j is tensor axis axes[j]."""
    axes = list(range(rank))
    for p, _ in steps:
        node = an.graph.nodes[p]
        if node.op_type == "Transpose":
            axes = [axes[k] for k in _perm(node, rank)]
    on = [axes[a] for a in m.span.axes]
    order = sorted(range(len(on)), key=on.__getitem__)
    return Slice(tensor, tuple(on[k] for k in order), np.transpose(roots, order),
                 (None,) * len(axes), m)


def _perm(node, rank: int) -> list[int]:
    for a in node.attribute:
        if a.name == "perm":
            return list(a.ints)
    return list(range(rank))[::-1]


def _traced(an: Analysis, m: Member, tensor: str, root: str, steps: list[tuple[int, int]],
            roots: np.ndarray, where: str) -> Slice | str:
    """Any layout ops: fold an array of element indices through them."""
    g = an.graph
    shape = tuple(int(d) for d in g.initializers[root].dims)
    index = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    for p, k in steps:
        node = g.nodes[p]
        fold = ops.traits(node.domain, node.op_type).fold
        args = [index] + [g.const(x) if x else None for x in node.input[1:]]
        index = None if fold is None else fold(node, args, k, g.opset)
        if index is None:
            return f"{where}: positions through {node.op_type} {g.node_name(p)} not followed"
    view = [roots.shape[m.span.axes.index(a)] if a in m.span.axes else 1
            for a in range(index.ndim)]
    ids = np.broadcast_to(roots.reshape(view), index.shape)
    flat = np.full(int(np.prod(shape)), -1, dtype=np.int64)
    flat[index.ravel()] = ids.ravel()
    if not np.array_equal(flat[index.ravel()], ids.ravel()):
        return f"{where} reads one element of '{root}' for two units"
    return _compress(flat.reshape(shape), tensor, m, where, root)


def _compress(full: np.ndarray, tensor: str, m: Member, where: str, root: str) -> Slice | str:
    """A tensor-shaped array of unit roots (-1: not covered) as a Slice."""
    covered = full >= 0
    region = []
    for a in range(full.ndim):
        other = tuple(b for b in range(full.ndim) if b != a)
        pos = np.flatnonzero(covered.any(axis=other) if other else covered)
        region.append(None if len(pos) == full.shape[a] else pos)
    mesh = np.ix_(*[np.arange(n) if r is None else r for n, r in zip(full.shape, region,
                                                                       strict=True)])
    sub = full[mesh]
    if not (sub >= 0).all() or int(covered.sum()) != sub.size:
        return f"{where} covers no rectangle of '{root}'"
    axes = tuple(a for a in range(sub.ndim) if not np.all(sub == np.take(sub, [0], axis=a)))
    index = tuple(slice(None) if a in axes else 0 for a in range(sub.ndim))
    return Slice(tensor, axes, sub[index], tuple(region), m)


def keep_masks(mapping: Mapping, removed: np.ndarray) -> dict[str, np.ndarray]:
    """Per module tensor with a removed position: True where kept (every member's view)."""
    out: dict[str, np.ndarray] = {}
    for s in mapping.slices:
        gone = removed[s.roots]
        if not gone.any():
            continue
        shape = mapping.shapes[s.tensor]
        keep = out.setdefault(s.tensor, np.ones(shape, dtype=bool))
        keep[s.index(shape)] &= ~s.expanded(gone, shape)
    return out
