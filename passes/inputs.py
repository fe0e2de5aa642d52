"""Inputs the model runs on: the exact check's, and the shapes calibration and the cost model
use. Found before anything depends on them, and checked on the original model.

Exports accept fewer sizes than their declared dynamic dims suggest. A detector whose
stride-32 features are added to upsampled ones needs spatial sizes that are multiples of 32
(YOLOv8, DBNet text detectors); an audio front end pads by reflection and needs more samples
than its window (Silero VAD's STFT, a mel spectrogram as a Conv); an exporter names dims the
model needs equal differently (torch's dynamo export with `dynamic_axes` as lists:
`input_ids[s72, s70]`, `attention_mask[s43, s53]`); a dynamo export bakes batch 1 into a
Reshape although it declares the batch dynamic. `resolve` picks, in this order:

1. given values (`--inputs`, or calibration samples held back from scoring): as they are,
   samples along axis 0 (one sample, then the next two); inputs that take one value for every
   sample (a scalar sample rate, a state whose leading dim is static) get the given array;
2. shapes the user gives (`--input-shape`): as given, one run, unless other inputs are left
   to choose;
3. the default shapes (batch 1 and 2, other dynamic dims 8 and 13), and when the original
   fails on them, a short ladder: spatial dims (an input of rank 4 or more that reaches a
   Conv, pooling or Resize) at 32, 64, 128, 224, 320, 640; other dims (sequences, audio
   samples) at 16 … 1024, 1600, 16000. Dims get sizes by name (one size per dim_param, the
   batch symbol's dims the batch) and, when that fails, tied by position (every input's
   leading dim the batch, dim k of every input one size). The first candidate on which the
   original runs, twice to the same finite outputs, is the first run; the next rung at batch
   2 the second. When the original fails at a second batch size or at a second size, the
   check runs at the size that works and says so.

Nothing works: one line naming what was tried and how to pass --input-shape or --inputs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from graphprune.errors import GraphpruneError, InputError

from . import validation

Shape = tuple[int, ...]
Shapes = dict[str, Shape]
Feeds = dict[str, np.ndarray]
Spec = tuple[str, int, list]

SPATIAL = (32, 64, 128, 224, 320, 640)
"""Spatial sizes tried after the default: multiples of 32 and 64 (stride-32 detectors, whose
features are added to upsampled ones), and common image sizes."""
LENGTHS = (16, 32, 64, 128, 256, 512, 1024, 1600, 16000)
"""Sequence and sample lengths tried after the default: powers of two, then lengths audio
front ends need (more than an STFT window and its reflection padding: 0.1 s and 1 s at
16 kHz)."""
SPATIAL_OPS = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool",
                         "AveragePool", "LpPool", "Resize", "Upsample", "GridSample"})
"""Ops whose inputs' trailing dims are spatial: an input of rank 4 or more that reaches one is
an image (or a volume)."""
REACH = 8
"""How many ops forward from an input the search for a spatial op goes (a tf2onnx export
transposes NHWC first, a YOLO export normalises first)."""
HOLD_BACK = 3
"""Calibration samples held back for the exact check (one for its first run, two for its
second), when at least twice as many are given."""


# -- the result ---------------------------------------------------------------------------------
@dataclass
class CheckInputs:
    """The inputs of every run of the exact check, and how other stages feed the model.

    `shapes[r]` are run r's input shapes; `values[r]` its given values (None: seeded values
    of those shapes are generated, `validation.generate`). `batch_axes` name, per input, the
    axes that follow the batch size; `batch_varies` is False when the original runs at one
    batch size only (calibration then uses it). `fixed` are given values every feed uses as
    they are (a scalar sample rate, a state). `source` and `notes` say where the inputs come
    from and why, for the report."""

    shapes: list[Shapes]
    values: list[Feeds] | None = None
    batch_axes: dict[str, list[int]] = field(default_factory=dict)
    batch_varies: bool = True
    fixed: Feeds = field(default_factory=dict)
    source: str = "default shapes"
    notes: list[str] = field(default_factory=list)
    seed: int = 0

    def feeds(self, model: onnx.ModelProto, run: int = 0, seed: int | None = None) -> Feeds:
        """Run `run`'s inputs (given values, or seeded ones: `seed`, default the run's)."""
        if self.values is not None:
            return dict(self.values[run])
        feeds = validation.generate(model, self.shapes[run], self.seed if seed is None else seed)
        feeds.update(self.fixed)
        return feeds

    def runs(self, model: onnx.ModelProto) -> validation.Runs:
        """Every run's inputs with the batch size it runs at, for validation.exact_check."""
        return validation.Runs([self.batch(r) for r in range(len(self.shapes))],
                               [self.feeds(model, r) for r in range(len(self.shapes))])

    def batch(self, run: int = 0) -> int:
        """The batch size of run `run` (1 where no input has a batch axis)."""
        sizes = [self.shapes[run][name][a] for name, axes in self.batch_axes.items()
                 for a in axes if name in self.shapes[run]]
        return sizes[0] if sizes else 1

    def at_batch(self, batch: int) -> Shapes:
        """The first run's shapes with every batch axis at `batch` (calibration's batches;
        the first run's batch when the batch cannot vary)."""
        if not self.batch_varies:
            batch = self.batch(0)
        out = {}
        for name, shape in self.shapes[0].items():
            axes = set(self.batch_axes.get(name, ()))
            out[name] = tuple(batch if k in axes else n for k, n in enumerate(shape))
        return out

    def generated(self, model: onnx.ModelProto, batch: int, seed: int) -> Feeds:
        """Seeded inputs at `batch` (see at_batch), the fixed given values as they are."""
        feeds = validation.generate(model, self.at_batch(batch), seed)
        feeds.update(self.fixed)
        return feeds

    def describe(self) -> dict:
        """For the report: where the inputs come from, each run's shapes, and why."""
        return {"source": self.source,
                "shapes": [{k: list(v) for k, v in s.items()} for s in self.shapes],
                "notes": list(self.notes)}


