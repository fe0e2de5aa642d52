"""A physically smaller torch module: the masked module with its removed positions sliced off.

Only where it is safe: every masked tensor's removed positions must form a product of
per-axis selections (whole rows, columns, channels), and every module holding one must be a
layer whose sizes are its tensors' shapes and nothing else: nn.Linear, nn.Conv1d/2d/3d
(groups = 1, or depthwise with one filter per group), nn.ConvTranspose1d/2d/3d (groups = 1)
and nn.BatchNorm1d/2d/3d. A module that also keeps sizes elsewhere (an attention layer's head
count, a `view` with a literal width in `forward`) shows itself in the check: the copy must
run on the example inputs and give the masked module's outputs within the exact check's
tolerance (rtol 1e-4, atol 1e-5 × output scale; when that fails, 4× the masked module's own
float noise, measured against a float64 copy, as passes/noise.py does in onnxruntime). Any
failure refuses with the reason (`CannotShrink`) and leaves the masked module as it was:
the slicing happens on a deep copy.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from graphprune.errors import GraphpruneError, one_line
from graphprune.passes.validation import compare

from .mapping import Mapping, keep_masks

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class CannotShrink(GraphpruneError):
    """The module cannot be sliced safely; the reason is the message (the masks stay)."""


def shrink(module: nn.Module, args: tuple, mapping: Mapping, removed: np.ndarray) -> nn.Module:
    """The sliced copy of the masked `module`, checked against it on `args`."""
    keeps = {name: per_axis(name, k) for name, k in keep_masks(mapping, removed).items()}
    small = copy.deepcopy(module)
    owners = _owners(small)
    touched: dict[str, nn.Module] = {}
    for name in keeps:
        for path, _ in owners[name]:
            touched.setdefault(path, small.get_submodule(path))
    for path, sub in touched.items():
        _check_layer(path, sub, keeps, owners)
    for name, axes in keeps.items():
        _slice_tensor(small, owners[name], axes)
    for sub in touched.values():
        _resize(sub)
    _verify(module, small, args)
    return small


def per_axis(name: str, keep: np.ndarray) -> dict[int, np.ndarray]:
    """The keep mask as per-axis selections (axis → kept flags, axes that lose something);
    CannotShrink when it is no product of them."""
    axes = {}
    for a in range(keep.ndim):
        other = tuple(b for b in range(keep.ndim) if b != a)
        along = keep.any(axis=other) if other else keep
        if not along.all():
            axes[a] = along
    product = np.ones(keep.shape, dtype=bool)
    for a, along in axes.items():
        view = [len(along) if b == a else 1 for b in range(keep.ndim)]
        product &= along.reshape(view)
    if not np.array_equal(product, keep):
        raise CannotShrink(f"the removed positions of '{name}' are no whole rows or columns")
    return axes


def _owners(module: nn.Module) -> dict[str, list[tuple[str, str]]]:
    """Canonical tensor name → every (module path, attribute) holding that tensor."""
    first: dict[int, str] = {}
    out: dict[str, list[tuple[str, str]]] = {}
    items = [*module.named_parameters(remove_duplicate=False),
             *module.named_buffers(remove_duplicate=False)]
    for name, t in items:
        canonical = first.setdefault(id(t), name)
        path, _, attr = name.rpartition(".")
        out.setdefault(canonical, []).append((path, attr))
    return out


def _allowed_axes(sub: nn.Module) -> dict[str, set[int]] | str:
    """Attribute → axes it may lose, or why the layer cannot be sliced."""
    if isinstance(sub, nn.Linear):
        return {"weight": {0, 1}, "bias": {0}}
    if isinstance(sub, CONVS):
        if sub.groups == 1:
            return {"weight": {0, 1}, "bias": {0}}
        if sub.groups == sub.in_channels == sub.out_channels:
            return {"weight": {0}, "bias": {0}}
        return f"grouped convolution (groups={sub.groups})"
    if isinstance(sub, TRANSPOSED):
        if sub.groups == 1:
            return {"weight": {0, 1}, "bias": {0}}
        return f"grouped transposed convolution (groups={sub.groups})"
    if isinstance(sub, NORMS):
        return {k: {0} for k in ("weight", "bias", "running_mean", "running_var")}
    if type(sub).__name__ == "Conv1D" and hasattr(sub, "nf"):  # transformers' GPT-2 layer
        return {"weight": {0, 1}, "bias": {0}}
    return f"{type(sub).__name__} layer, which shrink does not slice"


def _check_layer(path: str, sub: nn.Module, keeps: dict[str, dict[int, np.ndarray]],
                 owners: dict[str, list[tuple[str, str]]]) -> None:
    allowed = _allowed_axes(sub)
    where = f"'{path or type(sub).__name__}'"
    if isinstance(allowed, str):
        raise CannotShrink(f"{where} is a {allowed}; export() removes its units in ONNX")
    for name, axes in keeps.items():
        for p, attr in owners[name]:
            if p == path and not set(axes) <= allowed.get(attr, set()):
                raise CannotShrink(f"{where}: '{name}' loses positions along axes "
                                   f"{sorted(axes)}, which {type(sub).__name__} cannot drop")


def _slice_tensor(root: nn.Module, holders: list[tuple[str, str]],
                  axes: dict[int, np.ndarray]) -> None:
    path, attr = holders[0]
    old = getattr(root.get_submodule(path), attr)
    new = old.detach()
    for a, along in axes.items():
        new = new.index_select(a, torch.from_numpy(np.flatnonzero(along)).to(new.device))
    new = new.clone()
    value = nn.Parameter(new, requires_grad=old.requires_grad) if isinstance(
        old, nn.Parameter) else new
    for p, at in holders:  # tied tensors: every holder gets the same new tensor; a buffer
        setattr(root.get_submodule(p), at, value)  # stays a buffer (Module.__setattr__)


def _resize(sub: nn.Module) -> None:
    """The layer's size attributes from its (sliced) tensors."""
    w = getattr(sub, "weight", None)
    if isinstance(sub, nn.Linear):
        sub.out_features, sub.in_features = w.shape[0], w.shape[1]
    elif isinstance(sub, CONVS):
        if sub.groups > 1:
            sub.groups = sub.in_channels = sub.out_channels = w.shape[0]
        else:
            sub.out_channels, sub.in_channels = w.shape[0], w.shape[1]
    elif isinstance(sub, TRANSPOSED):
        sub.in_channels, sub.out_channels = w.shape[0], w.shape[1]
    elif type(sub).__name__ == "Conv1D":
        sub.nf = w.shape[1]
    elif isinstance(sub, NORMS):
        stat = sub.running_mean if sub.running_mean is not None else w
        sub.num_features = stat.shape[0]


