"""Helpers shared by the benchmarks in bench/ (timing, models, tables, digits CNN).

Nothing here asserts anything; the benches print numbers. Import it from a bench script with

    sys.path.insert(0, str(Path(__file__).resolve().parent)); import common

Contents:
- memory: `status_kib` (a field of /proc/self/status: VmHWM, VmRSS, RssAnon);
- timing: `interleaved_medians` (several callables timed in rotation, so that a noisy
  machine's slow phases hit all of them alike);
- models: `export_cached` (an ONNX export of a registered model, cached across runs and keyed
  by the models/ sources), `ort_session`, `count_float_params`, `count_macs`;
- `masked_equivalent`: the "masked original" of any structured pruning, found by matching the
  pruned weights' values back to the original's (used to check peers' outputs);
- `table`: a GitHub-markdown table.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FLOAT_ONNX_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


# -- memory -----------------------------------------------------------------------------------
def status_kib(field: str) -> int | None:
    """A field of this process's /proc/self/status in KiB (VmHWM: peak RSS, RssAnon: memory
    it owns); None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# -- timing -----------------------------------------------------------------------------------
def interleaved_medians(fns: Mapping[str, Callable[[], Any]], runs: int = 20,
                        warmup: int = 3) -> dict[str, dict[str, float]]:
    """Time several callables in rotation: round k runs each once, starting at a different one.

    Returns {name: {"median": s, "min": s, "iqr": s}}. Interleaving spreads the machine's slow
    and fast phases over all candidates, so their ratio is steadier than back-to-back blocks.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for k in range(runs):
        order = names[k % len(names):] + names[:k % len(names)]
        for n in order:
            t = time.perf_counter()
            fns[n]()
            samples[n].append(time.perf_counter() - t)
    out = {}
    for n, s in samples.items():
        q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0]] * 3
        out[n] = {"median": statistics.median(s), "min": min(s), "iqr": q[2] - q[0]}
    return out


# -- models, ONNX and onnxruntime ---------------------------------------------------------------
def machine() -> str:
    """One line about the machine, for the top of a bench's output."""
    try:
        import onnxruntime as ort
        ort_v = ort.__version__
    except ImportError:  # pragma: no cover
        ort_v = "-"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"onnxruntime {ort_v}")


def versions() -> dict:
    """Versions of what the transformer benches run on, for their JSON."""
    import onnx
    import onnxruntime
    import torch
    import transformers

    import graphprune

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "graphprune": graphprune.__version__,
            "cpus": os.cpu_count()}


def _models_digest() -> str:
    h = hashlib.sha1()
    for p in sorted((ROOT / "models").rglob("*.py")):
        h.update(p.relative_to(ROOT).as_posix().encode())
        h.update(p.read_bytes())
    import torch

    h.update(torch.__version__.encode())
    return h.hexdigest()[:12]


def cache_dir() -> Path:
    """Where exported models are cached: $GRAPHPRUNE_BENCH_CACHE or ~/.cache/graphprune-bench."""
    base = os.environ.get("GRAPHPRUNE_BENCH_CACHE") or Path.home() / ".cache" / "graphprune-bench"
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def export_cached(name: str, exporter: str = "torchscript", *,
                  input_shape: Sequence[int] | None = None,
                  build: Callable[[], Any] | None = None,
                  inputs: Sequence[Any] | None = None,
                  example: Sequence[Any] | None = None,
                  tag: str = "") -> Path:
    """Export registered model `name` (or `build()` with `example`/`inputs`) once, then reuse.

    `input_shape` re-exports a single-input CNN at another example shape (the batch axis stays
    dynamic; the spatial size of the trace is what the file then expects). The cache key holds
    a digest of models/*.py and the torch version, so edits to the models re-export.
    """
    from models import get
    from models.export import export_onnx

    shape_tag = "x".join(map(str, input_shape)) if input_shape else "default"
    key = f"{name}{tag}-{exporter}-{shape_tag}-{_models_digest()}.onnx"
    path = cache_dir() / key
    if path.exists():
        return path
    tmp = path.with_suffix(f".tmp{os.getpid()}.onnx")
    if build is not None:
        model = build()
        export_onnx(model, tuple(example), tmp, exporter=exporter, inputs=inputs)
    else:
        import torch

        spec = get(name)
        model = spec.build()
        if input_shape is not None:
            gen = torch.Generator().manual_seed(0)
            ex: tuple = (torch.randn(tuple(input_shape), generator=gen),)
            specs = None
        else:
            ex = spec.example_inputs(seed=0)
            specs = spec.inputs_for(exporter)
        export_onnx(model, ex, tmp, exporter=exporter, inputs=specs)
    os.replace(tmp, path)
    return path


def ort_session(model: Any, threads: int = 1, optimize: bool = True):
    """An onnxruntime CPU session (path, bytes or ModelProto), `threads` intra-op threads,
    one inter-op thread, graph optimisations all enabled (or disabled with optimize=False)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.log_severity_level = 3
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def count_float_params(model: Any) -> int:
    """Elements of the floating-point initializers of an ONNX model (the weights)."""
    return sum(math.prod(t.dims) for t in model.graph.initializer
               if t.data_type in FLOAT_ONNX_TYPES)


def count_macs(model: Any, feeds: Mapping[str, np.ndarray]) -> int:
    """Conv/Gemm/MatMul multiply-accumulates at the shapes of `feeds` (graphprune.metrics)."""
    from graphprune.metrics import count_macs as _count

    return _count(model, dict(feeds))


# -- the masked original of a structured pruning ------------------------------------------------
class MaskError(ValueError):
    """The pruned weights could not be matched back to the original's positions."""