def shape_text(shapes: Shapes) -> str:
    """'x 1x3x32x32, sr scalar' (input order)."""
    return ", ".join(f"{k} {'x'.join(map(str, v)) if v else 'scalar'}" for k, v in shapes.items())


# -- roles of dynamic dims ----------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """How dynamic dims get sizes. Each has a role: the batch, spatial (an image input's
    trailing dims) or a length (anything else: sequences, samples). By name (`tied` False),
    the batch symbol's dims (validation.batch_symbol) are the batch, and dims that share a
    dim_param share a size; `tied`, every input's leading dynamic dim is the batch and dim k
    of every input takes one size, whatever the exporter named them."""

    specs: tuple[Spec, ...]
    spatial: frozenset[tuple[str, int]]
    symbol: object
    tied: bool = False

    def role(self, name: str, k: int, d: object) -> str:
        if (k == 0) if self.tied else validation.is_batch(d, k, self.symbol):
            return "batch"
        return "spatial" if (name, k) in self.spatial else "length"

    def key(self, name: str, k: int, d: object) -> tuple:
        if self.tied:
            return ("axis", k)
        return ("dim", d) if isinstance(d, str) else ("input", name, k)

    def shapes(self, batch: int, spatial: int, length: int, given: Shapes) -> Shapes:
        """Every input's shape: given ones as given (dims linked to theirs take their sizes),
        static dims as declared, other dynamic dims by role."""
        linked = {}
        for name, _, dims in self.specs:
            if name in given:
                for k, d in enumerate(dims):
                    if not isinstance(d, int) and k < len(given[name]):
                        linked.setdefault(self.key(name, k, d), given[name][k])
        sizes = {"batch": batch, "spatial": spatial, "length": length}
        out = {}
        for name, _, dims in self.specs:
            if name in given:
                out[name] = tuple(given[name])
                continue
            out[name] = tuple(d if isinstance(d, int) else
                              linked.get(self.key(name, k, d), sizes[self.role(name, k, d)])
                              for k, d in enumerate(dims))
        return out

    def batch_axes(self) -> dict[str, list[int]]:
        """Per input, the dynamic axes that follow the batch size."""
        return {name: [k for k, d in enumerate(dims)
                       if not isinstance(d, int) and self.role(name, k, d) == "batch"]
                for name, _, dims in self.specs}

    def describe(self) -> str:
        return "tied by position" if self.tied else "by name"


def layouts(model: onnx.ModelProto, specs: list[Spec]) -> list[Layout]:
    """By name, then tied by position (when that gives other roles)."""
    base = Layout(tuple(specs), spatial_dims(model, specs), validation.batch_symbol(specs))
    tied = replace(base, tied=True)
    if all(base.role(n, k, d) == tied.role(n, k, d) for n, _, dims in specs
           for k, d in enumerate(dims) if not isinstance(d, int)) and not _named_apart(specs):
        return [base]
    return [base, tied]


def _named_apart(specs: list[Spec]) -> bool:
    """Whether dims at one position of several inputs carry different names."""
    names: dict[int, set] = {}
    for _, _, dims in specs:
        for k, d in enumerate(dims):
            if not isinstance(d, int):
                names.setdefault(k, set()).add(d)
    return any(len(v) > 1 for v in names.values())


def spatial_dims(model: onnx.ModelProto, specs: list[Spec]) -> frozenset[tuple[str, int]]:
    """(input, axis) of the dynamic non-leading dims of inputs of rank 4 or more that reach a
    spatial op (SPATIAL_OPS) within REACH ops: an image's (or a volume's) height and width."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for x in dict.fromkeys(node.input):
            readers.setdefault(x, []).append(node)
    found = set()
    for name, _, dims in specs:
        if len(dims) < 4 or not _reaches(name, readers):
            continue
        found.update((name, k) for k, d in enumerate(dims) if k > 0 and not isinstance(d, int))
    return frozenset(found)


