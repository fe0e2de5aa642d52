"""Export reference models to ONNX with either torch exporter.

graphprune must accept graphs from both exporters, which lower the same
module differently (e.g. ``chunk`` becomes Shape/Slice arithmetic under
TorchScript but a Split under dynamo; ``flatten`` becomes Flatten vs
Reshape; node and value names differ completely), so every model is
exported through one entry point that normalises the interface: inputs
named as the model's ``InputSpec``s say (``input`` for single-input
models), outputs ``output`` / ``output0..N``, symbolic ``batch`` (and, for
sequence models, ``sequence``) axes on inputs *and* outputs, and a single
self-contained ``.onnx`` file.

CLI::

    python -m models.export NAME -o out.onnx [--exporter torchscript|dynamo] [--opset N]
    python -m models.export --list
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx
    import torch

    from models import InputSpec, ModelSpec

__all__ = [
    "DEFAULT_OPSET",
    "EXPORTERS",
    "MIN_DYNAMO_OPSET",
    "export_onnx",
    "export_spec",
    "main",
    "output_names_for",
]

EXPORTERS: tuple[str, ...] = ("torchscript", "dynamo")
DEFAULT_OPSET: dict[str, int] = {"torchscript": 17, "dynamo": 18}
# The dynamo exporter only implements opset >= 18. Asked for less it
# down-converts afterwards, which in torch 2.13 / onnx 1.23 either leaves the
# model at 18 or produces invalid ReduceMean/Split nodes, so we refuse early.
MIN_DYNAMO_OPSET = 18
INPUT_NAME = "input"
BATCH_DIM = "batch"

_NOISY_LOGGERS = (
    "torch.onnx",
    "torch.export",
    "torch._export",
    "torch._dynamo",
    "torch.fx.experimental.symbolic_shapes",
    "onnxscript",
    "onnx_ir",
    "transformers",
)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow exporter chatter (prints, warnings, logging) unless export fails.

    On failure the captured text is replayed to stderr, because it usually
    holds the only useful explanation of what went wrong.
    """
    buf = io.StringIO()
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(buf),
            contextlib.redirect_stderr(buf),
        ):
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            yield
    except BaseException:
        sys.stderr.write(buf.getvalue())
        raise
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _as_tuple(out: Any) -> list[torch.Tensor]:
    """The tensors of a (possibly nested) model output, in export order."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _as_tuple(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _as_tuple(o)]
    raise TypeError(f"unsupported model output type {type(out).__name__}")


def _output_shapes(out: Any) -> list[tuple[int, ...]]:
    """Shapes of the tensors in a (possibly nested) model output, in export order."""
    return [tuple(t.shape) for t in _as_tuple(out)]


def output_names_for(n: int) -> list[str]:
    """``["output"]`` for one output, else ``["output0", ..., "output{n-1}"]``."""
    return ["output"] if n == 1 else [f"output{i}" for i in range(n)]


def _default_opset(proto: onnx.ModelProto) -> int | None:
    """Version of the default (ai.onnx) opset a model imports."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return None


Axes = dict[int, str]
"""Dynamic axes of one tensor: axis index -> symbolic dim name."""


def _dim_sizes(args: Sequence[torch.Tensor], in_axes: Sequence[Axes]) -> dict[str, int]:
    """Size of every named dynamic dim in ``args``; raises if one name has two sizes."""
    sizes: dict[str, int] = {}
    for tensor, axes in zip(args, in_axes, strict=True):
        for axis, dim_name in axes.items():
            size = int(tensor.shape[axis])
            if sizes.setdefault(dim_name, size) != size:
                raise ValueError(
                    f"dynamic dim {dim_name!r} has example sizes {sizes[dim_name]} and {size}"
                )
    return sizes


def _resize(
    args: Sequence[torch.Tensor], in_axes: Sequence[Axes], sizes: dict[str, int]
) -> tuple[torch.Tensor, ...]:
    """``args`` with each named dynamic axis resized to ``sizes[name]``.

    Entries are repeated cyclically along the axis, so integer inputs keep
    valid values (token ids in range, 0/1 masks) and a batch-1 tensor grows
    into identical rows, as ``expand`` would give.
    """
    import torch

    out = []
    for tensor, axes in zip(args, in_axes, strict=True):
        for axis, dim_name in axes.items():
            old, new = int(tensor.shape[axis]), sizes[dim_name]
            if old != new:
                index = torch.arange(new) % old
                tensor = tensor.index_select(axis, index)
        out.append(tensor.contiguous())
    return tuple(out)


