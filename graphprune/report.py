"""The compress report: what was removed, what stayed and why, and the proof."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx

from .ir import value_dims


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

    def render(self, max_groups: int = 12) -> str:
        """A compact terminal table."""
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
        out = [f"{'':<12}{'before':>12}{'after':>12}{'ratio':>8}"]
        out += [f"{a:<12}{b:>12}{c:>12}{r:>8.3f}" for a, b, c, r in rows]
        out.append(f"criterion: {self.criterion} (aggregate {self.aggregate}, normalise "
                   f"{self.normalize}); allocation: {self.allocation}")
        t = self.target
        if t:
            verdict = "met" if t.get("met") else "not met"
            out.append(f"target: {t['metric']} {t['value']:.3f} of the original, reached "
                       f"{t['reached']:.3f} ({verdict}, tolerance {t.get('tolerance', 0.02):.0%})")
        if self.calibration:
            out.append(f"calibration: {self.calibration.get('samples')} samples "
                       f"({self.calibration.get('source')})")
        out += [f"note: {n}" for n in self.notes]
        g = self.groups
        out.append(f"groups: {g.get('total', 0)} total, {g.get('pruned', 0)} pruned, "
                   f"{g.get('frozen', 0)} frozen")
        pruned = [d for d in self.group_details if d.units_after < d.units_before]
        if pruned:
            out.append(f"  {'group':<40}{'kind':<10}{'units':>14}")
            for d in pruned[:max_groups]:
                out.append(f"  {_fit(d.name, 39):<40}{d.kind:<10}{d.units_before:>6} -> "
                           f"{d.units_after:<6}")
            if len(pruned) > max_groups:
                out.append(f"  ... {len(pruned) - max_groups} more (see --report)")
        kinds = self.units_by_kind()
        if len(kinds) > 1 or "channels" not in kinds:
            out.append("units by kind: " + ", ".join(
                f"{k} {a} -> {b}" for k, (a, b) in sorted(kinds.items())))
        if self.frozen_reasons:
            out.append("kept (frozen) units, by reason:")
            for reason, n in sorted(self.frozen_reasons.items(), key=lambda kv: -kv[1])[:8]:
                out.append(f"  {n:>6}  {reason}")
        if self.blockers:
            out.append("blockers (ops without a rule): "
                       + ", ".join(f"{k} ×{v}" for k, v in sorted(self.blockers.items())))
        if self.io_changes:
            out.append("interface changed (--allow-io-change):")
            for c in self.io_changes:
                out.append(f"  {c['kind']:<7}{c['name'][:36]:<37}{_shape(c['before'])} -> "
                           f"{_shape(c['after'])}")
        ec = self.exact_check
        if ec:
            verdict = "passed" if ec.get("passed") else "FAILED"
            out.append(f"exact check vs masked original: {verdict} "
                       f"(max abs err {ec.get('max_abs_err', 0):.2e})")
            for run in ec.get("runs", ()):
                if run.get("verdict") == "noise floor":
                    out.append(f"  output '{run['output']}' (batch {run['batch']}): "
                               f"{run['max_abs_err']:.2e} on a scale of {run['scale']:.2e}, "
                               f"within {_noise_multiple(ec)}× the masked original's own "
                               f"float noise ({run['noise_floor']:.2e}, {run['noise_by']})")
        out += recovery_lines(self.recovery)
        for name, f in self.fidelity.items():
            out.append(f"fidelity of the full (inexact) plan, output '{name}': cosine "
                       f"{f['cosine']:.4f}, relative L2 {f['rel_l2']:.3e}, top-1 {f['top1']:.3f}")
        out.append(f"time: {self.seconds:.2f} s")
        return "\n".join(out)


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
            out.append(f"  bias only: {_fit(sink, 40)}: {why}")
    for sink, why in list(rec.get("sinks_not_recovered", {}).items())[:3]:
        out.append(f"  not recovered: {_fit(sink, 40)}: {why}")
    before, after = rec.get("fidelity_before", {}), rec.get("fidelity_after", {})
    for name in after:
        b, a = before.get(name, {}), after[name]
        line = (f"  held-back fidelity '{_fit(name, 24)}': cosine {b.get('cosine', 0):.4f} -> "
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


def _fit(name: str, width: int) -> str:
    """Long node names keep their end (the layer and op), which tells groups apart."""
    return name if len(name) <= width else "…" + name[-(width - 1):]