def _reaches(name: str, readers: dict[str, list[onnx.NodeProto]]) -> bool:
    frontier, seen = [name], {name}
    for _ in range(REACH):
        nxt = []
        for x in frontier:
            for node in readers.get(x, ()):
                if node.op_type in SPATIAL_OPS and node.domain in ("", "ai.onnx"):
                    return True
                nxt += [y for y in node.output if y and y not in seen]
                seen.update(node.output)
        frontier = nxt
    return False


# -- running the original -----------------------------------------------------------------------
class Probe:
    """The original model in onnxruntime, to try inputs on; `fails` says why inputs cannot
    serve the exact check, or None.

    `mode` "diagnose": two sessions as onnxruntime loads the model itself
    (`validation.session(read_files=True)`), which must give the same finite outputs: its
    verdict on the model as given. "choose": one check session (`validation.session`, the
    weights shared: built in milliseconds, where onnxruntime's own load of a 100 MB model
    takes a quarter of a second), finite outputs; `confirm` runs the chosen inputs once more
    to the same outputs. "off": nothing runs, every input is taken as working."""

    def __init__(self, model: onnx.ModelProto, seed: int = 0, *, mode: str = "choose") -> None:
        self.model, self.seed, self.mode = model, seed, mode
        self._sessions: list | None = None
        self._seen: dict[tuple, list[np.ndarray]] = {}

    def sessions(self) -> list:
        if self._sessions is None:
            if self.mode == "diagnose":
                data = validation.serialize(self.model)
                self._sessions = [validation.session(self.model, data, read_files=True)
                                  for _ in range(2)]
            else:
                self._sessions = [validation.session(self.model)]
        return self._sessions

    def fails(self, shapes: Shapes | None = None, feeds: Feeds | None = None) -> str | None:
        if self.mode == "off":
            return None
        feeds = self._feeds(shapes, feeds)
        try:
            outs = [[np.asarray(v) for v in s.run(None, feeds)] for s in self.sessions()]
        except GraphpruneError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever onnxruntime raises
            return f"onnxruntime cannot run it ({one_line(exc)})"
        self._seen[_key(feeds)] = outs[0]
        return _differ(outs[0], outs[-1]) or _non_finite(outs[0])

    def confirm(self, shapes: Shapes | None = None, feeds: Feeds | None = None) -> str | None:
        """Why inputs that ran once give other outputs when run again, or None."""
        if self.mode != "choose":
            return None  # (diagnosing runs every input in two sessions already)
        feeds = self._feeds(shapes, feeds)
        before = self._seen.get(_key(feeds))
        if before is None:
            return self.fails(feeds=feeds)
        return _differ(before, [np.asarray(v) for v in self.sessions()[0].run(None, feeds)])

    def _feeds(self, shapes: Shapes | None, feeds: Feeds | None) -> Feeds:
        return feeds if feeds is not None else validation.generate(self.model, shapes or {},
                                                                   self.seed)


