"""Compensated trials: a unit's removal measured after recovery's bias compensation.

The sensitivity scan measures a *trial* (a group's lowest-scored units removed) as the output
error of the model with those units masked. With recovery on, the written model does not leave
the sinks of removed units as they were: `--recover bias` adds the removed inputs' mean
contribution to every sink's bias, b += W[:, P]·E[x_P], and a refit starts from there and does
better. A group whose units carry mostly a constant (a large mean, little variation) costs
much when zeroed and little once compensated; measured plainly, the scan protects exactly the
groups recovery repairs best.

`Compensation` gives each trial that compensation, recovery's own: the same sinks
(`recovery.find_sinks`, `recovery.prepare_sink`), the same input means (`moments.collect`
over the same calibration samples: per kernel tap of the padded input for a convolution) and
the same bias change (`refit.bias_delta`). The gate probe applies it as a *shift* of each
sink's output (`probe.py`): gating the removed inputs to 0 and adding W[:, P]·E[x_P] to the
sink's output is, term for term, the masked sink with the compensated bias, so a trial is
exactly the model `--recover bias` would write for that removal alone (zero padding included;
no approximation by substituting means for activations, which differs at padded borders).
Under `--recover refit` it is the refit's λ = ∞ candidate (bias alone), which the refit
usually improves on. Each trial removes one group's units: how compensations of several
groups interact (a sink's kept inputs shift when upstream groups lose units, and recovery's
means are the original's) is not measured.

Cost: one pass over the calibration samples for the sinks' input means (first moments only;
a conv's input unfolded batch by batch), and per trial a product of the removed columns of
each sink's weight with their means. Sinks that recovery leaves as they are (inexact units'
sinks, ops other than Conv/Gemm/MatMul, a computed bias, ...) stay uncompensated in the trials
too: `skipped` says which and why.
"""

from __future__ import annotations

import numpy as np
import onnx

from graphprune.analysis import Analysis, Member
from graphprune.context import RunContext
from graphprune.errors import stage

from . import moments, prove, recovery, refit
from .calibration import Calibration


class Compensation:
    """Bias compensation of trials that remove units among `units` (roots)."""

    def __init__(self, model: onnx.ModelProto, an: Analysis, units: list[int],
                 calib: Calibration, run: RunContext) -> None:
        self.an = an
        self.exact = ~prove.inexact_roots(an)
        removed = np.zeros(len(an.roots), dtype=bool)
        removed[units] = True
        sinks, self.skipped = recovery.find_sinks(an, removed & self.exact)
        prep = recovery.Prepared(model, an.graph)  # recovery's checks; the copy is dropped
        self.sinks: list[recovery.Sink] = []
        self.tails: dict[int, tuple[int, ...]] = {}
        for s in sinks:
            why = recovery.prepare_sink(prep, s, refitting=False)
            tail = output_tail(an, s.node, s.site)
            if why or tail is None:
                self.skipped[s.name] = why or "the rank of its output is not known"
                continue
            self.sinks.append(s)
            self.tails[s.node] = tail
        members = recovery.sink_members(an)
        self.members: dict[int, list[Member]] = {s.node: members[(s.node, s.site.weight)]
                                                 for s in self.sinks}
        self.weights = {s.node: moments.weight_rows(s.site, s.w_like) for s in self.sinks}
        self.means = _means(model, self.sinks, calib, run)
        self.samples = calib.samples

    def shifts(self, roots: list[int]) -> dict[int, np.ndarray]:
        """Sink node → W[:, P]·E[x_P] over its outputs, for the trial removing `roots`."""
        removed = np.zeros(len(self.an.roots), dtype=bool)
        removed[roots] = True
        removed &= self.exact
        out = {}
        for s in self.sinks:
            gone = recovery.gone_inputs(self.an, self.members[s.node], removed)
            if gone.any():
                keep = np.repeat(~gone, s.site.taps)
                out[s.node] = refit.bias_delta(self.weights[s.node], self.means[s.node],
                                               keep).reshape(-1)
        return out

    def describe(self) -> str:
        """What the trials were compensated with, for the scan's report line."""
        text = (f"trials compensated (each sink's bias += W[:, P]·E[x_P], as --recover bias "
                f"writes it: {len(self.sinks)} sinks, input means of {self.samples} samples)")
        if self.skipped:
            shown = "; ".join(f"{k}: {v}" for k, v in list(self.skipped.items())[:3])
            more = len(self.skipped) - 3
            text += (f"; {len(self.skipped)} sinks left uncompensated as recovery leaves them "
                     f"({shown}{f'; {more} more' if more > 0 else ''})")
        return text


def output_tail(an: Analysis, node: int, site: moments.Site) -> tuple[int, ...] | None:
    """The shape after the batch axis that spreads one value per output feature over the
    sink's output: (O, 1, …) for a conv, (…, 1, O) for MatMul and Gemm."""
    rank = an.graph.rank(an.graph.nodes[node].output[0])
    if rank is None or rank < 2:
        return None
    if site.op == "Conv":
        return (site.outputs, *[1] * (rank - 2))
    return (*[1] * (rank - 2), site.outputs)


@stage("sensitivity scan: input means")
def _means(model: onnx.ModelProto, sinks: list[recovery.Sink], calib: Calibration,
           run: RunContext) -> dict[int, np.ndarray]:
    """E[x] of every sink's input rows ([G, d]), over all the calibration samples."""
    if not sinks:
        return {}
    run.say(f"sensitivity scan: input means of {len(sinks)} layers")
    got = moments.collect(model, [s.site for s in sinks], calib.batches(), second=False,
                          budget=1 << 62, progress=run.say)
    return {s.node: got.moments[s.site.node].mean() for s in sinks}
