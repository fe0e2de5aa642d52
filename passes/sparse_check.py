"""Writing a sparsified model and checking it: the weights in place, the pattern read back
from the model as written, fidelity against the original on held-back samples.

Nothing a sparsifying method does is exact, so nothing is proven: the output must pass
onnx.checker (`validation.structural_check`, in the pass), give the original's output shapes
and finite values where the original's are, and carry the pattern in every weight it
sparsified; the rest is measured.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from graphprune import external
from graphprune.errors import ValidationError
from graphprune.ir import Graph

from . import validation
from .calibration import Calibration
from .options import Options
from .rewrite import store
from .sparse_layers import Layer
from .sparse_masks import Pattern, check_pattern

HOLDOUT_SAMPLES = 8
"""Generated held-back inputs when no calibration file gives them."""
HOLDOUT_SEED = 104729
"""Offset of the generated held-back inputs' seed from the run's (calibration batches use
seed + 7919 + sample index): the two never share a sample."""


def with_values(model: onnx.ModelProto, values: dict[str, np.ndarray],
                spill: external.Spill | None = None) -> onnx.ModelProto:
    """A copy of `model` whose initializers (or Constant nodes' values) named in `values`
    hold those: the same graph, names and tensor order; large values go to `spill`."""
    out = external.shell(model)
    for t in model.graph.initializer:
        if t.name in values:
            new = out.graph.initializer.add()
            new.name = t.name
            store(new, values[t.name], spill)
        else:
            out.graph.initializer.append(t)
    for node in out.graph.node:
        if node.op_type == "Constant" and node.output[0] in values:
            a = next(a for a in node.attribute if a.name == "value")
            a.t.CopyFrom(numpy_helper.from_array(values[node.output[0]], a.t.name or None))
    return out


def verify(out: onnx.ModelProto, layers: list[Layer], pattern: Pattern, fraction: float,
           errors: dict[str, float]) -> list[dict]:
    """Each layer's weight as the written model computes it, checked for the pattern: its
    report row (zeros, sparsity). ValidationError naming the first that lacks it."""
    graph = Graph(out, infer=False)
    rows = []
    for layer in layers:
        w = np.asarray(graph.const(layer.weight))
        why = check_pattern(w, pattern, fraction, row_axis=layer.row_axis,
                            k_axis=layer.k_axis)
        if why:
            raise ValidationError(f"sparsified weight of {layer.name} lacks the {pattern.name} "
                                  f"pattern: {why}")
        zeros = int(w.size - np.count_nonzero(w))
        row = {**layer.describe(), "size": int(w.size), "zeros": zeros,
               "sparsity": round(zeros / max(w.size, 1), 6)}
        if layer.name in errors:
            row["error"] = errors[layer.name]
        rows.append(row)
    return rows


def totals(rows: list[dict], params: int) -> dict:
    """The report's totals over the sparsified layers' rows, and the whole model."""
    size, zeros = sum(r["size"] for r in rows), sum(r["zeros"] for r in rows)
    return {"layers": len(rows), "weights": size, "zeros": zeros,
            "sparsity": round(zeros / size, 6) if size else 0.0, "params": params,
            "model_sparsity": round(zeros / params, 6) if params else 0.0}


# -- fidelity on held-back samples ------------------------------------------------------------
def holdout(model: onnx.ModelProto, opts: Options,
            back: Calibration | None) -> tuple[Calibration, dict]:
    """The held-back inputs: the last `holdout` share of the calibration samples (which no
    statistic was taken from), or generated inputs (seeds no calibration batch uses) when
    there is no calibration file or too few samples to hold any back."""
    if back is not None and back.given is not None:
        return back, {"source": f"calibration samples {back.offset}.."
                                f"{back.offset + back.samples - 1}", "samples": back.samples}
    held = Calibration(model, None, samples=HOLDOUT_SAMPLES, seed=opts.seed + HOLDOUT_SEED,
                       sizes=opts.input_sizes)
    why = "generated" if opts.calib is None else "generated (too few calibration samples)"
    return held, {"source": why, "samples": held.samples}


def heldout_fidelity(model: onnx.ModelProto, sparse: onnx.ModelProto,
                     held: Calibration) -> dict[str, dict[str, float]]:
    """Per float output over the held-back batches: `rel_l2`, ‖sparse − original‖ /
    ‖original‖ over all of them; `cosine`, the mean over samples of the cosine between a
    sample's flattened outputs; `top1` (a last axis of at least two entries: class scores,
    token logits), the share of positions where both pick the same entry. The sparse model
    must give the original's output shapes, and finite values where it does."""
    ref = validation.session(model, optimize=True)
    cand = validation.session(sparse, optimize=True)
    names = [o.name for o in ref.get_outputs()]
    sums = {n: np.zeros(6) for n in names}  # |a-b|², |a|², Σcos, samples, agree, positions
    for feeds in held.batches():
        batch = len(next(iter(feeds.values())))
        for name, a, b in zip(names, *validation.run_pair(ref, cand, feeds), strict=True):
            if np.shape(a) != np.shape(b):
                raise ValidationError(f"sparsified model's output '{name}' has shape "
                                      f"{list(np.shape(b))}, the original's {list(np.shape(a))}")
            if np.asarray(a).dtype.kind != "f":
                continue
            a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
            if not np.isfinite(b64[np.isfinite(a64)]).all():
                raise ValidationError(f"sparsified model's output '{name}' is not finite where "
                                      "the original's is")
            sums[name] += _fidelity_sums(a64, b64, batch)
    out = {}
    for name in names:
        d2, a2, cos, samples, agree, positions = sums[name]
        if samples:
            out[name] = {"rel_l2": float(np.sqrt(d2 / a2)) if a2 else float(np.sqrt(d2)),
                         "cosine": float(cos / samples)}
            if positions:
                out[name]["top1"] = float(agree / positions)
    return out


def _fidelity_sums(a: np.ndarray, b: np.ndarray, batch: int) -> np.ndarray:
    rows = batch if a.ndim and a.shape[0] == batch else 1
    x, y = a.reshape(rows, -1), b.reshape(rows, -1)
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    same = (np.abs(x - y).max(axis=1) == 0).astype(float)
    cos = np.where(norms > 0, np.sum(x * y, axis=1) / np.where(norms > 0, norms, 1.0), same)
    top = a.ndim >= 2 and a.shape[-1] >= 2
    return np.array([np.sum((a - b) ** 2), np.sum(a * a), np.sum(cos), rows,
                     np.sum(np.argmax(a, -1) == np.argmax(b, -1)) if top else 0,
                     np.prod(a.shape[:-1]) if top else 0], dtype=np.float64)