def _key(feeds: Feeds) -> tuple:
    """Inputs by value (a key within this process only: nothing is ordered by it)."""
    return tuple((k, v.shape, v.dtype.str, hash(v.tobytes())) for k, v in sorted(feeds.items()))


def _differ(first: list[np.ndarray], second: list[np.ndarray]) -> str | None:
    for a, b in zip(first, second, strict=True):
        if a.shape != b.shape or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
            return ("its outputs differ between two runs on the same inputs (a random op?), "
                    "so no rewrite can be proven")
    return None


def _non_finite(outs: list[np.ndarray]) -> str | None:
    if any(a.dtype.kind in "fc" and not np.isfinite(a).all() for a in outs):
        return "it produces NaN or infinite outputs, so no rewrite can be proven"
    return None


def one_line(exc: BaseException, limit: int = 240) -> str:
    """An exception's message on one line (onnxruntime spreads its details over several),
    without onnxruntime's boilerplate."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"Non-zero status code returned while running (\S+) node\. Name:'([^']*)' "
                  r"Status Message: ", r"at \1 '\2': ", text)
    text = re.sub(r"/onnxruntime_src/\S+ (\S+ )*?\S+::\S+\([^)]*\) ", "", text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


# -- the ladder -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rung:
    spatial: int
    length: int
    then: tuple[int, int]
    """(spatial, length) of the second run."""


def rungs() -> Iterator[Rung]:
    """The default sizes, then the ladder in lock step (spatial dims and lengths: a model has
    rarely both), each with the next rung's sizes for the second run."""
    default = validation.DYNAMIC_SIZES
    yield Rung(default[0], default[0], (default[1], default[1]))
    n = max(len(SPATIAL), len(LENGTHS))
    steps = [(SPATIAL[min(i, len(SPATIAL) - 1)], LENGTHS[min(i, len(LENGTHS) - 1)])
             for i in range(n)]
    for i, (s, q) in enumerate(steps):
        then = steps[i + 1] if i + 1 < n else steps[i - 1]
        yield Rung(s, q, then if then != (s, q) else steps[i - 1])


RUN_MODES = ("choose", "always", "never")
"""When `resolve` runs the original: to choose (dims left open, or given shapes or values),
always (diagnosis), or never (models too large to run whole once more: the default shapes,
and a failure is diagnosed later by `problem`)."""


def resolve(model: onnx.ModelProto, sizes: dict[str, list[int]] | None = None,
            data: Feeds | str | os.PathLike | Given | None = None, *, seed: int = 0,
            run: str = "choose", source: str | None = None) -> CheckInputs:
    """The exact check's inputs for `model` (see the module): `data` (arrays by input name,
    an .npz path or loaded `Given` arrays; `source` names them in the report), else `sizes`
    (shapes by input name, as given) and, for dims they leave open, the defaults or the
    ladder; `run` says when the original runs (RUN_MODES). Raises InputError when nothing
    works."""
    specs = validation.input_specs(model)
    check_sizes(specs, sizes)
    if data is not None:
        given = data if isinstance(data, Given) else load_arrays(data, specs, "validation inputs")
        label = source or (f"given inputs ({data})" if isinstance(data, (str, os.PathLike))
                           else "given inputs")

        def chosen(probe: Probe) -> CheckInputs:
            return from_data(given, specs, probe, label, seed)
    else:
        def chosen(probe: Probe) -> CheckInputs:
            return search_shapes(model, specs, dict(sizes or {}), probe, seed,
                                 always=run == "always")
    mode = {"choose": "choose", "always": "diagnose", "never": "off"}[run]
    try:
        return chosen(Probe(model, seed, mode=mode))
    except InputError:
        if mode != "choose":
            raise
        # nothing ran in the check session: ask onnxruntime's own load of the model (the
        # verdict on the input; should it run, the check session's failure shows later)
        return chosen(Probe(model, seed, mode="diagnose"))