def _match_positions(orig: np.ndarray, pruned: np.ndarray) -> tuple[tuple, tuple]:
    """For each pruned element, the coordinates of an original element of equal value."""
    flat = orig.ravel()
    order = np.argsort(flat, kind="stable")
    srt = flat[order]
    p = pruned.ravel()
    pos = np.clip(np.searchsorted(srt, p), 0, len(srt) - 1)
    if not np.array_equal(srt[pos], p):
        raise MaskError("some pruned values do not occur in the original tensor")
    return (np.unravel_index(order[pos], orig.shape),
            np.unravel_index(np.arange(p.size), pruned.shape))


def _vote(coords: tuple, pcoords: tuple, ax: int, n_orig: int, n_pruned: int) -> np.ndarray:
    """Original index along `ax` for each pruned index: the one most of its elements match
    (a few equal values elsewhere in the tensor do not change the majority)."""
    if n_orig == n_pruned:
        return np.arange(n_orig)
    counts = np.zeros((n_pruned, n_orig), dtype=np.int64)
    np.add.at(counts, (pcoords[ax], coords[ax]), 1)
    idx = counts.argmax(axis=1)
    if np.any(np.diff(idx) <= 0):
        raise MaskError(f"kept positions along axis {ax} are not a strictly increasing subset "
                        "(duplicate weight values: removed positions are ambiguous)")
    return idx


def _keep_mask(orig: np.ndarray, pruned: np.ndarray) -> np.ndarray:
    """Boolean mask over `orig`: the elements that structured pruning kept in `pruned`.

    Structured pruning only drops index positions, so every pruned element is an original
    element; float weights are nearly all distinct, so values point back at positions. The
    kept set is first tried as a product of per-axis subsets; where it is not one (a grouped
    conv whose groups keep different input channels), the leading axis is matched and each
    kept slice is matched on its own."""
    if orig.shape == pruned.shape:
        if not np.array_equal(orig, pruned):
            raise MaskError("values changed without a change of shape")
        return np.ones(orig.shape, dtype=bool)
    coords, pcoords = _match_positions(orig, pruned)
    try:
        kept = [_vote(coords, pcoords, ax, no, npr)
                for ax, (no, npr) in enumerate(zip(orig.shape, pruned.shape, strict=True))]
        if np.array_equal(orig[np.ix_(*kept)], pruned):
            mask = np.zeros(orig.shape, dtype=bool)
            mask[np.ix_(*kept)] = True
            return mask
        why = "kept positions are not a product of per-axis subsets"
    except MaskError as exc:
        why = str(exc)
    if orig.ndim < 2:
        raise MaskError(why)
    rows = _vote(coords, pcoords, 0, orig.shape[0], pruned.shape[0])
    mask = np.zeros(orig.shape, dtype=bool)
    for k, r in enumerate(rows):
        mask[r] = _keep_mask(orig[r], pruned[k])
    return mask


def masked_equivalent(orig: Mapping[str, np.ndarray],
                      pruned: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """The original weights with every removed position zeroed, for each tensor that shrank.

    `orig` and `pruned` map names to float arrays (an ONNX model's initializers, or a torch
    state dict). Every tensor present in both with the same rank but smaller dims gets the
    positions that pruning dropped set to zero; tensors that did not shrink are left as they
    are. For a correct structured pruning, the original graph with these weights computes what
    the pruned graph computes: a removed unit's contribution reaches the rest of the graph
    only through the consumer slices, which are zeroed. Returns (masked arrays, number of
    tensors masked). Raises MaskError when the values cannot be matched back (the pruner
    changed values rather than only dropping positions, or equal values make it ambiguous).
    """
    out: dict[str, np.ndarray] = {}
    masked = 0
    for name, a in orig.items():
        b = pruned.get(name)
        if b is None or b.shape == a.shape or b.ndim != a.ndim:
            continue
        if any(nb > na for na, nb in zip(a.shape, b.shape, strict=True)):
            raise MaskError(f"{name}: pruned shape {b.shape} larger than {a.shape}")
        try:
            keep = _keep_mask(a, b)
        except MaskError as exc:
            raise MaskError(f"{name}: {exc}") from None
        if int(keep.sum()) != b.size:
            raise MaskError(f"{name}: matched {int(keep.sum())} elements for {b.size}")
        out[name] = np.where(keep, a, 0).astype(a.dtype)
        masked += 1
    return out, masked


def onnx_weights(model: Any) -> dict[str, np.ndarray]:
    """Float initializers of an ONNX model as numpy arrays."""
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
            if t.data_type in FLOAT_ONNX_TYPES}


def with_weights(model: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """A copy of an ONNX model with some initializers replaced."""
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in arrays:
            t.CopyFrom(numpy_helper.from_array(arrays[t.name].astype(numpy_helper.to_array(t)
                                                                      .dtype), t.name))
    return out


def max_rel_err(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Largest |a-b| over outputs, relative to each output's max |a| (0 for equal)."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.shape != y.shape:
            return math.inf
        scale = max(float(np.abs(x).max()) if x.size else 0.0, 1e-12)
        worst = max(worst, float(np.abs(x - y).max()) / scale if x.size else 0.0)
    return worst


# -- output ---------------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table (numbers right-aligned)."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    body = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h)
              for i, h in enumerate(headers)]
    num = [all(_numeric(r[i]) for r in body) and bool(body) for i in range(len(headers))]

    def line(vals: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if n else v.ljust(w)
                                 for v, w, n in zip(vals, widths, num, strict=True)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if n else ("-" * (w + 2))
                         for w, n in zip(widths, num, strict=True)) + "|"
    return "\n".join([line(list(headers)), sep, *(line(r) for r in body)])


def _numeric(s: str) -> bool:
    try:
        float(s.rstrip("x%"))
        return True
    except ValueError:
        return s in ("-", "n/a")
