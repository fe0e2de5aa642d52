"""Per-unit sums over module tensors, in torch: what gradient criteria and regularisers need.

Every member of the analysis lies on a module tensor as a `mapping.Slice`. `SliceIndex`
sums any tensor-shaped quantity over each of the slice's units (the positions outside the
region drop out, the axes the units do not vary along are summed, then positions of one unit
are added up), with autograd intact, so a regulariser built from it trains.

Gradient criteria (`GradientStats`, one accumulator per member and unit; call `add` after
`loss.backward()`):
  - `taylor` (Molchanov et al. 2019): |Σ w·∂L/∂w| over the unit's positions of the member,
    averaged over the batches seen since the last pruning step;
  - `movement` (Sanh et al. 2020): −Σ w·∂L/∂w summed over every step seen so far (weights
    moving away from zero score high; it is never reset);
  - `obd` with the empirical Fisher diagonal: ½ Σ (∂L/∂w)²·w², averaged over batches (the
    batch gradient stands in for the per-sample one).
Member scores are combined into one unit score by the scoring pass's `aggregate` (sum, mean,
max over the members carrying the unit) and normalised as any criterion's.
"""

from __future__ import annotations

import numpy as np
import torch

from graphprune.passes.criteria import MemberScore

from .mapping import Slice

GRADIENT_CRITERIA = ("taylor", "movement", "obd")


class SliceIndex:
    """How to sum a quantity over one slice's units."""

    def __init__(self, s: Slice, shape: tuple[int, ...]) -> None:
        self.slice = s
        units, inverse = np.unique(s.roots.ravel(), return_inverse=True)
        self.units = units
        """The unit roots the slice carries (its local unit order)."""
        self.inverse = torch.from_numpy(np.asarray(inverse, dtype=np.int64).ravel())
        self.region = [(a, torch.from_numpy(np.asarray(r, dtype=np.int64)))
                       for a, r in enumerate(s.region) if r is not None]
        self.other = tuple(a for a in range(len(shape)) if a not in s.axes)

    def sums(self, q: torch.Tensor) -> torch.Tensor:
        """Σ q over each unit's positions, in the local unit order."""
        for a, idx in self.region:
            q = q.index_select(a, idx.to(q.device))
        if self.other:
            q = q.sum(dim=self.other)
        out = torch.zeros(len(self.units), dtype=q.dtype, device=q.device)
        return out.index_add(0, self.inverse.to(q.device), q.reshape(-1))


class GradientStats:
    """Gradient statistics of one criterion, per member and unit (see the module doc)."""

    def __init__(self, kind: str, indexes: list[SliceIndex]) -> None:
        if kind not in GRADIENT_CRITERIA:
            raise ValueError(f"no gradient criterion '{kind}'")
        self.kind, self.indexes = kind, indexes
        self.acc: list[torch.Tensor | None] = [None] * len(indexes)
        self.batches = 0

    def add(self, tensors: dict[str, torch.Tensor]) -> None:
        """One batch's gradients (the `.grad` of the module's parameters)."""
        with torch.no_grad():
            for k, ix in enumerate(self.indexes):
                t = tensors[ix.slice.tensor]
                if not isinstance(t, torch.nn.Parameter) or t.grad is None:
                    continue
                v = self._value(ix, t.detach(), t.grad.detach()).double()
                self.acc[k] = v if self.acc[k] is None else self.acc[k] + v
        self.batches += 1

    def _value(self, ix: SliceIndex, w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.kind == "taylor":
            return ix.sums(w * g).abs()
        if self.kind == "movement":
            return -ix.sums(w * g)
        return 0.5 * ix.sums(torch.square(w * g))

    def member_scores(self) -> list[MemberScore]:
        """(unit roots, scores) per member with gradients (the scoring pass's format)."""
        scale = 1.0 if self.kind == "movement" else 1.0 / max(1, self.batches)
        return [(ix.units, acc.cpu().numpy() * scale)
                for ix, acc in zip(self.indexes, self.acc, strict=True) if acc is not None]

    def restart(self) -> None:
        """After pruning: taylor and obd average anew; movement keeps accumulating."""
        if self.kind != "movement":
            self.acc = [None] * len(self.indexes)
            self.batches = 0


def unit_weights(ix: SliceIndex, live: np.ndarray, device: torch.device,
                 dtype: torch.dtype) -> torch.Tensor:
    """1.0 for the slice's units that `live` (a flag per slot root) marks, else 0.0."""
    return torch.from_numpy(live[ix.units].astype(np.float64)).to(device=device, dtype=dtype)
