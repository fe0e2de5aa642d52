"""Rewrite and prove: the rewrite of a selection and its exact check, in the right strategy.

The exact part of a plan (units whose removal the masked original reproduces) is rewritten
and checked: `onnx.checker` on the pruned graph, then the pruned model against the masked
original in onnxruntime (`validation.exact_check`). How depends on the model: in memory, two
sessions side by side (half the cores each); weights memory-mapped, one model's weights in
memory at a time; mapped and at least `segments.SEGMENT_MIN_BYTES` of weights, segment by
segment (`segments.py`); when the static tolerance fails, the masked original's own float
noise on the same inputs sets the floor (`noise.py`). The inputs are chosen before
(`inputs.py`); an output that proves nothing on them is backed by the tensors before it
(`witness.py`). Inexact units (hidden size, through normalisations) are then rewritten with
the rest and measured, not proven: `fidelity` per output.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx

from graphprune.analysis import Analysis
from graphprune.errors import ValidationError
from graphprune.io import mapped

from . import noise, rewrite, segments, validation, witness
from .inputs import CheckInputs


def inexact_roots(an: Analysis) -> np.ndarray:
    """Per slot: whether it is a root whose removal the masked original cannot reproduce."""
    mask = np.zeros(len(an.roots), dtype=bool)
    for root, tags in an.uf.tags.items():
        if "inexact" in tags:
            mask[root] = True
    return mask


def rewrite_exact(model: onnx.ModelProto, an: Analysis, exact: np.ndarray,
                  spill: rewrite.Spill | None = None) -> onnx.ModelProto:
    """The model without the `exact` units (nothing removed: a copy of the input, as is)."""
    if exact.any():
        return rewrite.prune_model(model, an, exact, spill)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def prove(model: onnx.ModelProto, pruned: onnx.ModelProto, an: Analysis, removed: np.ndarray,
          inputs: CheckInputs, spill: rewrite.Spill | None = None) -> validation.CheckResult:
    """Checker + exact check of `pruned` against the masked original on `inputs`; outputs
    that prove nothing there are backed by the tensors before them (witness)."""
    runs = inputs.runs(model)

    @functools.cache
    def masked() -> tuple[onnx.ModelProto, dict[str, np.ndarray] | None]:
        overrides = rewrite.mask_overrides(model, an, removed, spill)
        if overrides is None:
            return rewrite.masked_model(model, an, removed), None
        return model, overrides

    check = _exact(model, pruned, an, removed, runs, masked, spill)
    check.inputs = inputs.describe()
    return witness.prove(check, model, pruned, masked, an, removed, runs,
                         rewrite.removed_io(an, removed))


def _exact(model: onnx.ModelProto, pruned: onnx.ModelProto, an: Analysis, removed: np.ndarray,
           runs: validation.Runs, masked: noise.Masked,
           spill: rewrite.Spill | None = None) -> validation.CheckResult:
    """Checker + exact check of `pruned` against the masked original (`masked` makes it)."""
    parts = validation.split(pruned)  # shared by the checker and the session
    try:
        validation.structural_check(pruned, parts=parts)
    except ValidationError:
        try:  # a complaint the original shares (a deprecated op, say) is not ours to fix
            validation.structural_check(model)
        except ValidationError:
            pass
        else:
            raise
    io = rewrite.removed_io(an, removed)

    def reference(threads: int = 0):
        overrides = rewrite.mask_overrides(model, an, removed, spill)
        if overrides is None:
            return validation.session(rewrite.masked_model(model, an, removed),
                                      threads=threads)
        known = an.graph.loaded_initializers() if an.graph.model is model else None
        return validation.session(model, overrides=overrides, parts=validation.split(
            model, overrides, known=known), threads=threads)

    floor = noise.sources(masked)  # the reference's float noise, should the static check fail
    if (mapped(model) or mapped(pruned)) and (
            segments.weight_bytes(model) >= segments.SEGMENT_MIN_BYTES):
        # a large model: the same runs, a segment of each graph at a time (see segments)
        del parts
        overrides = rewrite.mask_overrides(model, an, removed, spill)
        ref = (segments.Side(rewrite.masked_model(model, an, removed)) if overrides is None
               else segments.Side(model, overrides))
        return segments.exact_check(ref, segments.Side(pruned), model, io=io, runs=runs)
    if mapped(model) or mapped(pruned):
        # weights memory-mapped (a large model): one model's weights in memory at a time,
        # the reference's runs first, then the candidate's on the same inputs
        del parts
        return validation.exact_check(reference, lambda: validation.session(pruned), model,
                                      io=io, noise=floor, runs=runs)
    # half the cores for each session: exact_check runs the two side by side
    threads = validation.pair_threads()
    candidate = validation.session(pruned, parts=parts, threads=threads)
    del parts
    return validation.exact_check(reference(threads), candidate, model, io=io, noise=floor,
                                  runs=runs)


def failure(check: validation.CheckResult) -> ValidationError:
    """The one-line error for a failed exact check (its worst run), or one that proves
    nothing on its inputs (not a bug: other inputs may prove it)."""
    if check.unproven:
        return ValidationError(f"exact check not proven: {check.unproven}; nothing was "
                               "written")
    return ValidationError(
        f"exact check failed: {check.failure()}; nothing was written. This is a graphprune "
        "bug: please report it with --verbose")


def fidelity(model: onnx.ModelProto, pruned: onnx.ModelProto, an: Analysis,
             removed: np.ndarray, seed: int, inputs: CheckInputs) -> dict:
    """How close `pruned` (without every removed unit, inexact ones included) stays to the
    original, per output (checked by onnx.checker first, not proven), on the inputs of the
    exact check's last run (generated ones seeded apart)."""
    parts = validation.split(pruned)
    validation.structural_check(pruned, parts=parts)
    threads = validation.pair_threads()
    return validation.fidelity(validation.session(model, threads=threads),
                               validation.session(pruned, parts=parts, threads=threads),
                               model, io=rewrite.removed_io(an, removed),
                               feeds=inputs.feeds(model, len(inputs.shapes) - 1, seed + 1))
