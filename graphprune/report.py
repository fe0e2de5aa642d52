"""The compress report: what was removed, what stayed and why, and the proof."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx

from . import table
from .ir import value_dims
from .reasons import plain
from .table import paragraph, terminal_width


@dataclass
class GroupReport:
    name: str
    units_before: int
    units_after: int
    frozen: int
    reasons: list[str] = field(default_factory=list)
    kind: str = "channels"


@dataclass
class Report:
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    criterion: str = "l1"
    criterion_detail: str = ""
    """How the criterion was applied where not as asked: taylor probed in blocks of units, or
    a fallback to another criterion for some groups (empty: as asked)."""
    ratio: float = 0.0
    aggregate: str = "sum"
    normalize: str = "mean"
    allocation: str = "uniform"
    target: dict[str, Any] = field(default_factory=dict)
    """{metric, value, reached, met}: the fraction of the original asked for and reached."""
    latency_ms: dict[str, float] = field(default_factory=dict)
    """{before, after}: median onnxruntime latency, when a latency target was given."""
    calibration: dict[str, Any] = field(default_factory=dict)
    """{source, samples}: the data the data-driven criteria or the sensitivity scan ran on."""
    sensitivity: dict[str, list[list[float]]] = field(default_factory=dict)
    """Per group: [removed units, relative output error] points of the sensitivity scan."""
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What the user should know before using the output (apply: removed units that were not
    zero in the model given, so the output is not equal to it)."""
    exact_check: dict[str, Any] = field(default_factory=dict)
    scope: list[str] = field(default_factory=list)
    fidelity: dict[str, Any] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    group_details: list[GroupReport] = field(default_factory=list)
    blockers: dict[str, int] = field(default_factory=dict)
    io_changes: list[dict[str, Any]] = field(default_factory=list)
    """Graph inputs/outputs whose declared shapes changed (allow_io_change): {name, kind
    ("input"/"output"), before, after}, dims as ints or symbol names."""
    frozen_reasons: dict[str, int] = field(default_factory=dict)
    """Frozen units counted by reason (graphprune.reasons.summary: no node names)."""
    io_state: list[str] = field(default_factory=list)
    """Graph inputs and outputs that carry state (a KV cache) and kept their shape because
    the run did not allow io changes (`--allow-io-change` would let them shrink)."""
    blocks: dict[str, Any] = field(default_factory=dict)
    """Residual blocks (scope blocks): {criterion, total, removable, removed, and for the
    removed blocks together nodes_removed, params_removed, macs_removed, list}; each block
    with index, label, entry, exit, nodes, params, macs (the block alone), weights, score,
    removed, removable and the reasons it stays (graphprune.blocks.report)."""
    sparsity: dict[str, Any] = field(default_factory=dict)
    """What `sparsify` did (passes/sparsify.py): method, pattern, per-layer sparsity, layers
    left dense and why, fidelity on held-back samples; empty when nothing was sparsified."""
    recovery: dict[str, Any] = field(default_factory=dict)
    """What recovery did (passes/recovery.py): {method, order, ridge, sinks_refit,
    sinks_bias_only {sink: why}, sinks_not_recovered {sink: why}, samples_used,
    samples_held_back, fidelity_before, fidelity_after {output: {rel_l2, cosine, top1}}};
    with method "none", its `reason`."""
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    plan: Any = field(default=None, repr=False, compare=False)
    """The graphprune.plan.Plan of this run (not part of the JSON report)."""

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    def units_by_kind(self) -> dict[str, tuple[int, int]]:
        """Units before and after per kind (channels, heads, ffn, hidden)."""
        kinds: dict[str, tuple[int, int]] = {}
        for d in self.group_details:
            a, b = kinds.get(d.kind, (0, 0))
            kinds[d.kind] = (a + d.units_before, b + d.units_after)
        return kinds

    def to_dict(self) -> dict[str, Any]:
        plan, self.plan = self.plan, None
        try:
            d = asdict(self)
        finally:
            self.plan = plan
        del d["plan"]
        d["params_ratio"] = round(self.params_ratio, 4)
        d["macs_ratio"] = round(self.macs_ratio, 4)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_html(self, title: str = "graphprune report") -> str:
        """The report as one self-contained HTML page (see graphprune.html_report)."""
        from .html_report import render

        return render(self.to_dict(), title=title)

    def render(self, max_groups: int = 12, width: int | None = 0) -> str:
        """The terminal table, fitted to `width` columns (0: the terminal's, or COLUMNS;
        None: every line whole, as `--wide`). Long names and reasons wrap, never cut."""
        width = terminal_width() if width == 0 else width
        out: list[str] = []

        def say(text: str, indent: str = "  ") -> None:
            out.extend(paragraph(text, width, indent))

        for w in self.warnings:
            say(f"warning: {w}")
        out += table.render(SIZES, self._size_rows(), width)
        if self.sparsity and not self.exact_check:  # sparsify alone: no width pruning
            for n in self.notes:
                say(f"note: {n}")
            for line in sparsity_lines(self.sparsity, max_groups):
                say(line, "    " if line.startswith("  ") else "  ")
            say(f"time: {self.seconds:.2f} s")
            return "\n".join(out)
        detail = f" [{self.criterion_detail}]" if self.criterion_detail else ""
        say(f"criterion: {self.criterion}{detail} (aggregate {self.aggregate}, normalise "
            f"{self.normalize}); allocation: {self.allocation}")
        t = self.target
        if t:
            verdict = "met" if t.get("met") else "not met"
            say(f"target: {t['metric']} {t['value']:.3f} of the original, reached "
                f"{t['reached']:.3f} ({verdict}, tolerance {t.get('tolerance', 0.02):.0%})")
        if self.calibration:
            held = self.calibration.get("held_back")
            say(f"calibration: {self.calibration.get('samples')} samples "
                f"({self.calibration.get('source')})" + (
                    f"; {held} more held back for the exact check" if held else ""))
        for n in self.notes:
            say(f"note: {n}")
        g = self.groups
        say(f"groups: {g.get('total', 0)} total, {g.get('pruned', 0)} pruned, "
            f"{g.get('frozen', 0)} frozen")
        pruned = [d for d in self.group_details if d.units_after < d.units_before]
        if pruned:
            rows = [(d.name, d.kind, f"{d.units_before} -> {d.units_after}")
                    for d in pruned[:max_groups]]
            out += table.render(GROUPS, rows, width, indent=2)
            if len(pruned) > max_groups:
                say(f"  ... {len(pruned) - max_groups} more (see --report)")
        kinds = self.units_by_kind()
        if len(kinds) > 1 or "channels" not in kinds:
            say("units by kind: " + ", ".join(
                f"{k} {a} -> {b}" for k, (a, b) in sorted(kinds.items())))
        if self.frozen_reasons:
            say("kept (frozen) units, by reason:")
            top = sorted(self.frozen_reasons.items(), key=lambda kv: -kv[1])[:8]
            rows = [(str(n), plain(r, scope=self.scope, state=self.io_state)) for r, n in top]
            out += table.render(REASONS, rows, width, indent=2)[1:]
        for line in _block_lines(self.blocks, max_groups):
            say(line, "    " if line.startswith("  ") else "  ")
        if self.blockers:
            say("blockers (ops without a rule): "
                + ", ".join(f"{k} ×{v}" for k, v in sorted(self.blockers.items())))
        if self.io_changes:
            say("interface changed (--allow-io-change):")
            rows = [(c["kind"], c["name"], f"{_shape(c['before'])} -> {_shape(c['after'])}")
                    for c in self.io_changes]
            out += table.render(IO, rows, width, indent=2)[1:]
        for line in self._check_lines():
            say(line, "    " if line.startswith("  ") else "  ")
        for line in recovery_lines(self.recovery):
            say(line, "    " if line.startswith("  ") else "  ")
        for name, f in self.fidelity.items():
            say(f"fidelity of the full (inexact) plan, output '{name}': cosine "
                f"{f['cosine']:.4f}, relative L2 {f['rel_l2']:.3e}, top-1 {f['top1']:.3f}")
        for line in sparsity_lines(self.sparsity, max_groups) if self.sparsity else ():
            say(line, "    " if line.startswith("  ") else "  ")
        say(f"time: {self.seconds:.2f} s")
        return "\n".join(out)

    def _size_rows(self) -> list[tuple[str, str, str, str]]:
        rows = [
            ("parameters", _num(self.params_before), _num(self.params_after), self.params_ratio),
            ("MACs", _num(self.macs_before), _num(self.macs_after), self.macs_ratio),
            ("file size", _bytes(self.bytes_before), _bytes(self.bytes_after),
             self.bytes_after / self.bytes_before if self.bytes_before else 1.0),
        ]
        lat = self.latency_ms
        if lat.get("before"):
            rows.append(("latency", f"{lat['before']:.3f} ms", f"{lat['after']:.3f} ms",
                         lat["after"] / lat["before"]))
        return [(a, b, c, f"{r:.3f}") for a, b, c, r in rows]

    def _check_lines(self) -> list[str]:
        ec = self.exact_check
        if not ec:
            return []
        verdict = "passed" if ec.get("passed") else "FAILED"
        out = [f"exact check vs masked original: {verdict} "
               f"(max abs err {ec.get('max_abs_err', 0):.2e})"]
        out += _inputs_lines(ec.get("inputs") or {})
        for v in ec.get("vacuous", ()):
            instead = ", ".join(f"'{t}'" for t in v["compared"])
            out.append(f"  output '{v['output']}' proves nothing on these inputs "
                       f"({v['why']}): " + (f"compared {instead} before it" if instead
                                            else "nothing before it varies"))
        if ec.get("unproven"):
            out.append(f"  not proven: {ec['unproven']}")
        for run in ec.get("runs", ()):
            if run.get("verdict") == "noise floor":
                out.append(f"  output '{run['output']}' (batch {run['batch']}): "
                           f"{run['max_abs_err']:.2e} on a scale of {run['scale']:.2e}, "
                           f"within {_noise_multiple(ec)}× the masked original's own "
                           f"float noise ({run['noise_floor']:.2e}, {run['noise_by']})")
        return out


