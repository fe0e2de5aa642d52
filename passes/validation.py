"""Validation pass: prove the rewrite against the masked original in onnxruntime.

For exact units, the pruned model must equal the original with every removed unit's sink
weight slices set to zero. Both run with graph optimisations disabled on the same seeded
inputs; they must agree within rtol 1e-4 and atol 1e-5 × the output's scale. With dynamic
axes the check runs again at a second batch size. Any indexing mistake of the rewrite shows
up here, on every run, on graphs nobody here wrote.

Some outputs amplify float32 rounding past that static tolerance: onnxruntime's Sigmoid is
accurate to ~1e-7 absolute, so a map near zero (scale 1e-4) moves in steps of 2^-23 when its
logits move by one ulp. When an output fails the static tolerance, the check measures the
float noise of the masked original itself on the same inputs (`passes/noise.py`: the same
computation evaluated in other, exactly equivalent ways) and allows NOISE_MULTIPLE times
that noise floor, never more than NOISE_CAP of the output's scale (or NOISE_CAP_ULPS units
in the last place of 1.0). Every run records its verdict and the figures behind it.

Nothing here serialises the weights: `split` turns a model into a weight-free graph plus its
large weights as arrays (read from the tensors' own bytes); the checker reads the graph and
onnxruntime shares the arrays, so validation costs no longer grow with the model's size,
and models past protobuf's 2 GB limit need no temporary copy of their weights.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from graphprune.errors import ValidationError, one_line
from graphprune.io import DATA_FIELDS, TWO_GB, copy_fields, save_atomic
from graphprune.ir import (
    approx_bytes,
    external_array,
    external_path,
    external_range,
    value_dims,
)

RTOL = 1e-4
ATOL = 1e-5
NOISE_MULTIPLE = 4.0
"""The candidate may differ from the masked original by this many times the reference's own
noise floor. Both differences are re-roundings of the same sums (the pruned model's
contractions are shorter and group their partial sums differently; the noise sources regroup
them or swap kernels), so they are of the same size: the difference of two such evaluations
is at most the sum of their errors, 2x, and the noise floor is one sample of it, so twice
that again (measured ratios: bench/bench_noise_floor.py, README)."""
NOISE_CAP = 1e-3
"""The noise allowance never exceeds this fraction of the output's scale (10x RTOL). A wrong
rewrite (one unit's weights in the wrong place) moves an output by about that unit's share
of it, ~1/sqrt(width): above 1e-3 for any layer under a million units wide."""
NOISE_CAP_ULPS = 8
"""...nor this many units in the last place of 1.0 (9.5e-7 in float32), whichever is more:
onnxruntime's activation kernels (Sigmoid, Tanh, Erf, the Exp of Softmax) are accurate to ~1
ulp of 1.0 absolute, not relative, so an output near zero cannot be compared more finely
than a few of those units whatever its scale (2 units for two evaluations, times
NOISE_MULTIPLE)."""

_NP_TYPES = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32, onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.BOOL: np.bool_,
}


@dataclass
class OutputDiff:
    name: str
    max_abs_err: float
    scale: float
    passed: bool
    static: bool = True
    """Within the static tolerance (rtol, atol × scale) alone."""
    noise_floor: float | None = None
    """The reference's own float noise on these inputs, when it was measured."""
    allowed: float | None = None
    """The absolute difference the noise floor allows (NOISE_MULTIPLE × it, capped)."""

    @property
    def verdict(self) -> str:
        return "static" if self.static else "noise floor" if self.passed else "failed"


@dataclass
class CheckResult:
    passed: bool
    max_abs_err: float
    runs: list[dict] = field(default_factory=list)
    noise_errors: dict[str, str] = field(default_factory=dict)
    """Noise sources that could not be evaluated: label -> first line of the error."""
    uninformative: dict[str, str] = field(default_factory=dict)
    """Outputs whose reference values prove nothing (see `uninformative`): name -> why."""
    vacuous: list[dict] = field(default_factory=list)
    """What was compared instead of uninformative outputs (passes/witness.py): {output, why,
    compared}."""
    unproven: str | None = None
    """Why the check proves nothing although no comparison failed (then `passed` is False)."""
    inputs: dict = field(default_factory=dict)
    """Where the check's inputs came from (passes/inputs.py CheckInputs.describe)."""

    def to_dict(self) -> dict:
        out = {"passed": self.passed, "max_abs_err": self.max_abs_err, "runs": self.runs,
               "tolerance": {"rtol": RTOL, "atol": ATOL, "noise_multiple": NOISE_MULTIPLE,
                             "noise_cap": NOISE_CAP, "noise_cap_ulps": NOISE_CAP_ULPS}}
        if self.noise_errors:
            out["noise_errors"] = dict(self.noise_errors)
        if self.inputs:
            out["inputs"] = self.inputs
        if self.vacuous:
            out["vacuous"] = list(self.vacuous)
        if self.unproven:
            out["unproven"] = self.unproven
        return out

    def failure(self) -> str:
        """One line on the worst failing run: what differs, by how much, and what was allowed
        (the static tolerance, and the noise floor when it was measured); or why nothing
        was proven."""
        failed = [r for r in self.runs if not r["passed"]]
        if not failed:
            return self.unproven or "no comparison failed"
        bad = max(failed, key=lambda r: r["max_abs_err"])
        what = (f"tensor '{bad['output']}' (compared for output '{bad['for']}')"
                if bad.get("for") else f"output '{bad['output']}'")
        text = (f"{what} at batch {bad['batch']} differs from the masked "
                f"original by {bad['max_abs_err']:.3e} (output scale {bad['scale']:.3e}; "
                f"static tolerance {ATOL:g}×scale + {RTOL:g}×|value|")
        if bad.get("noise_floor") is not None:
            text += (f"; float noise of the masked original on the same inputs "
                     f"{bad['noise_floor']:.3e} ({bad['noise_by'] or 'every evaluation agreed'}), "
                     f"allowing {bad['allowed']:.3e}")
        elif self.noise_errors:
            text += "; its float noise could not be measured: " + "; ".join(
                f"{k}: {v}" for k, v in self.noise_errors.items())
        return text + ")"


Serialized = bytes
"""A model as protobuf bytes (for callers that want one buffer; validation avoids it)."""


def serialize(model: onnx.ModelProto) -> Serialized | None:
    """Bytes for models under protobuf's 2 GB limit, None above it or when weights are served
    from mapped external data (use `session`'s split then)."""
    if approx_bytes(model) >= TWO_GB or any(external_path(t) is not None
                                            for t in model.graph.initializer):
        return None
    return model.SerializeToString()


SPLIT_MIN_BYTES = 1 << 16
"""Initializers of at least this many bytes leave the weight-free copy (shape-like int tensors
are far smaller, so the checker's shape inference sees the same constants)."""
WEIGHTS_FILE = "graphprune-weights.bin"
"""The external-data location the weight-free copy names (an empty file: nothing reads it)."""
_SPLIT_TYPES = {
    onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
}


@dataclass
class Split:
    """A model as a weight-free graph plus its large weights as arrays.

    The graph keeps every field of the model; each large initializer keeps its name, type
    and dims but refers to external data, and its value (read from the same raw bytes the
    file would hold) is in `weights`. Sessions take the arrays as shared initializers and
    the checker reads the graph, so no one serialises hundreds of MB of weights: the cost
    of validation no longer grows with the model's bytes."""

    graph: onnx.ModelProto
    weights: dict[str, np.ndarray]

    @property
    def graph_bytes(self) -> int:
        return self.graph.ByteSize()


def split(model: onnx.ModelProto, overrides: dict[str, np.ndarray] | None = None, *,
          known: dict[str, np.ndarray] | None = None) -> Split:
    """`model` as a Split; `overrides` (by initializer name) replace weights' values; `known`
    holds values already read from these same tensors (numpy_helper.to_array's arrays: the
    analysis's constants of an unmodified model), reused instead of read again.

    A tensor leaves the graph only when its bytes are exactly what its type and dims say, in
    raw_data alone, of a plain numeric type: anything else stays inline, so onnxruntime and
    the checker judge it from the model's own bytes, as they would the whole file. Overridden
    initializers always leave (their value comes from the override), unless their type is
    not a plain numeric one (then `session` swaps them in with add_initializer). Memory-mapped
    tensors (`io.attach_external_data`) always leave, except small ones of other types than
    the above (shape-like integers), which are inlined: nothing in the copy refers to a data
    file."""
    overrides = overrides or {}
    out = onnx.ModelProto()
    copy_fields(model, out, skip={"graph"})
    copy_fields(model.graph, out.graph, skip={"initializer"})
    weights: dict[str, np.ndarray] = {}
    little = sys.byteorder == "little"
    for t in model.graph.initializer:
        dtype = _SPLIT_TYPES.get(t.data_type)
        mapped = little and external_path(t) is not None
        value = None
        if t.name in overrides and (dtype is not None or mapped):
            value = np.ascontiguousarray(overrides[t.name])
        elif mapped:
            value = external_array(t)  # memory-mapped: onnxruntime reads the file's pages
            if dtype is None and value.nbytes < SPLIT_MIN_BYTES:
                # a shape-like integer constant (torch's dynamo export puts them in the data
                # file too): inline, as in a self-contained model, so the checker sees it
                ref = out.graph.initializer.add()
                copy_fields(t, ref, skip=DATA_FIELDS)
                ref.raw_data = value.tobytes()
                continue
        elif (dtype is not None and little and t.data_location != onnx.TensorProto.EXTERNAL
              and math.prod(t.dims) * np.dtype(dtype).itemsize >= SPLIT_MIN_BYTES
              and t.HasField("raw_data") and not _typed_data(t)):
            cached = (known or {}).get(t.name)
            if (cached is not None and cached.dtype == dtype and cached.shape == tuple(t.dims)
                    and cached.flags.c_contiguous):
                value = cached
            else:
                raw = t.raw_data
                if len(raw) == math.prod(t.dims) * np.dtype(dtype).itemsize:
                    value = np.frombuffer(raw, dtype=dtype).reshape(tuple(t.dims))
        if value is None:
            out.graph.initializer.append(t)
            continue
        ref = out.graph.initializer.add()
        copy_fields(t, ref, skip=DATA_FIELDS)
        ref.data_location = onnx.TensorProto.EXTERNAL
        ref.external_data.add(key="location", value=WEIGHTS_FILE)
        weights[t.name] = value
    return Split(out, weights)


def _typed_data(t: onnx.TensorProto) -> bool:
    return bool(len(t.float_data) or len(t.int32_data) or len(t.int64_data)
                or len(t.double_data) or len(t.uint64_data) or len(t.string_data))


def session(model: onnx.ModelProto, data: Serialized | None = None,
            overrides: dict[str, np.ndarray] | None = None, *,
            parts: Split | None = None, threads: int = 0,
            optimize: bool = False, read_files: bool = False) -> ort.InferenceSession:
    """An onnxruntime session with graph optimisations off (we test our graph, not ORT's).

    Built from `data` when given, else from the weight-free graph of `split` (or `parts`,
    when the caller has it), whose split weights onnxruntime takes as the arrays themselves
    (add_initializer: shared, not copied). `overrides` replace initializers by name (the
    masked original swaps in only the masked weights). `threads` sets onnxruntime's
    intra-op threads (0: its default, one per core). `optimize`: onnxruntime's defaults
    (optimisations, prepacking) for sessions that measure rather than prove.

    onnxruntime's graph optimiser reads initializers from the model, never from
    add_initializer's arrays, so optimised sessions (and `read_files` ones: the input
    diagnosis, which asks whether onnxruntime itself runs the model) get their weights as
    onnxruntime would from the files: see `_reading_session`."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        # weight prepacking only speeds up many runs; for our few runs it costs seconds and a
        # copy of every MatMul weight when the session is built (both sides use the same kernels)
        opts.add_session_config_entry("session.disable_prepacking", "1")
    opts.log_severity_level = 4  # failures come back as exceptions; no log lines on stderr
    if optimize or read_files:
        return _reading_session(model, data, overrides, parts, opts)
    if data is None and parts is None:
        parts = split(model, overrides)
    values = dict(overrides or {})
    if parts is not None:
        values.update(parts.weights)
    keep = []
    for name, value in values.items():
        v = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value))
        keep.append(v)
        opts.add_initializer(name, v)
    providers = ["CPUExecutionProvider"]
    if data is not None:
        sess = ort.InferenceSession(data, opts, providers=providers, enable_fallback=0)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = _write_graph(parts, tmp)
            sess = ort.InferenceSession(path, opts, providers=providers, enable_fallback=0)
    sess._graphprune_keep = keep  # the arrays must outlive the session
    return sess


FOLDER_KEY = "session.model_external_initializers_file_folder_path"
"""onnxruntime's option: where a model built from bytes finds its external data files."""
READS_FOLDER = tuple(int(x) for x in ort.__version__.split(".")[:2] if x.isdigit()) >= (1, 21)
"""Whether this onnxruntime honours FOLDER_KEY (added in 1.21); older ones get every mapped
weight as an array (add_external_initializers: a copy, which they would make anyway)."""


def _reading_session(model: onnx.ModelProto, data: Serialized | None,
                     overrides: dict[str, np.ndarray] | None, parts: Split | None,
                     opts: ort.SessionOptions) -> ort.InferenceSession:
    """A session in which onnxruntime holds every weight itself, as when it loads a file.

    A self-contained model under 2 GB is handed over as its bytes. Otherwise the graph is
    `located`: memory-mapped tensors refer to the data file they lie in (their own offset
    and length, read by onnxruntime as from the original model: no copy of ours), and the
    other split weights (overrides, weights of a model past protobuf's limit) are handed
    over with add_external_initializers, which puts them into the graph before the optimiser
    runs (onnxruntime copies them, as it copies what it reads). The weight-free graph goes
    over as bytes (its small constants stay far below protobuf's limit)."""
    providers = ["CPUExecutionProvider"]
    if data is None and parts is None and not overrides:
        data = serialize(model)
    if data is not None and not overrides:
        return ort.InferenceSession(data, opts, providers=providers, enable_fallback=0)
    graph, folder, arrays = located(parts or split(model, overrides), model, overrides)
    if folder is not None:
        opts.add_session_config_entry(FOLDER_KEY, folder)
    if arrays:
        values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v))
                  for v in arrays.values()]
        opts.add_external_initializers(list(arrays), values)
    return ort.InferenceSession(graph.SerializeToString(), opts, providers=providers,
                                enable_fallback=0)