def _infer_output_axes(
    model: torch.nn.Module,
    args: Sequence[torch.Tensor],
    in_axes: Sequence[Axes],
    out_shapes: list[tuple[int, ...]],
    out_names: list[str],
) -> list[Axes]:
    """Which output axes follow which input dims, found by running at other sizes.

    Each named dim grows by a different amount; an output axis whose size
    moves in step with one of them gets that name, one that changes some
    other way (e.g. ``sequence + 1``) gets ``<output>_dim<axis>``, and one
    that stays put is static.
    """
    import torch

    sizes = _dim_sizes(args, in_axes)
    if not sizes:
        return [{} for _ in out_shapes]
    grown = {dim_name: size + 1 + i for i, (dim_name, size) in enumerate(sizes.items())}
    with torch.no_grad():
        shapes2 = _output_shapes(model(*_resize(args, in_axes, grown)))
    axes: list[Axes] = []
    for out_name, shape1, shape2 in zip(out_names, out_shapes, shapes2, strict=True):
        found: Axes = {}
        for axis, (a, b) in enumerate(zip(shape1, shape2, strict=True)):
            if a == b:
                continue
            match = [n for n in sizes if (sizes[n], grown[n]) == (a, b)]
            found[axis] = match[0] if match else f"{out_name}_dim{axis}"
        axes.append(found)
    return axes


def _finalize(
    path: Path,
    out_shapes: list[tuple[int, ...]],
    out_axes: Sequence[Axes],
    in_axes: dict[str, Axes],
    opset: int,
) -> None:
    """Make ``path`` self-contained, at the requested opset, with agreed dims.

    Raises if the file does not import the requested opset or fails the
    ONNX checker, rather than hand back a model that is not what was asked.

    Any external-data side file is folded back in and deleted. The
    TorchScript exporter loses static output dims behind shape arithmetic
    (e.g. ``flatten(2)`` on a dynamic-batch tensor yields ``Concat_dim_1``);
    every non-dynamic dim is fixed for a given input, so we write the eager
    shapes back. Dynamic dims get our names (``batch``, ``sequence``) on
    inputs and outputs whatever the exporter called them (dynamo says
    ``s0``-style names for derived dims).
    """
    import onnx
    from onnx.external_data_helper import uses_external_data

    proto = onnx.load(str(path), load_external_data=False)
    locations = {
        entry.value
        for tensor in proto.graph.initializer
        if uses_external_data(tensor)
        for entry in tensor.external_data
        if entry.key == "location"
    }
    if locations:
        proto = onnx.load(str(path))  # pulls the external tensors in
    changed = bool(locations)
    if _default_opset(proto) != opset:
        raise RuntimeError(f"exported model uses opset {_default_opset(proto)}, not {opset}")
    onnx.checker.check_model(proto)

    def name_dims(value: onnx.ValueInfoProto, axes: Axes) -> bool:
        dims = value.type.tensor_type.shape.dim
        edited = False
        for axis, dim_name in axes.items():
            if axis < len(dims) and dims[axis].dim_param != dim_name:
                dims[axis].dim_param = dim_name
                edited = True
        return edited

    for value in proto.graph.input:
        if value.name in in_axes:
            changed |= name_dims(value, in_axes[value.name])
    for value, shape, axes in zip(proto.graph.output, out_shapes, out_axes, strict=True):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            continue
        changed |= name_dims(value, axes)
        for axis, (dim, size) in enumerate(zip(dims, shape, strict=True)):
            if axis not in axes and not dim.HasField("dim_value"):
                dim.dim_value = size
                changed = True
    if changed:
        onnx.save_model(proto, str(path), save_as_external_data=False)
    for loc in locations:
        (path.parent / loc).unlink(missing_ok=True)