SIZES = (table.Column(""), table.Column("before", ">"), table.Column("after", ">"),
         table.Column("ratio", ">"))
GROUPS = (table.Column("group", flex=True), table.Column("kind"), table.Column("units", ">"))
REASONS = (table.Column("units", ">"), table.Column("reason", flex=True, words=True))
IO = (table.Column("io"), table.Column("name", flex=True), table.Column("shape", flex=True,
                                                                        words=True))


def _block_lines(blocks: dict[str, Any], most: int) -> list[str]:
    """The removed residual blocks, by name, and how many could go."""
    if not blocks:
        return []
    gone = [b for b in blocks.get("list", []) if b.get("removed")]
    out = [f"blocks: {blocks['removed']} of {blocks['total']} removed ({blocks['removable']} "
           f"removable; scored by {blocks.get('criterion') or 'plan'})"]
    for b in gone[:most]:
        score = f"  score {b['score']:.4g}" if b.get("score") is not None else ""
        out.append(f"  #{b['index']:<3} {b['label']:<53}{_num(b['params']):>8} params{score}")
    if len(gone) > most:
        out.append(f"  ... {len(gone) - most} more (see --report)")
    return out


def _inputs_lines(inputs: dict) -> list[str]:
    """Where the exact check's inputs came from: the source, each run's shapes, and why."""
    if not inputs:
        return []
    runs = " | ".join(", ".join(f"{k} {'x'.join(map(str, v)) if v else 'scalar'}"
                                for k, v in shapes.items()) for shapes in inputs["shapes"])
    return ([f"  inputs ({inputs['source']}): {runs}"]
            + [f"  inputs: {n}" for n in inputs.get("notes", ())])