def located(parts: Split, model: onnx.ModelProto,
            overrides: dict[str, np.ndarray] | None = None,
            ) -> tuple[onnx.ModelProto, str | None, dict[str, np.ndarray]]:
    """`parts`' graph with the weights `model` maps from external data (not overridden)
    referring to their data file again, by its real path, for onnxruntime to read.

    Returns (graph, folder, arrays): the files named lie in `folder` (the folder holding
    most of the mapped bytes, when the model maps from several: onnxruntime reads data files
    from one folder), and `arrays` are the split weights that stay arrays (overrides, weights
    from inline bytes, mapped ones whose file lies elsewhere; all of them where onnxruntime
    cannot be told the folder, see READS_FOLDER)."""
    overrides = overrides or {}
    sources = {t.name: t for t in model.graph.initializer
               if READS_FOLDER and t.name in parts.weights and t.name not in overrides
               and external_path(t) is not None}
    real = {name: os.path.realpath(external_path(t)) for name, t in sources.items()}
    weight: dict[str, int] = {}
    for name, path in real.items():
        folder = os.path.dirname(path)
        weight[folder] = weight.get(folder, 0) + external_range(sources[name])[2]
    folder = max(sorted(weight), key=weight.__getitem__) if weight else None
    graph = onnx.ModelProto()
    graph.CopyFrom(parts.graph)  # weight-free: a cheap copy; `parts` may serve others
    arrays: dict[str, np.ndarray] = {}
    for ref in graph.graph.initializer:
        if ref.name not in parts.weights:
            continue
        path = real.get(ref.name)
        if path is None or os.path.dirname(path) != folder:
            arrays[ref.name] = parts.weights[ref.name]
            continue
        _, offset, length = external_range(sources[ref.name])
        del ref.external_data[:]
        for key, value in (("location", os.path.basename(path)), ("offset", offset),
                           ("length", length)):
            ref.external_data.add(key=key, value=str(value))
    return graph, folder, arrays