def check_sizes(specs: list[Spec], sizes: dict[str, list[int]] | None) -> None:
    """Shapes given for validation must name graph inputs and fit their declared shapes
    (rank, static dims); said now, in one line, not when onnxruntime refuses them."""
    declared = {s[0]: s[2] for s in specs}
    for name, shape in (sizes or {}).items():
        if name not in declared:
            raise InputError(f"input shape given for '{name}', which is not a graph input "
                             f"(inputs: {', '.join(declared) or 'none'})")
        dims = declared[name]
        for k, n in enumerate(shape):
            if n < 1:
                raise InputError(f"input shape for '{name}': dim {k} must be positive, got {n}")
        if not dims:
            continue  # no declared shape (or a scalar): onnxruntime judges it
        if len(shape) != len(dims):
            raise InputError(f"input shape for '{name}' has {len(shape)} dims, the model "
                             f"declares {len(dims)}")
        for k, (n, d) in enumerate(zip(shape, dims, strict=True)):
            if isinstance(d, int) and d != n:
                raise InputError(f"input shape for '{name}': dim {k} is {n}, the model fixes "
                                 f"it at {d}")


def search_shapes(model: onnx.ModelProto, specs: list[Spec], given: Shapes, probe: Probe,
                  seed: int, *, always: bool = False) -> CheckInputs:
    """Shapes for the dims `given` leaves open: the defaults, else the ladder (see the
    module); one run when nothing is left open (run on the original when shapes were given,
    or `always`)."""
    given = {k: tuple(v) for k, v in given.items()}
    options = layouts(model, specs)
    open_dims = any(not isinstance(d, int) for name, _, dims in specs if name not in given
                    for d in dims)
    notes = _scalar_notes(specs, given)
    if not open_dims:
        layout = _consistent(options, given)
        shapes = options[0].shapes(1, 0, 0, given)
        if (given or always) and (why := probe.fails(shapes)):
            where = "the given shapes" if given else "its declared shapes"
            raise InputError(f"the input model cannot be used: {why} on {where} "
                             f"({shape_text(shapes)})")
        source = "given shapes" if given else "declared shapes"
        return CheckInputs([shapes], batch_axes=layout.batch_axes(), source=source,
                           notes=notes, seed=seed)
    tried: list[tuple[Shapes, str]] = []
    seen: list[Shapes] = []
    fallback: tuple[Layout, Rung, Shapes, str] | None = None
    for rung in rungs():
        for layout in options:
            first = layout.shapes(1, rung.spatial, rung.length, given)
            if first in seen:
                continue
            seen.append(first)
            why = probe.fails(first)
            if why:
                tried.append((first, why))
                continue
            second = layout.shapes(2, *rung.then, given)
            if second == first:
                return _confirmed(probe, _found(layout, [first], given, notes, seed, tried, None))
            why2 = probe.fails(second)
            if not why2:
                return _confirmed(probe, _found(layout, [first, second], given, notes, seed,
                                                tried, None))
            fallback = fallback or (layout, rung, first, why2)
        if fallback is not None:
            break
    if fallback is None:
        raise InputError(_nothing_works(tried, specs, given))
    layout, rung, first, why2 = fallback
    return _confirmed(probe, _second_size(layout, rung, first, why2, given, probe, notes, seed,
                                          tried))


