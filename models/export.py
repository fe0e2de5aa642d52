"""Export reference models to ONNX with either torch exporter.

graphprune must accept graphs from both exporters, which lower the same
module differently (e.g. ``chunk`` becomes Shape/Slice arithmetic under
TorchScript but a Split under dynamo; ``flatten`` becomes Flatten vs
Reshape; node and value names differ completely), so every model is
exported through one entry point that normalises the interface: input
named ``input``, outputs ``output`` / ``output0..N``, an optional dynamic
batch axis, and a single self-contained ``.onnx`` file.

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


def _output_shapes(out: Any) -> list[tuple[int, ...]]:
    """Shapes of the tensors in a (possibly nested) model output, in export order."""
    import torch

    if isinstance(out, torch.Tensor):
        return [tuple(out.shape)]
    if isinstance(out, (list, tuple)):
        return [s for o in out for s in _output_shapes(o)]
    if isinstance(out, dict):
        return [s for o in out.values() for s in _output_shapes(o)]
    raise TypeError(f"unsupported model output type {type(out).__name__}")


def output_names_for(n: int) -> list[str]:
    """``["output"]`` for one output, else ``["output0", ..., "output{n-1}"]``."""
    return ["output"] if n == 1 else [f"output{i}" for i in range(n)]


def _default_opset(proto: onnx.ModelProto) -> int | None:
    """Version of the default (ai.onnx) opset a model imports."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return None


def _finalize(
    path: Path, out_shapes: list[tuple[int, ...]], dynamic_batch: bool, opset: int
) -> None:
    """Make ``path`` self-contained, at the requested opset, with static output dims.

    Raises if the file does not import the requested opset or fails the
    ONNX checker, rather than hand back a model that is not what was asked.

    Any external-data side file is folded back in and deleted. The
    TorchScript exporter loses static output dims behind shape arithmetic
    (e.g. ``flatten(2)`` on a dynamic-batch tensor yields ``Concat_dim_1``);
    every non-batch dim is fixed for a given input resolution, so we write
    the eager shapes back. The batch dim stays symbolic.
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
    for value, shape in zip(proto.graph.output, out_shapes, strict=True):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            continue
        for axis, (dim, size) in enumerate(zip(dims, shape, strict=True)):
            if dynamic_batch and axis == 0:
                if dim.dim_param != BATCH_DIM:
                    dim.dim_param = BATCH_DIM
                    changed = True
            elif not dim.HasField("dim_value"):
                dim.dim_value = size
                changed = True
    if changed:
        onnx.save_model(proto, str(path), save_as_external_data=False)
    for loc in locations:
        (path.parent / loc).unlink(missing_ok=True)


def export_onnx(
    model: torch.nn.Module,
    example_input: torch.Tensor,
    path: str | Path,
    *,
    exporter: str = "torchscript",
    opset: int | None = None,
    dynamic_batch: bool = True,
) -> Path:
    """Export ``model`` (in eval mode) to a single self-contained ONNX file.

    ``exporter`` is ``"torchscript"`` (``dynamo=False``, default opset 17) or
    ``"dynamo"`` (``dynamo=True``, default opset 18). With ``dynamic_batch``
    dim 0 of the input and of every output is named ``batch``. Returns the
    written path. Raises ``ValueError`` for dynamo with opset < 18.
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

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out_shapes = _output_shapes(model(example_input))
        names = output_names_for(len(out_shapes))
        with _quiet(), torch.no_grad():
            if exporter == "torchscript":
                dynamic_axes = (
                    {n: {0: BATCH_DIM} for n in [INPUT_NAME, *names]} if dynamic_batch else None
                )
                torch.onnx.export(
                    model,
                    (example_input,),
                    str(path),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=names,
                    dynamic_axes=dynamic_axes,
                    do_constant_folding=True,
                )
            else:
                dynamic_shapes = None
                trace_input = example_input
                if dynamic_batch:
                    # torch.export specialises size-1 dims to constants, so a
                    # batch-1 example would silently pin the batch axis.
                    if trace_input.shape[0] == 1:
                        trace_input = trace_input.expand(2, *trace_input.shape[1:]).contiguous()
                    dynamic_shapes = ({0: torch.export.Dim(BATCH_DIM)},)
                torch.onnx.export(
                    model,
                    (trace_input,),
                    str(path),
                    dynamo=True,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=names,
                    dynamic_shapes=dynamic_shapes,
                    external_data=False,
                    report=False,
                    verify=False,
                )
    finally:
        model.train(was_training)
    _finalize(path, out_shapes, dynamic_batch, opset)
    return path


def export_spec(
    name: str,
    path: str | Path,
    exporter: str = "torchscript",
    *,
    opset: int | None = None,
    dynamic_batch: bool = True,
) -> Path:
    """Build registered model ``name`` and export it with a seeded random input."""
    import torch

    from models import get

    spec = get(name)
    model = spec.build()
    example = torch.randn(spec.input_shape, generator=torch.Generator().manual_seed(0))
    return export_onnx(
        model, example, path, exporter=exporter, opset=opset, dynamic_batch=dynamic_batch
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns a process exit code."""
    from models import BENCH_MODELS, CNN_MODELS

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
        "--static-batch", action="store_true", help="do not mark the batch axis dynamic"
    )
    parser.add_argument("--list", action="store_true", help="list registered models and exit")
    args = parser.parse_args(argv)

    if args.list:
        for spec in CNN_MODELS.values():
            shape = "x".join(map(str, spec.input_shape))
            print(f"{spec.name:<20} {spec.family:<6} {shape}")
        return 0
    if not args.name:
        parser.error("a model NAME is required unless --list is given")
    if args.name not in CNN_MODELS and args.name not in BENCH_MODELS:
        parser.error(f"unknown model {args.name!r}; choose from: {', '.join(CNN_MODELS)}")
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
