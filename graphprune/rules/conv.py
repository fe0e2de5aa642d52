"""Convolutions: output channels are sources; input channels are sinks.

A grouped conv keeps its layout only if every group keeps as many channels as the others.
With at least two input and two output channels per group (ResNeXt, RegNet), the units are
*positions within the groups*: input position j is one unit across all groups (the
producer's channels g·a + j go together), and so is output position j; weights shrink along
both axes and `group` stays. A depthwise conv (one input channel per group) or a group with a
single output channel has no such room: each group is one unit, its input and output channels
share a slot and the `group` attribute shrinks with the number of groups kept.
"""

from __future__ import annotations

import math

import numpy as np

from ..edits import AttrCount
from ..ir import attr
from ..ops import rule
from ..slots import Span
from .common import span_on, weight_problem
from .context import Ctx


def _conv_macs(node, shapes: dict[str, list[int]]) -> int:
    """Output elements × weights per output channel (input channels per group × kernel)."""
    out, w = shapes.get(node.output[0]), shapes.get(node.input[1])
    return math.prod(out) * math.prod(w[1:]) if out and w else 0


def _conv_transpose_macs(node, shapes: dict[str, list[int]]) -> int:
    """Input elements × weights per input channel (output channels per group × kernel)."""
    x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
    return math.prod(x) * math.prod(w[1:]) if x and w else 0


@rule("Conv", macs=_conv_macs)
def conv(ctx: Ctx) -> None:
    _conv(ctx, in_axis=1, out_axis=0)


@rule("ConvTranspose", macs=_conv_transpose_macs)
def conv_transpose(ctx: Ctx) -> None:
    _conv(ctx, in_axis=0, out_axis=1)


def _conv(ctx: Ctx, in_axis: int, out_axis: int) -> None:
    """`in_axis`/`out_axis`: which weight axis holds input/output channels (per group)."""
    w = ctx.const(1)
    if w is None:
        ctx.freeze_inputs(weight_problem(ctx, 1, "conv weight"))
        return
    spans = ctx.spans(0)
    chan = span_on(spans, 1)
    for s in spans:
        if s is not chan or len(s.axes) > 1:
            ctx.freeze(s.ids, "units on a spatial axis of a convolution")
    if chan is not None and len(chan.axes) > 1:
        chan = None
    group = int(attr(ctx.node, "group", 1))
    n_in = w.shape[in_axis] * (group if in_axis == 1 else 1)
    n_out = w.shape[out_axis] * (group if out_axis == 1 else 1)
    per_in, per_out = n_in // group, n_out // group
    if group == 1:
        if chan is not None:
            ctx.member(1, Span((in_axis,), chan.ids), "sink")
        out = ctx.fresh(n_out)
        ctx.member(1, Span((out_axis,), out), "source")
    elif in_axis == 1 and per_in >= 2 and per_out >= 2:
        ins = chan.ids if chan is not None else ctx.fresh(n_in)
        if chan is None:
            ctx.freeze(ins, "grouped conv input carries no units")
        by_position = ins.reshape(group, per_in)
        for j in range(per_in):
            ctx.uf.unify_all(by_position[:, j])
        ctx.member(1, Span((1,), by_position[0]), "sink")
        out = np.tile(ctx.fresh(per_out), group)
        ctx.member(1, Span((0,), out), "source")
    else:
        ins = chan.ids if chan is not None else ctx.fresh(n_in)
        if chan is None:
            ctx.freeze(ins, "grouped conv input carries no units")
        for k in range(group):
            ctx.uf.unify_all(ins[k * per_in:(k + 1) * per_in])
        units = ins[::per_in]
        out = np.repeat(units, per_out)
        # weight axis 0 holds whole groups: output channels (Conv) or input channels (ConvT)
        ctx.member(1, Span((0,), out if out_axis == 0 else ins), "source")
        ctx.edit(AttrCount(ctx.index, "group", units))
    if ctx.input(2):
        ctx.member(2, Span((0,), out), "param")
    ctx.set_out(0, [Span((1,), out)])