def _confirmed(probe: Probe, found: CheckInputs) -> CheckInputs:
    """`found`, once its first run gives the same outputs again (else bad input)."""
    why = probe.confirm(found.shapes[0], found.values[0] if found.values else None)
    if why:
        raise InputError(f"the input model cannot be used: {why}")
    return found


def _second_size(layout: Layout, rung: Rung, first: Shapes, why2: str, given: Shapes,
                 probe: Probe, notes: list[str], seed: int,
                 tried: list[tuple[Shapes, str]]) -> CheckInputs:
    """The original runs on `first` but not at batch 2 with the next sizes: a second run at
    batch 1 with the next sizes (the batch is baked in), else at batch 2 with the same sizes
    (the sizes are), else one run."""
    at_one = layout.shapes(1, *rung.then, given)
    same = layout.shapes(2, rung.spatial, rung.length, given)
    batch = f"its batch axis ({_batch_text(layout)}) is dynamic in name only"
    if at_one != first and not probe.fails(at_one):
        note = f"the original fails at batch 2 ({why2}): {batch}; validated at batch 1"
        found = _found(layout, [first, at_one], given, notes, seed, tried, note)
        found.batch_varies = False
        return found
    if same != first and not probe.fails(same):
        note = (f"the original fails at a second size of its other dynamic dims ({why2}); "
                f"validated at {shape_text(first)}, and at batch 2")
        return _found(layout, [first, same], given, notes, seed, tried, note)
    what = ("batch 2" if at_one == first else "a second size" if same == first
            else "batch 2 and at a second size")
    note = (f"the original fails at {what} ({why2})" + (f": {batch}" if at_one == first
                                                        else "")
            + f"; validated at {shape_text(first)} only")
    found = _found(layout, [first], given, notes, seed, tried, note)
    found.batch_varies = same == first
    return found


def _found(layout: Layout, runs: list[Shapes], given: Shapes, notes: list[str], seed: int,
           tried: list[tuple[Shapes, str]], note: str | None) -> CheckInputs:
    notes = list(notes)
    if tried:
        first, why = tried[0]
        notes.insert(0, f"the original fails on the default shapes ({shape_text(first)}: "
                        f"{why}); found by trying {len(tried) + 1} candidates, dims "
                        f"{layout.describe()}: {' then '.join(shape_text(s) for s in runs)}")
    elif layout.tied:
        notes.insert(0, f"dims {layout.describe()}: the model needs dims equal that the "
                        "exporter named apart")
    if note:
        notes.append(note)
    source = "searched shapes" if tried or layout.tied else "default shapes"
    return CheckInputs(runs, batch_axes=layout.batch_axes(), notes=notes, seed=seed,
                       source=source)


def _consistent(options: list[Layout], given: Shapes) -> Layout:
    """The layout given shapes agree with: tied when every given input's leading dynamic dim
    has one size (a batch named apart per input), else by name."""
    tied = next((o for o in options if o.tied), None)
    leads = {shape[0] for name, _, dims in options[0].specs if name in given and dims
             and not isinstance(dims[0], int) for shape in [given[name]]}
    return tied if tied is not None and len(given) > 1 and len(leads) == 1 else options[0]


def _batch_text(layout: Layout) -> str:
    return ", ".join(f"dim {k} of '{name}'" for name, axes in layout.batch_axes().items()
                     for k in axes) or "none"


def _scalar_notes(specs: list[Spec], given: Shapes) -> list[str]:
    """Generated scalar inputs (a sample rate, a flag) get random values a model may not
    expect: said in the report."""
    names = [name for name, _, dims in specs if not dims and name not in given]
    if not names:
        return []
    return [f"scalar input{'s' if len(names) > 1 else ''} {', '.join(repr(n) for n in names)} "
            "generated (random values); give real values with --inputs"]