def outputs_of(out: Any) -> list[torch.Tensor]:
    """The tensors of a (nested) model output, in order (dicts and ModelOutputs by value)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in outputs_of(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in outputs_of(v)]
    return []


def _run(module: nn.Module, args: tuple) -> list[np.ndarray]:
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            return [t.detach().cpu().numpy() for t in outputs_of(module(*args))]
    finally:
        module.train(was)


def _verify(masked: nn.Module, small: nn.Module, args: tuple) -> None:
    ref = _run(masked, args)
    try:
        got = _run(small, args)
    except Exception as exc:  # noqa: BLE001 - whatever the sliced forward raises
        raise CannotShrink(f"the sliced module fails on the example inputs ({type(exc).__name__}:"
                           f" {one_line(exc, 200)}); its forward keeps a size that changed"
                           ) from None
    names = [f"output {k}" for k in range(len(ref))]
    if len(got) != len(ref):
        raise CannotShrink(f"the sliced module returns {len(got)} tensors, not {len(ref)}")
    diffs = compare(ref, got, names)
    if all(d.passed for d in diffs):
        return
    wide = copy.deepcopy(masked).double()
    exact = _run(wide, tuple(a.double() if a.is_floating_point() else a for a in args))
    noise = [float(np.max(np.abs(r.astype(np.float64) - e))) if r.dtype.kind == "f" and r.size
             else None for r, e in zip(ref, exact, strict=True)]
    diffs = compare(ref, got, names, noise)
    bad = [d for d in diffs if not d.passed]
    if bad:
        d = bad[0]
        raise CannotShrink(f"the sliced module differs from the masked one: {d.name} by "
                           f"{d.max_abs_err:.3e} (scale {d.scale:.3e})")
