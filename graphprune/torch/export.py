"""A torch module as an ONNX model in memory, with its parameters under their own names.

torch.export → the dynamo exporter (`torch.onnx.export(..., dynamo=True)`), in eval mode,
without the exporter's optimiser: that optimiser folds every BatchNormalization that follows
a convolution into the convolution's weights (the BatchNorm parameters and running statistics
are gone), folds the Transpose of a Linear weight into a new initializer (`val_12`, its name
lost) and merges initializers of equal value (the zero biases and unit running variances of a
freshly initialised network become one tensor). Each of these depends on the weights' values,
so two exports of one architecture at two points of training could even differ in structure.

Instead constants are folded only where no parameter or buffer is read (shape arithmetic,
position ids, rotary tables from fixed constants; SplitToSequence→SequenceAt chains become
Split), which depends on the architecture alone: every export of the module has the same
graph (the plan fingerprint holds across training), and every initializer that is a parameter
or buffer keeps its name, its shape and its values. Initializers are named by the exporter
after the module's state (`features.0.weight`, `bn.running_var`); a tensor the module holds
under several names (tied weights) appears under one of them, and `Exported.names` maps it to
the tensor's first name in `named_parameters`/`named_buffers` order.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import onnx
import torch

from graphprune.errors import InputError, one_line

OPSET = 18
_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo",
            "torch.fx.experimental.symbolic_shapes", "onnxscript", "onnx_ir")


@dataclass
class Exported:
    """The ONNX model of a module and how its initializers map to the module's tensors."""

    model: onnx.ModelProto
    names: dict[str, str]
    """Initializer name → the module tensor's canonical name (parameters and buffers)."""
    inputs: list[str]
    """Graph input names, in the order of the positional example inputs."""


def module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer under every name it has (tied tensors: several names)."""
    out: dict[str, torch.Tensor] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        out.setdefault(name, p)
    for name, b in module.named_buffers(remove_duplicate=False):
        out.setdefault(name, b)
    return out


def canonical_names(module: torch.nn.Module) -> dict[str, str]:
    """Any name of a tensor → its first name (named_parameters, then named_buffers order)."""
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for name, t in module_tensors(module).items():
        out[name] = first.setdefault(id(t), name)
    return out


def as_args(example_inputs: Any) -> tuple:
    """Example inputs as the positional arguments of `forward` (one tensor or a sequence)."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (list, tuple)) and example_inputs:
        return tuple(example_inputs)
    raise InputError("example inputs must be a tensor or a non-empty tuple of tensors, got "
                     f"{type(example_inputs).__name__}")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's warnings and log lines stay out of the caller's terminal (the library
    never prints); an export that fails says why in its exception."""
    loggers = [logging.getLogger(n) for n in _LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_module(module: torch.nn.Module, example_inputs: Any, *,
                  dynamic_shapes: Any = None, opset: int = OPSET) -> Exported:
    """The module's ONNX model (eval mode; the module's mode is restored afterwards).
    `dynamic_shapes` goes to torch.export as is (None: every dim as in the examples).
    Raises InputError when torch cannot export the module."""
    args = as_args(example_inputs)
    was_training = module.training
    module.eval()
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(module, args, dynamo=True, optimize=False,
                                        verbose=False, report=False, verify=False,
                                        opset_version=opset, dynamic_shapes=dynamic_shapes)
            assert program is not None
            params = set(module_tensors(module))
            fold_architecture_constants(program.model, params)
            model = program.model_proto
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.export and the exporter raise anything
        raise InputError(f"torch could not export the module: {type(exc).__name__}: "
                         f"{one_line(exc, 300)}") from exc
    finally:
        module.train(was_training)
    names = canonical_names(module)
    shapes = {n: tuple(t.shape) for n, t in module_tensors(module).items()}
    mapped = {}
    for init in model.graph.initializer:
        if init.name in names and tuple(init.dims) == shapes[init.name]:
            mapped[init.name] = names[init.name]
    inits = {t.name for t in model.graph.initializer}
    inputs = [v.name for v in model.graph.input if v.name not in inits]
    return Exported(model, mapped, inputs)


def fold_architecture_constants(model: Any, params: set[str]) -> None:
    """Fold constants that read no parameter or buffer, then drop what nothing uses (on the
    exporter's onnx_ir model, in place)."""
    import onnx_ir.passes.common as common
    from onnxscript.optimizer import fold_constants

    def should_fold(node: Any) -> bool | None:
        reads = any(v is not None and v.name in params for v in node.inputs)
        return False if reads else None

    for _ in range(2):  # as the exporter's optimiser: twice, the second catches what the
        fold_constants(model, onnx_shape_inference=True, should_fold=should_fold)  # first freed
        common.RemoveUnusedNodesPass()(model)


def feeds_of(exported: Exported, args: Sequence[Any]) -> dict[str, Any]:
    """Positional example tensors → {graph input name: numpy array}."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if len(tensors) != len(exported.inputs):
        raise InputError(f"{len(tensors)} example tensors for {len(exported.inputs)} graph "
                         f"inputs ({', '.join(exported.inputs)})")
    return {n: t.detach().cpu().numpy() for n, t in zip(exported.inputs, tensors, strict=True)}