def _nothing_works(tried: list[tuple[Shapes, str]], specs: list[Spec], given: Shapes) -> str:
    first = tried[0][1] if tried else "no candidate"
    listed = "; ".join(shape_text(s) for s, _ in tried[:4])
    more = f" and {len(tried) - 4} more up to {shape_text(tried[-1][0])}" if len(tried) > 4 else ""
    example = " ".join(f"--input-shape {name}:" + "x".join(
        str(d) if isinstance(d, int) else "1" if k == 0 else "N" for k, d in enumerate(dims))
        for name, _, dims in specs if dims and name not in given)
    return (f"the input model cannot be used: {first}; tried {len(tried)} input shapes "
            f"({listed}{more}); give shapes it runs on with {example or '--input-shape'} "
            "(or real inputs with --inputs)")


# -- given values -------------------------------------------------------------------------------
@dataclass
class Given:
    """Arrays by input name: `fixed` ones are fed as they are in every run (a scalar, or a
    value of the input's declared shape whose leading dim is static: a state); the others
    hold `samples` samples along axis 0."""

    arrays: Feeds
    fixed: frozenset[str]
    samples: int
    static_batch: int | None
    sized: bool = False
    """Whether a fixed array fills a dynamic dim (a state's batch): then every run takes one
    sample, the size the state was given for."""

    def take(self, start: int, count: int) -> Feeds:
        return {k: (v if k in self.fixed else v[start:start + count])
                for k, v in self.arrays.items()}

    def tail(self, count: int) -> Given:
        """The last `count` samples."""
        start = self.samples - count
        return Given(self.take(start, count), self.fixed, count, self.static_batch, self.sized)