def _write_graph(parts: Split, folder: str) -> str:
    """Write the weight-free graph into `folder` (with its own data file, should its inline
    tensors pass protobuf's 2 GB limit), beside an empty file at the location its split
    tensors name: their values come from elsewhere, but the checker and onnxruntime want
    the location to exist. Returns the model's path."""
    path = os.path.join(folder, "m.onnx")
    if parts.weights:
        open(os.path.join(folder, WEIGHTS_FILE), "wb").close()
    if parts.graph_bytes < TWO_GB:
        with open(path, "wb") as f:
            f.write(parts.graph.SerializeToString())
    else:
        save_atomic(parts.graph, path, external=True)  # onnx.save would modify the graph
    return path


def input_specs(model: onnx.ModelProto) -> list[tuple[str, int, list]]:
    """(name, element type, dims) of every graph input that is no initializer; a dim is an
    int (static), its dim_param (dynamic, named) or None (dynamic, unnamed). A declared size
    below 1 is dynamic: paddle2onnx writes `dim_value: -1` for its dynamic axes, and no
    input of size 0 or less can be fed."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        specs.append((vi.name, vi.type.tensor_type.elem_type, value_dims(vi) or []))
    return specs


def has_dynamic_axes(model: onnx.ModelProto) -> bool:
    return any(not isinstance(d, int) for _, _, dims in input_specs(model) for d in dims)


DYNAMIC_SIZES = (8, 13)
"""Sizes for dynamic non-batch axes (sequence length…) in the first and second check run:
small enough for models with few positions, different so a size baked in by mistake shows."""


def default_shapes(model: onnx.ModelProto, batch: int = 1,
                   sizes: dict[str, list[int]] | None = None,
                   variant: int = 0) -> dict[str, tuple[int, ...]]:
    """Every input's shape: the batch dim (the symbol most inputs lead with) takes `batch`,
    other dynamic axes 8 (13 in the second run); `sizes` fixes an input's shape (its batch
    dim still follows `batch`). passes/inputs.py finds shapes a model accepts when these
    are not."""
    specs = input_specs(model)
    batch_dim = batch_symbol(specs)
    other = DYNAMIC_SIZES[variant % len(DYNAMIC_SIZES)]
    shapes = {}
    for name, _, dims in specs:
        if sizes and name in sizes:
            shape = list(sizes[name])
            if batch > 1:  # the second run changes the batch axis, where there is one
                shape = [batch if k < len(dims) and not isinstance(dims[k], int)
                         and is_batch(dims[k], k, batch_dim) else n for k, n in enumerate(shape)]
        else:
            shape = [d if isinstance(d, int) else (batch if is_batch(d, k, batch_dim) else other)
                     for k, d in enumerate(dims)]
        shapes[name] = tuple(shape)
    return shapes


def make_inputs(model: onnx.ModelProto, batch: int = 1, seed: int = 0,
                sizes: dict[str, list[int]] | None = None,
                variant: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of `default_shapes` (see `generate`)."""
    return generate(model, default_shapes(model, batch, sizes, variant), seed)