def sparsity_lines(s: dict[str, Any], max_layers: int = 12) -> list[str]:
    """The terminal lines of a `sparsity` record."""
    how = f"{s['method']}, {s['pattern']} (sparsity {s['sparsity']:.3f})"
    if s.get("sequential"):
        how += ", sequential"
    out = [f"sparsify: {how}; scope {', '.join(s.get('scope', []))}"]
    cal = s.get("calibration")
    if cal:
        out.append(f"calibration: {cal.get('samples')} samples ({cal.get('source')})")
    layers, skipped = s.get("layers", []), s.get("skipped", [])
    out.append(f"layers: {len(layers)} sparsified, {len(skipped)} left dense")
    if layers:
        out.append(f"  {'layer':<44}{'op':<8}{'shape':>14}{'sparsity':>10}")
        for r in layers[:max_layers]:
            out.append(f"  {r['node']:<44}{r['op']:<8}"
                       f"{'x'.join(map(str, r['shape'])):>14}{r['sparsity']:>10.3f}")
        if len(layers) > max_layers:
            out.append(f"  ... {len(layers) - max_layers} more (see --report)")
    for r in skipped[:max_layers]:
        out.append(f"  dense: {r['node']}: {r['reason']}")
    if len(skipped) > max_layers:
        out.append(f"  ... {len(skipped) - max_layers} more left dense (see --report)")
    t = s.get("totals", {})
    if t.get("weights"):
        out.append(f"zeros: {_num(t['zeros'])} of the sparsified layers' {_num(t['weights'])} "
                   f"weights ({t['sparsity']:.3f}), {t['model_sparsity']:.3f} of all "
                   f"{_num(t['params'])} parameters; pattern verified in every sparsified "
                   "weight of the written model")
    out.append(s.get("check", ""))
    held = s.get("holdout", {})
    for name, f in s.get("fidelity", {}).items():
        out.append(f"fidelity vs the original on {held.get('samples')} held-back samples "
                   f"({held.get('source')}), output '{name}': cosine {f['cosine']:.4f}, "
                   f"relative L2 {f['rel_l2']:.3e}, top-1 {f['top1']:.3f}")
    return out