def export_onnx(
    model: torch.nn.Module,
    example_input: torch.Tensor | Sequence[torch.Tensor],
    path: str | Path,
    *,
    exporter: str = "torchscript",
    opset: int | None = None,
    dynamic_batch: bool = True,
    inputs: Sequence[InputSpec] | None = None,
    output_names: Sequence[str] | None = None,
) -> Path:
    """Export ``model`` (in eval mode) to a single self-contained ONNX file.

    ``exporter`` is ``"torchscript"`` (``dynamo=False``, default opset 17) or
    ``"dynamo"`` (``dynamo=True``, default opset 18). ``example_input`` is one
    tensor or a sequence of tensors passed positionally to ``forward``.

    ``inputs`` names the graph inputs and their dynamic axes (one
    ``InputSpec`` per tensor; only ``name`` and ``dynamic_axes`` are used
    here). Without it a single tensor is named ``input`` (several:
    ``input0..N``) with dim 0 dynamic as ``batch``. Output axes that follow
    a dynamic input dim get its name, found by also running the model
    eagerly at larger sizes. ``dynamic_batch=False`` makes every axis
    static. Returns the written path. Raises ``ValueError`` for dynamo with
    opset < 18.
    """
    import torch

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opset = opset if opset is not None else DEFAULT_OPSET[exporter]
    if exporter == "dynamo" and opset < MIN_DYNAMO_OPSET:
        raise ValueError(
            f"the dynamo exporter needs opset >= {MIN_DYNAMO_OPSET} (got {opset}); "
            "use exporter='torchscript' for older opsets"
        )
    args = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    if inputs is not None:
        if len(inputs) != len(args):
            raise ValueError(f"{len(inputs)} input specs for {len(args)} example tensors")
        in_names = [spec.name for spec in inputs]
        in_axes = [dict(spec.dynamic_axes) for spec in inputs]
    else:
        in_names = [INPUT_NAME] if len(args) == 1 else [f"input{i}" for i in range(len(args))]
        in_axes = [{0: BATCH_DIM} for _ in args]
    if not dynamic_batch:
        in_axes = [{} for _ in args]
    sizes = _dim_sizes(args, in_axes)

    was_training = model.training
    model.eval()
    try:
        with _quiet(), torch.no_grad():
            out_shapes = _output_shapes(model(*args))
            out_names = list(output_names) if output_names else output_names_for(len(out_shapes))
            if len(out_names) != len(out_shapes):
                raise ValueError(f"{len(out_names)} output names for {len(out_shapes)} outputs")
            out_axes = _infer_output_axes(model, args, in_axes, out_shapes, out_names)
            if exporter == "torchscript":
                dynamic_axes = {
                    name: axes
                    for name, axes in zip(
                        [*in_names, *out_names], [*in_axes, *out_axes], strict=True
                    )
                    if axes
                }
                torch.onnx.export(
                    model,
                    args,
                    str(path),
                    dynamo=False,
                    opset_version=opset,
                    input_names=in_names,
                    output_names=out_names,
                    dynamic_axes=dynamic_axes or None,
                    do_constant_folding=True,
                )
            else:
                # torch.export specialises size-0/1 dims to constants, so a
                # batch-1 example would silently pin the batch axis.
                trace_args = _resize(args, in_axes, {n: max(s, 2) for n, s in sizes.items()})
                dims = {n: torch.export.Dim(n) for n in sizes}
                dynamic_shapes = (
                    tuple({axis: dims[n] for axis, n in axes.items()} or None for axes in in_axes)
                    if sizes
                    else None
                )
                torch.onnx.export(
                    model,
                    trace_args,
                    str(path),
                    dynamo=True,
                    opset_version=opset,
                    input_names=in_names,
                    output_names=out_names,
                    dynamic_shapes=dynamic_shapes,
                    external_data=False,
                    report=False,
                    verify=False,
                )
    finally:
        model.train(was_training)
    _finalize(path, out_shapes, out_axes, dict(zip(in_names, in_axes, strict=True)), opset)
    return path


def export_spec(
    name: str,
    path: str | Path,
    exporter: str = "torchscript",
    *,
    opset: int | None = None,
    dynamic_batch: bool = True,
) -> Path:
    """Build registered model ``name`` and export it with its seeded example inputs.

    Dynamic axes come from the spec's ``inputs``, less any ``static_dims`` the
    spec pins for this exporter.
    """
    from models import get

    spec = get(name)
    model = spec.build()
    return export_onnx(
        model,
        spec.example_inputs(seed=0),
        path,
        exporter=exporter,
        opset=opset,
        dynamic_batch=dynamic_batch,
        inputs=spec.inputs_for(exporter),
        output_names=spec.outputs or None,
    )


def _describe_inputs(spec: ModelSpec) -> str:
    """``name:dtype[batch=2,sequence=7]`` per input, plus any per-exporter static dims."""
    parts = []
    for inp in spec.inputs:
        dims = [
            f"{inp.dynamic_axes[a]}={d}" if a in inp.dynamic_axes else str(d)
            for a, d in enumerate(inp.shape)
        ]
        parts.append(f"{inp.name}:{inp.dtype}[{','.join(dims)}]")
    for exporter, pinned in spec.static_dims.items():
        parts.append(f"({exporter}: {', '.join(pinned)} static)")
    return " ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns a process exit code."""
    from models import BENCH_MODELS, CNN_MODELS, TRANSFORMER_MODELS

    parser = argparse.ArgumentParser(
        prog="python -m models.export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("name", nargs="?", help="registered model name (see --list)")
    parser.add_argument(
        "-o", "--output", type=Path, help="destination .onnx file (default: NAME.onnx)"
    )
    parser.add_argument("--exporter", choices=EXPORTERS, default="torchscript")
    parser.add_argument(
        "--opset",
        type=int,
        default=None,
        help="ONNX opset (default 17 torchscript / 18 dynamo; dynamo needs >= 18)",
    )
    parser.add_argument(
        "--static-batch",
        action="store_true",
        help="do not mark any axis dynamic (batch, sequence)",
    )
    parser.add_argument("--list", action="store_true", help="list registered models and exit")
    args = parser.parse_args(argv)

    registered = {**CNN_MODELS, **TRANSFORMER_MODELS}
    if args.list:
        for spec in registered.values():
            print(f"{spec.name:<20} {spec.family:<12} {_describe_inputs(spec)}")
        return 0
    if not args.name:
        parser.error("a model NAME is required unless --list is given")
    if args.name not in registered and args.name not in BENCH_MODELS:
        parser.error(f"unknown model {args.name!r}; choose from: {', '.join(registered)}")
    out = args.output or Path(f"{args.name}.onnx")
    if args.exporter == "dynamo" and args.opset is not None and args.opset < MIN_DYNAMO_OPSET:
        parser.error(f"--exporter dynamo needs --opset >= {MIN_DYNAMO_OPSET}")
    written = export_spec(
        args.name, out, args.exporter, opset=args.opset, dynamic_batch=not args.static_batch
    )
    print(written)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