def generate(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]],
             seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of the given shapes, drawn in input order from one generator: floats
    standard normal, booleans fair coins; integer inputs that index an embedding table are
    drawn from its rows, other integer inputs (masks, flags) from {0, 1}."""
    rng = np.random.default_rng(seed)
    bounds = _index_bounds(model)
    feeds = {}
    for name, elem, _ in input_specs(model):
        shape = shapes[name]
        dtype = _NP_TYPES.get(elem)
        if dtype is None:
            raise ValidationError(f"input '{name}' has an element type we cannot generate "
                                  f"({onnx.TensorProto.DataType.Name(elem)}): give its values "
                                  "with --inputs")
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            feeds[name] = rng.random(shape) < 0.5
        else:
            feeds[name] = rng.integers(0, bounds.get(name, 2), size=shape).astype(dtype)
    return feeds


def is_batch(dim: object, axis: int, batch_dim: object) -> bool:
    """Whether a dynamic dim follows the batch size: the batch symbol's dims; of unnamed
    dynamic dims, the leading one."""
    return dim == batch_dim if dim is not None and batch_dim is not None else axis == 0


def batch_symbol(specs: list[tuple[str, int, list]]) -> object:
    """The dynamic dim most inputs lead with (a [S, 64] RoPE table's S is not the batch).

    Ties go to the earliest input's (max keeps the first maximum of the list, which is in
    input order): exporters put the primary input first (input_ids, pixel_values), and its
    leading axis is the batch. Never a set's order, which changes with PYTHONHASHSEED: torch's
    dynamo export of HF BERT names `input_ids[s72, s53]`, `attention_mask[s43, s53]`, and
    taking the mask's s43 gives ids of batch 8, on which the model's GatherND fails."""
    leads = [dims[0] for _, _, dims in specs if dims and not isinstance(dims[0], int)]
    if not leads:
        return object()  # matches nothing
    names = [d for d in leads if d is not None]
    return max(names, key=names.count) if names else None


def _index_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """Graph inputs used as Gather indices into a constant table: the table's row count."""
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    alias = {i.name: i.name for i in model.graph.input}
    bounds: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in ("Cast", "Identity", "Unsqueeze", "Reshape") and node.input[0] in alias:
            alias[node.output[0]] = alias[node.input[0]]
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] in alias:
            table = inits.get(node.input[0])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            if table:
                src = alias[node.input[1]]
                bounds[src] = min(bounds.get(src, table[axis]), table[axis])
    return bounds