def recovery_lines(rec: dict[str, Any]) -> list[str]:
    """The terminal lines on recovery: what was done to how many sinks, on how many samples,
    and the fidelity on held-back samples before → after."""
    if not rec:
        return []
    if rec["method"] == "none":
        return [f"recovery: none ({rec.get('reason', '')})"]
    if rec.get("reason"):
        return [f"recovery: {rec['method']}: {rec['reason']}"]
    how = rec["method"] + (f" ({rec['order']})" if rec.get("order") else "")
    refit, bias = len(rec.get("sinks_refit", [])), len(rec.get("sinks_bias_only", {}))
    parts = [f"{refit} layers refit"] if rec["method"] == "refit" else []
    if bias:
        parts.append(f"{bias} bias-compensated only" if rec["method"] == "refit"
                     else f"{bias} layers bias-compensated")
    if rec.get("sinks_not_recovered"):
        parts.append(f"{len(rec['sinks_not_recovered'])} left as they were")
    out = [f"recovery: {how}: {', '.join(parts) or 'no layer to update'}; "
           f"{rec.get('samples_used', 0)} calibration samples, "
           f"{rec.get('samples_held_back', 0)} held back"]
    if rec["method"] == "refit" and bias:
        for sink, why in list(rec["sinks_bias_only"].items())[:3]:
            out.append(f"  bias only: {sink}: {why}")
    for sink, why in list(rec.get("sinks_not_recovered", {}).items())[:3]:
        out.append(f"  not recovered: {sink}: {why}")
    before, after = rec.get("fidelity_before", {}), rec.get("fidelity_after", {})
    for name in after:
        b, a = before.get(name, {}), after[name]
        line = (f"  held-back fidelity '{name}': cosine {b.get('cosine', 0):.4f} -> "
                f"{a['cosine']:.4f}, relative L2 {b.get('rel_l2', 0):.3e} -> {a['rel_l2']:.3e}")
        if "top1" in a:
            line += f", top-1 {b.get('top1', 0):.3f} -> {a['top1']:.3f}"
        out.append(line)
    return out


def io_changes(model: onnx.ModelProto, pruned: onnx.ModelProto) -> list[dict[str, Any]]:
    """Graph inputs and outputs whose declared shapes changed, old → new (`io_changes`)."""
    def shapes(m: onnx.ModelProto) -> dict[tuple[str, str], list]:
        inits = {t.name for t in m.graph.initializer}
        return {(kind, v.name): value_dims(v) or []
                for kind, values in (("input", m.graph.input), ("output", m.graph.output))
                for v in values if v.name not in inits}

    before, after = shapes(model), shapes(pruned)
    return [{"name": name, "kind": kind, "before": dims, "after": after[(kind, name)]}
            for (kind, name), dims in before.items()
            if (kind, name) in after and after[(kind, name)] != dims]


def _noise_multiple(check: dict) -> str:
    """The noise multiple an exact check used, as printed."""
    return f"{check.get('tolerance', {}).get('noise_multiple', 0):g}"


def _shape(dims: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _num(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _bytes(n: int) -> str:
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"