def load_arrays(data: Feeds | str | os.PathLike, specs: list[Spec], what: str) -> Given:
    """Arrays for every graph input, checked against its declaration: one per input name (a
    single-array .npz's `arr_0` serves a single-input model), of its element type's kind,
    of its rank, its static dims where the array is samples of it (axis 0 is the samples)."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(f"cannot read {what} {path}: {one_line(exc)}") from None
    if not isinstance(data, dict):
        raise InputError(f"{what} must be arrays by input name or an .npz file")
    if list(data) == ["arr_0"] and len(specs) == 1:
        data = {specs[0][0]: data["arr_0"]}
    arrays, fixed = {}, set()
    for name, elem, dims in specs:
        if name not in data:
            raise InputError(f"{what} have no array for input '{name}' (have: "
                             f"{', '.join(sorted(data)) or 'nothing'})")
        a = _typed(np.asarray(data[name]), name, elem, what)
        if not dims and a.ndim == 0 or (
                a.ndim == len(dims) and dims and isinstance(dims[0], int) and _fits(a.shape, dims)):
            fixed.add(name)
        elif a.ndim != len(dims) or not dims or any(
                isinstance(d, int) and d != n for d, n in zip(dims[1:], a.shape[1:], strict=True)):
            want = "x".join(str(d) if isinstance(d, int) else "?" for d in dims[1:])
            raise InputError(f"{what}: array '{name}' has shape {list(a.shape)}; the input "
                             + (f"expects samples × {want or 'scalar'}" if dims
                                else "is a scalar: give one value"))
        arrays[name] = a
    lengths = {len(a) for k, a in arrays.items() if k not in fixed}
    if len(lengths) > 1 or 0 in lengths:
        counts = ", ".join(f"{k} {len(a)}" for k, a in arrays.items() if k not in fixed)
        raise InputError(f"{what}: arrays must share a non-empty first (sample) axis, got "
                         f"{counts}")
    statics = {dims[0] for name, _, dims in specs if name not in fixed and dims
               and isinstance(dims[0], int)}
    sized = any(not isinstance(d, int) for name, _, dims in specs if name in fixed for d in dims)
    return Given(arrays, frozenset(fixed), lengths.pop() if lengths else 1,
                 min(statics) if statics else None, sized)


def _typed(a: np.ndarray, name: str, elem: int, what: str) -> np.ndarray:
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    same_kind = a.dtype.kind == dtype.kind or (a.dtype.kind in "iu" and dtype.kind in "iu")
    if not same_kind:
        raise InputError(f"{what}: array '{name}' has dtype {a.dtype}, the input expects "
                         f"{dtype}")
    if a.dtype.kind in "iu" and a.size and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if a.min() < info.min or a.max() > info.max:
            raise InputError(f"{what}: array '{name}' holds values outside {dtype}")
    a = a.astype(dtype, copy=False)
    return a if a.flags.c_contiguous else np.array(a, order="C")  # (ascontiguousarray: ndim ≥ 1)


def _fits(shape: tuple[int, ...], dims: list) -> bool:
    return all(not isinstance(d, int) or d == n for d, n in zip(dims, shape, strict=True))


def data_runs(given: Given) -> list[tuple[int, int]]:
    """(start, count) of the samples of each run: one sample, then the next two (a fixed
    batch B, or a given state of one batch size: B samples, then the next B); fewer runs
    when fewer samples are given."""
    if len(given.fixed) == len(given.arrays):
        return [(0, 1)]
    n, b = given.samples, given.static_batch or (1 if given.sized else None)
    if b:
        if n < b:
            raise InputError(f"the model's batch size is fixed at {b}: give at least {b} "
                             f"samples, got {n}")  # (b > 1: a static batch)
        return [(0, b), (b, b)] if n >= 2 * b else [(0, b)]
    return [(0, 1), (1, 2)] if n >= 3 else [(0, 1), (0, 2)] if n == 2 else [(0, 1)]


def from_data(given: Given, specs: list[Spec], probe: Probe, label: str,
              seed: int) -> CheckInputs:
    """Runs over the given samples (`data_runs`); the original must run the first, a later
    run it fails is left out (with a note)."""
    runs, notes = [], []
    for start, count in data_runs(given):
        feeds = given.take(start, count)
        why = probe.fails(feeds=feeds)
        which = _samples_text(given, start, count)
        if why and not runs:
            raise InputError(f"the input model cannot be used: {why} on the given inputs "
                             f"({label}, {which})")
        if why:
            notes.append(f"the original fails on {which} of the given inputs ({why}): left out")
            continue
        runs.append((feeds, which))
    shapes = [{k: tuple(v.shape) for k, v in f.items()} for f, _ in runs]
    axes = {name: ([0] if name not in given.fixed and dims and not isinstance(dims[0], int)
                   else []) for name, _, dims in specs}
    fixed = {k: v for k, v in given.arrays.items() if k in given.fixed}
    notes.insert(0, f"{label}: {', then '.join(w for _, w in runs)}")
    varies = len(runs) == len(data_runs(given)) and not given.sized  # (a state's batch)
    return _confirmed(probe, CheckInputs(shapes, [f for f, _ in runs], axes, varies, fixed,
                                         label, notes, seed))


def _samples_text(given: Given, start: int, count: int) -> str:
    if len(given.fixed) == len(given.arrays):
        return "the arrays as given"
    return f"sample {start}" if count == 1 else f"samples {start}-{start + count - 1}"


def hold_back(given: Given) -> int:
    """How many calibration samples (the last ones) to keep from scoring for the exact check:
    HOLD_BACK (a fixed batch B: 2B, or B), when at least as many remain for calibration."""
    n, b = given.samples, given.static_batch or (1 if given.sized else None)
    if len(given.fixed) == len(given.arrays):
        return 0
    if b:
        return 2 * b if n >= 4 * b else b if n >= 2 * b else 0
    return next((k for k in (HOLD_BACK, 2, 1) if n >= 2 * k), 0)


def problem(model: onnx.ModelProto, sizes: dict[str, list[int]] | None = None,
            data: Feeds | str | os.PathLike | None = None, seed: int = 0) -> str | None:
    """Why `model` cannot be pruned and proven as given (no inputs it runs on, twice to the
    same finite outputs), or None when it can: `resolve` with every candidate tried."""
    try:
        resolve(model, sizes, data, seed=seed, run="always")
    except GraphpruneError as exc:
        text = str(exc)
        prefix = "the input model cannot be used: "
        return text[len(prefix):] if text.startswith(prefix) else text
    return None