def tolerance(dtype: np.dtype) -> tuple[float, float]:
    """(rtol, atol as a fraction of the output's scale) for outputs of `dtype`.

    RTOL/ATOL for 32-bit floats and wider. A 16-bit float rounds at ~1e-3 relative: the
    pruned and the masked model accumulate in a different order, and one rounding step of
    the result (or of an intermediate) may differ, so allow four units in the last place."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype.itemsize < 4:
        eps = float(np.finfo(dtype).eps)
        return max(RTOL, 4 * eps), max(ATOL, 4 * eps)
    return RTOL, ATOL


def allowance(noise_floor: float, scale: float, dtype: np.dtype = np.float32) -> float:
    """The absolute difference a measured noise floor allows: NOISE_MULTIPLE times it, never
    more than NOISE_CAP × scale or NOISE_CAP_ULPS units in the last place of 1.0 (of
    `dtype`, float32's at least), whichever cap is larger."""
    dtype = np.dtype(dtype)
    eps = max(float(np.finfo(dtype).eps) if dtype.kind == "f" else 0.0,
              float(np.finfo(np.float32).eps))
    return min(NOISE_MULTIPLE * noise_floor, max(NOISE_CAP * scale, NOISE_CAP_ULPS * eps))


def noise_floor(reference: np.ndarray, other: np.ndarray) -> float:
    """The largest difference between two evaluations of the same output, over the positions
    both give finite values (0 when they agree, or share no finite position). One number per
    output, not per position: two evaluations agree by chance at many positions where a third
    (the pruned model) need not, so only the size over the whole output is a stable measure."""
    a, b = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    if a.shape != b.shape:
        return 0.0
    both = np.isfinite(a) & np.isfinite(b)
    return float(np.max(np.abs(a[both] - b[both]))) if both.any() else 0.0


def compare(reference: list[np.ndarray], candidate: list[np.ndarray],
            names: list[str], noise: list[float | None] | None = None) -> list[OutputDiff]:
    """Per output: float outputs equal within tolerance, integer and boolean outputs
    (indices, masks, counts: no rounding to excuse) exactly equal. Non-finite reference
    values must be matched exactly (NaN by NaN, inf by the same inf); the scale is taken over
    finite values.

    `noise` (per output, None where not measured): the reference's noise floor on these
    inputs; a float output that fails the static tolerance passes when every finite
    difference is within `allowance` of it. Without it, or with a floor of 0, the static
    verdict stands."""
    diffs = []
    for k, (name, a, b) in enumerate(zip(names, reference, candidate, strict=True)):
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        floor = noise[k] if noise is not None else None
        if a64.shape != b64.shape:
            diffs.append(OutputDiff(name, float("inf"), 0.0, False, False, floor,
                                    None if floor is None else 0.0))
            continue
        rtol, atol = tolerance(np.asarray(a).dtype)
        finite = np.isfinite(a64)
        scale = float(np.max(np.abs(a64[finite]))) if finite.any() else 0.0
        if np.asarray(a).dtype.kind in "biu":  # indices, masks, counts: no rounding to allow
            same = np.asarray(a) == np.asarray(b)  # in their own type (int64 beyond 2^53)
            err = np.where(same, 0.0, np.maximum(np.abs(a64 - b64), 1.0))
            diffs.append(OutputDiff(name, float(err.max()) if err.size else 0.0, scale,
                                    bool(np.all(same)), bool(np.all(same)), floor, None))
            continue
        same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
        with np.errstate(invalid="ignore"):
            err = np.where(same, 0.0, np.abs(a64 - b64))
        err = np.where(np.isnan(err), np.inf, err)
        bound = atol * max(scale, 1e-30) + rtol * np.abs(a64)
        static = bool(np.all(same | (finite & (err <= bound))))
        ok, allowed = static, None
        if floor is not None:
            allowed = allowance(floor, scale, np.asarray(a).dtype)
            ok = static or bool(np.all(same | (finite & (err <= np.maximum(bound, allowed)))))
        diffs.append(OutputDiff(name, float(err.max()) if err.size else 0.0, scale, ok,
                                static, floor, allowed))
    return diffs


IoChanges = dict[str, dict[int, np.ndarray]]
"""Graph input/output name -> axis -> keep mask (allow_io_change; see rewrite.io_changes)."""


def kept(value: np.ndarray, axes: dict[int, np.ndarray] | None) -> np.ndarray:
    """The kept positions of a shrunk input or output (the value itself when none shrank)."""
    for axis, keep in (axes or {}).items():
        value = np.compress(keep, value, axis=axis)
    return value


def shrink_feeds(feeds: dict[str, np.ndarray], io: IoChanges | None) -> dict[str, np.ndarray]:
    """The original's inputs as the pruned model takes them: shrunk inputs get the slice of
    their kept positions (the values the original reads there)."""
    if not io:
        return feeds
    return {name: np.ascontiguousarray(kept(v, io.get(name))) for name, v in feeds.items()}


Feeds = list[dict[str, np.ndarray]]
"""The check's input sets, one per run (see `check_feeds`)."""


@dataclass(frozen=True)
class Runs:
    """The exact check's input sets, one per run, each with the batch size it runs at (the
    size of its batch axes; 1 where it has none). passes/inputs.py makes them."""

    batches: list[int]
    feeds: Feeds


@dataclass(frozen=True)
class NoiseSource:
    """Another evaluation of the masked original, equal to it in exact arithmetic but rounded
    differently (see passes/noise.py): `evaluate` gives its outputs on each of the check's
    input sets. Evaluated only when some output fails the static tolerance."""

    label: str
    evaluate: Callable[[Feeds], list[list[np.ndarray]]]


def exact_check(reference: ort.InferenceSession | SessionMaker,
                candidate: ort.InferenceSession | SessionMaker,
                model: onnx.ModelProto, *, seed: int = 0,
                sizes: dict[str, list[int]] | None = None,
                io: IoChanges | None = None,
                noise: Sequence[NoiseSource] = (), runs: Runs | None = None) -> CheckResult:
    """Run both sessions on the same inputs: `runs` (passes/inputs.py), else seeded inputs
    of the default shapes (batch 1, and 2 when axes are dynamic; `sizes` fixes shapes).

    `io` (allow_io_change): shrunk inputs are fed their kept positions of the original's
    inputs, and shrunk outputs are compared on their kept positions of the reference (the
    removed positions no longer exist); the tolerances are the same.

    `noise`: when some output fails the static tolerance, these evaluate the reference again
    on the same inputs, and the differences measure its float noise (see `compare`).

    Sessions run side by side. Given functions that make them instead (large models whose
    weights are memory-mapped), the reference is made, run on every input and dropped
    before the candidate is made and run on the same inputs: the same runs and comparisons,
    with one model's weights in memory at a time."""
    names_of = None
    batches, feeds = check_feeds(model, seed, sizes, runs)
    if callable(reference) and callable(candidate):
        ref = reference()
        names_of = [o.name for o in ref.get_outputs()]
        ref_outs = [ref.run(None, f) for f in feeds]
        del ref
        cand = candidate()
        cand_outs = [cand.run(None, shrink_feeds(f, io)) for f in feeds]
        del cand
    else:
        names_of = [o.name for o in reference.get_outputs()]
        ref_outs, cand_outs = [], []
        for f in feeds:
            r, c = run_pair(reference, candidate, f, shrink_feeds(f, io))
            ref_outs.append(r)
            cand_outs.append(c)
    return outcome(batches, names_of, ref_outs, cand_outs, io, feeds, noise)


def check_feeds(model: onnx.ModelProto, seed: int, sizes: dict[str, list[int]] | None,
                runs: Runs | None = None) -> tuple[list[int], Feeds]:
    """The exact check's batch sizes and inputs: those of `runs`, else the default ones
    (batch 1, and 2 when axes are dynamic, seeded)."""
    if runs is not None:
        return list(runs.batches), list(runs.feeds)
    batches = [1, 2] if has_dynamic_axes(model) else [1]
    return batches, [make_inputs(model, batch=b, seed=seed, sizes=sizes, variant=n)
                     for n, b in enumerate(batches)]


def outcome(batches: list[int], names_of: list[str], ref_outs: list[list[np.ndarray]],
             cand_outs: list[list[np.ndarray]], io: IoChanges | None,
             feeds: Feeds | None = None, noise: Sequence[NoiseSource] = ()) -> CheckResult:
    """Compare the reference's and the candidate's outputs of every run: against the static
    tolerance first; when some output fails it, against the reference's noise floor on the
    same inputs (`feeds`), measured by the `noise` sources in turn until every output passes
    or none is left (the floor of each output is the largest difference any source showed)."""
    io = io or {}
    wants = [[kept(v, io.get(name)) for name, v in zip(names_of, ref_out, strict=True)]
             for ref_out in ref_outs]
    diffs = [compare(want, cand_out, names_of)
             for want, cand_out in zip(wants, cand_outs, strict=True)]
    floors: list[list[float]] | None = None
    by: list[list[str | None]] = [[None] * len(names_of) for _ in wants]
    errors: dict[str, str] = {}
    for source in noise if feeds is not None else ():
        if all(d.passed for run in diffs for d in run):
            break
        try:
            alt_outs = source.evaluate(feeds)
        except Exception as exc:  # noqa: BLE001 - an evaluation that fails measures nothing
            errors[source.label] = one_line(exc, 300)
            continue
        if floors is None:
            floors = [[0.0] * len(names_of) for _ in wants]
        for r, (want, alt_out) in enumerate(zip(wants, alt_outs, strict=True)):
            for k, (name, a, b) in enumerate(zip(names_of, want, alt_out, strict=True)):
                f = noise_floor(a, kept(b, io.get(name)))
                if f > floors[r][k]:
                    floors[r][k], by[r][k] = f, source.label
        diffs = [compare(want, cand_out, names_of, floor)
                 for want, cand_out, floor in zip(wants, cand_outs, floors, strict=True)]
    runs, worst, passed = [], 0.0, True
    for b, run, labels in zip(batches, diffs, by, strict=True):
        for d, label in zip(run, labels, strict=True):
            worst = max(worst, d.max_abs_err)
            passed &= d.passed
            entry = {"batch": b, "output": d.name, "max_abs_err": d.max_abs_err,
                     "scale": d.scale, "passed": d.passed, "verdict": d.verdict}
            if d.noise_floor is not None:
                entry.update(noise_floor=d.noise_floor, noise_by=label, allowed=d.allowed)
            runs.append(entry)
    flat = {name: why for k, name in enumerate(names_of)
            if (why := uninformative([want[k] for want in wants]))}
    return CheckResult(passed, worst, runs, errors, flat)


SATURATED = 0.99
"""An output whose every value but under 1% is one value (over at least SATURATED_MIN
positions) is saturated: a wrong rewrite would leave it as it is, too."""
SATURATED_MIN = 100


def uninformative(values: Sequence[np.ndarray]) -> str | None:
    """Why an output's reference values (over every run of the check) prove nothing, or None.

    They prove nothing when they take one value (a sigmoid map whose logits all lie far below
    zero is 0.0 everywhere: any rewrite that keeps it there matches, a wrong one too) or one
    value at 99% of the positions or more (saturated). Non-finite values count as values."""
    flat = [np.asarray(v).ravel() for v in values]
    flat = [v for v in flat if v.size]
    if not flat:
        return "it is empty"
    every = np.concatenate(flat)
    if every.dtype.kind not in "biuf":
        return None
    uniq, counts = np.unique(every, return_counts=True, equal_nan=True)
    top = int(np.argmax(counts))
    value = uniq[top]
    shown = f"{value:.6g}" if every.dtype.kind == "f" else str(value)
    if len(uniq) == 1:
        return f"it is {shown} at all {every.size} positions"
    share = counts[top] / every.size
    if every.size >= SATURATED_MIN and share >= SATURATED:
        return f"it is {shown} at {share:.2%} of {every.size} positions (saturated)"
    return None


SessionMaker = Callable[[], ort.InferenceSession]


def pair_threads() -> int:
    """Intra-op threads for each of two sessions that run side by side: half the cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 2
    return max(1, cores // 2)


def run_pair(reference: ort.InferenceSession, candidate: ort.InferenceSession,
             feeds: dict[str, np.ndarray], candidate_feeds: dict[str, np.ndarray] | None = None,
             ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Both sessions' outputs on `feeds` (the candidate on `candidate_feeds` when its inputs
    shrank), the two runs side by side (onnxruntime releases the GIL while it runs): with a
    thread each, two cores finish both in the time of one."""
    with ThreadPoolExecutor(1) as pool:
        ref = pool.submit(reference.run, None, feeds)
        try:
            cand = candidate.run(None, feeds if candidate_feeds is None else candidate_feeds)
        except Exception as exc:  # noqa: BLE001 - a rewrite that cannot run fails the check
            ref.exception()
            raise ValidationError("the pruned model fails in onnxruntime: "
                                  f"{one_line(exc, 300)}") from None
        try:
            return ref.result(), cand
        except Exception as exc:  # noqa: BLE001
            raise ValidationError("the masked original fails in onnxruntime: "
                                  f"{one_line(exc, 300)}") from None


def structural_check(model: onnx.ModelProto, data: Serialized | None = None, *,
                     parts: Split | None = None) -> None:
    """onnx.checker with strict shape inference; raises ValidationError with the first line.

    Checks the weight-free graph of `split` (or `parts`) unless `data` is given: the checker
    reads the same nodes, types, dims and inline constants, and of a split tensor's data it
    would only check what `split` already guarantees (one value field, in raw_data, of
    exactly the size its type and dims need)."""
    try:
        if data is not None:
            onnx.checker.check_model(data, full_check=True)
            return
        with tempfile.TemporaryDirectory() as tmp:
            onnx.checker.check_model(_write_graph(parts or split(model), tmp), full_check=True)
    except Exception as exc:  # noqa: BLE001 - any checker failure is a validation failure
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValidationError(f"pruned model fails onnx.checker: {first}") from exc


def fidelity(reference: ort.InferenceSession, candidate: ort.InferenceSession,
             model: onnx.ModelProto, *, seed: int = 0,
             sizes: dict[str, list[int]] | None = None,
             io: IoChanges | None = None,
             feeds: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """How close an inexact rewrite stays to the original, per output: relative L2 error,
    cosine similarity of the flattened outputs, and top-1 agreement along the last axis
    (shrunk outputs on their kept positions, see exact_check). On `feeds`, else on seeded
    inputs of the default shapes at batch 2."""
    if feeds is None:
        feeds = make_inputs(model, batch=2, seed=seed + 1, sizes=sizes)
    names = [o.name for o in reference.get_outputs()]
    ref_out, cand_out = run_pair(reference, candidate, feeds, shrink_feeds(feeds, io))
    want = [kept(v, (io or {}).get(name)) for name, v in zip(names, ref_out, strict=True)]
    out = {}
    for name, a, b in zip(names, want, cand_out, strict=True):
        a64, b64 = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
        if a64.shape != b64.shape:
            out[name] = {"rel_l2": float("inf"), "cosine": 0.0, "top1": 0.0}
            continue
        norm = float(np.linalg.norm(a64)) or 1e-30
        cos = float(a64 @ b64 / (norm * (float(np.linalg.norm(b64)) or 1e-30)))
        top1 = float(np.mean(np.argmax(a, -1) == np.argmax(b, -1))) if np.ndim(a) >= 2 else 1.0
        out[name] = {"rel_l2": float(np.linalg.norm(a64 - b64)) / norm, "cosine": cos,
                     "top1": top1}
    return out
