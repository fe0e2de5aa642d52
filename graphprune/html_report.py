"""The report as one self-contained HTML page: summary, charts, the table of groups.

Input is the report's dict form (`Report.to_dict()`, the same data as the JSON report), so the
page depends on nothing but that dict. The page loads nothing: no script, no font, no style
sheet, no image from anywhere; charts are inline SVG written here.

Why no plotting library: the charts are bars, one polyline per curve and a few ticks, which
take a few lines of SVG each; matplotlib (the usual choice) would be a 40 MB dependency of a
pruning library for that, would embed charts as images (no hover text, no text selection, blurry
when zoomed, larger files) and would need its own font and backend settings to give the same
bytes in every process. Plain SVG strings are deterministic by construction: the same dict
gives the same page, byte for byte.

A section is one function `(report dict) -> HTML string or None`; `None` (the report has no
such data) leaves the section out. `SECTIONS` lists them in page order: a new section is a new
function added there.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable
from typing import Any

Section = Callable[[dict[str, Any]], "str | None"]

KIND_COLORS = {"channels": "#4c78a8", "heads": "#e45756", "ffn": "#54a24b",
               "hidden": "#b279a2", "blocks": "#f58518"}
OTHER_COLOR = "#9d755d"
NAME_CHARS = 44
"""Group names longer than this are cut (keeping their end) in charts; hover shows them."""


def render(report: dict[str, Any], title: str = "graphprune report") -> str:
    """The whole page for a report dict."""
    body = "\n".join(s for s in (section(report) for section in SECTIONS) if s)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<header><h1>{_e(title)}</h1>{_verdict(report)}</header>\n<main>\n{body}\n"
            f"</main>\n<footer>written by graphprune</footer>\n</body>\n</html>\n")


# -- sections ---------------------------------------------------------------------------------
def summary(r: dict[str, Any]) -> str | None:
    """Parameters, MACs, file size (and latency) before → after, as cards with a meter."""
    t = r.get("target") or {}
    goal = {t.get("metric"): t.get("value")}
    lat = r.get("latency_ms") or {}
    cards = [_size_card("Parameters", r.get("params_before"), r.get("params_after"), _num,
                        goal.get("params")),
             _size_card("MACs", r.get("macs_before"), r.get("macs_after"), _num,
                        goal.get("macs")),
             _size_card("File size", r.get("bytes_before"), r.get("bytes_after"), _bytes),
             _size_card("Latency", lat.get("before"), lat.get("after"),
                        lambda v: f"{v:.3g} ms", goal.get("latency"))]
    cards = [c for c in cards if c]
    if not cards:
        return None
    return _section("summary", "Summary", f"<div class=\"cards\">{''.join(cards)}</div>"
                    + _facts(r))


def widths(r: dict[str, Any]) -> str | None:
    """Units kept per group, one horizontal bar per group in graph order."""
    groups = r.get("group_details") or []
    if not groups:
        return None
    kinds = list(dict.fromkeys(g.get("kind", "channels") for g in groups))
    legend = "".join(f"<span><i style=\"background:{_color(k)}\"></i>{_e(k)}</span>"
                     for k in kinds)
    legend += ("<span><i class=\"hatch\"></i>frozen (kept: cannot be removed)</span>"
               "<span><i class=\"removed\"></i>removed</span>")
    g = r.get("groups") or {}
    lead = (f"<p class=\"lead\">{g.get('pruned', 0)} of {g.get('total', len(groups))} groups "
            f"pruned, {g.get('frozen', 0)} frozen whole; each bar is one group's units (100% = "
            f"its width before), in graph order.</p>")
    return _section("widths", "Widths per group",
                    lead + f"<div class=\"legend\">{legend}</div>"
                    + _scroll(_width_chart(groups), len(groups) > 60))


def sensitivity(r: dict[str, Any]) -> str | None:
    """The sensitivity scan's curves: output error against units removed, one chart per
    group on a shared error scale, with the removal chosen marked."""
    curves = r.get("sensitivity") or {}
    if not curves:
        return None
    details = {g["name"]: g for g in r.get("group_details") or []}
    top = max((e for pts in curves.values() for _, e in pts if _finite(e)), default=0.0)
    top = _nice(top)
    charts = "".join(_curve_card(name, pts, details.get(name), top)
                     for name, pts in curves.items())
    lead = ("<p class=\"lead\">Relative L2 error of the outputs when only this group loses its "
            "lowest-scored units (measured); the line marks how many were removed. All charts "
            f"share the error scale (0 to {top:.3g}).</p>")
    return _section("sensitivity", "Sensitivity",
                    lead + _scroll(f"<div class=\"multiples\">{charts}</div>", len(curves) > 24))


def fidelity(r: dict[str, Any]) -> str | None:
    """How close the full (inexact) plan stays to the original, per output."""
    fid = r.get("fidelity") or {}
    if not fid:
        return None
    rows = [[_e(name), _f(f.get("cosine"), 4), _meter(f.get("cosine")), _sci(f.get("rel_l2")),
             _f(f.get("top1"), 3)] for name, f in fid.items()]
    lead = ("<p class=\"lead\">The plan removes inexact (hidden-size) units: the exact check "
            "covers the exact part; these figures compare the full plan's outputs to the "
            "original's.</p>")
    return _section("fidelity", "Fidelity", lead + _table(
        [("output", "name"), ("cosine", "num"), ("", ""), ("relative L2", "num"),
         ("top-1 agreement", "num")], rows, "compact"))


def recovery(r: dict[str, Any]) -> str | None:
    """What recovery updated, and the fidelity on held-back samples before → after."""
    rec = r.get("recovery") or {}
    if rec.get("method", "none") == "none" or rec.get("reason"):
        return None
    how = rec["method"] + (f" ({rec['order']})" if rec.get("order") else "")
    lead = (f"<p class=\"lead\">Recovery by {_e(how)}: {len(rec.get('sinks_refit') or [])} "
            f"layers refit, {len(rec.get('sinks_bias_only') or {})} bias-compensated only, "
            f"{len(rec.get('sinks_not_recovered') or {})} left as they were; statistics of "
            f"{_e(rec.get('samples_used'))} calibration samples, fidelity against the "
            f"original on {_e(rec.get('samples_held_back'))} samples held back from them.</p>")
    before, after = rec.get("fidelity_before") or {}, rec.get("fidelity_after") or {}
    rows = []
    for name, a in after.items():
        b = before.get(name, {})
        rows.append([_e(name), _f(b.get("cosine"), 4), _f(a.get("cosine"), 4),
                     _meter(a.get("cosine")), _sci(b.get("rel_l2")), _sci(a.get("rel_l2")),
                     _f(b.get("top1", "–"), 3), _f(a.get("top1", "–"), 3)])
    table = _table([("output", "name"), ("cosine before", "num"), ("after", "num"),
                    ("", ""), ("relative L2 before", "num"), ("after", "num"),
                    ("top-1 before", "num"), ("after", "num")], rows, "compact") if rows else ""
    why = {**(rec.get("sinks_bias_only") or {}), **(rec.get("sinks_not_recovered") or {})}
    if rec["method"] == "bias":
        why = dict(rec.get("sinks_not_recovered") or {})
    listed = _table([("layer", "name"), ("not refit because", "why")],
                    [[_breakable(k), _e(v)] for k, v in why.items()], "compact") if why else ""
    return _section("recovery", "Recovery", lead + table + _scroll(listed, len(why) > 16,
                                                                     tall=False))


def group_table(r: dict[str, Any]) -> str | None:
    """Every group: kind, units before/after, frozen units and why."""
    groups = r.get("group_details") or []
    if not groups:
        return None
    rows = []
    for i, g in enumerate(groups, 1):
        before, after = g.get("units_before", 0), g.get("units_after", 0)
        reasons = "".join(f"<div>{_e(x)}</div>" for x in g.get("reasons") or [])
        rows.append([f"<span class=\"dim\">{i}</span>", _breakable(g["name"]),
                     _kind_tag(g.get("kind", "")), str(before), str(after),
                     _pct(after, before), _dim_zero(g.get("frozen", 0)),
                     reasons or "<span class=\"dim\">–</span>"])
    table = _table([("#", "num"), ("group", "name"), ("kind", ""), ("before", "num"),
                    ("after", "num"), ("kept", "num"), ("frozen", "num"),
                    ("frozen because", "why")], rows, "groups")
    return _section("groups", "Groups", _scroll(table, len(groups) > 25, tall=False)
                    + _kinds_line(groups))


def blocks(r: dict[str, Any]) -> str | None:
    """Residual blocks (scope blocks): each with its names, size, score and fate."""
    b = r.get("blocks") or {}
    rows_in = b.get("list") or []
    if not rows_in:
        return None
    top = max((x.get("score") or 0 for x in rows_in), default=0) or 1.0
    rows = []
    for x in rows_in:
        score = x.get("score")
        fate = (f"<span class=\"tag\" style=\"--c:{_color('blocks')}\">removed</span>"
                if x.get("removed") else
                "".join(f"<div>{_e(w)}</div>" for w in x.get("reasons") or [])
                or "<span class=\"dim\">kept</span>")
        rows.append([str(x["index"]), _e(x["label"]),
                     f"{_breakable(x['entry'])} → {_breakable(x['exit'])}",
                     str(x.get("nodes", 0)), _num(x.get("params", 0)),
                     _num(x["macs"]) if "macs" in x else "–",
                     _sci(score) if score is not None else "–",
                     _meter(score / top if _finite(score) else None), fate])
    lead = (f"<p class=\"lead\">{b.get('removed', 0)} of {b.get('total', len(rows))} residual "
            f"blocks removed ({b.get('removable', 0)} removable), scored by "
            f"{_e(b.get('criterion') or 'the plan')}; a removed block's Add became the identity "
            "and its nodes and weights went, proven against the original with the block's "
            "branch multiplied by zero.</p>")
    table = _table([("#", "num"), ("block", "name"), ("input → output", "name"),
                    ("nodes", "num"), ("params", "num"), ("MACs", "num"), ("score", "num"),
                    ("", "bar"), ("removed / kept because", "why")], rows, "groups")
    return _section("blocks", "Residual blocks", lead + _scroll(table, len(rows) > 25,
                                                                tall=False))


def frozen_reasons(r: dict[str, Any]) -> str | None:
    """Why units were kept, by reason, with the number of units each reason froze."""
    reasons = r.get("frozen_reasons") or {}
    return _count_table("frozen-reasons", "Frozen units by reason", "reason", "units",
                        reasons) if reasons else None


def blockers(r: dict[str, Any]) -> str | None:
    """Ops without a rule (they freeze what they touch), by op type."""
    b = r.get("blockers") or {}
    return _count_table("blockers", "Blockers by op type", "op type (no rule)", "nodes",
                        b) if b else None


def io_changes(r: dict[str, Any]) -> str | None:
    """Graph inputs/outputs whose declared shapes changed (--allow-io-change)."""
    changes = r.get("io_changes") or []
    if not changes:
        return None
    rows = [[_e(c.get("kind", "")), _e(c.get("name", "")), _shape(c.get("before")),
             _shape(c.get("after"))] for c in changes]
    return _section("io-changes", "Interface changes (--allow-io-change)", _table(
        [("", ""), ("name", "name"), ("before", "name"), ("after", "name")], rows))


def exact_check_runs(r: dict[str, Any]) -> str | None:
    """Each run of the exact check, one row per (batch, output); columns are whatever the
    runs record (error, output scale, tolerances), the verdict last."""
    runs = (r.get("exact_check") or {}).get("runs") or []
    if not runs:
        return None
    keys = [k for k in dict.fromkeys(k for run in runs for k in run) if k != "passed"]
    cols = [(RUN_LABELS.get(k, k.replace("_", " ")), "name" if k == "output" else "num")
            for k in keys]
    rows = [[_value(run.get(k)) for k in keys] + [_ok(run.get("passed"))] for run in runs]
    table = _table([*cols, ("", "")], rows, "compact")
    return _section("exact-check", "Exact check runs", _scroll(table, len(runs) > 16,
                                                               tall=False))


RUN_LABELS = {"max_abs_err": "max abs error", "scale": "output scale",
              "for": "compared for output"}


def check_inputs(r: dict[str, Any]) -> str | None:
    """What the exact check ran on (each run's shapes, where they came from and why), and
    what it compared for outputs that proved nothing there."""
    ec = r.get("exact_check") or {}
    given = ec.get("inputs") or {}
    if not given:
        return None
    runs = "".join(
        "<li>" + _e(", ".join(f"{k} {'x'.join(map(str, v)) if v else 'scalar'}"
                              for k, v in shapes.items())) + "</li>"
        for shapes in given.get("shapes") or [])
    why = [*(given.get("notes") or []),
           *(f"output '{v['output']}' proves nothing on these inputs ({v['why']}): "
             + (f"compared {', '.join(repr(t) for t in v['compared'])} before it"
                if v.get("compared") else "nothing before it varies")
             for v in ec.get("vacuous") or []),
           *([f"not proven: {ec['unproven']}"] if ec.get("unproven") else [])]
    notes_html = "".join(f"<li>{_e(n)}</li>" for n in why)
    return _section("check-inputs", f"Exact check inputs: {given.get('source', '')}",
                    f"<ol>{runs}</ol>" + (f"<ul>{notes_html}</ul>" if notes_html else ""))


def notes(r: dict[str, Any]) -> str | None:
    items = r.get("notes") or []
    if not items:
        return None
    return _section("notes", "Notes", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in items)
                    + "</ul>")


def timings(r: dict[str, Any]) -> str | None:
    """Seconds per stage, as one stacked bar."""
    t = {k: v for k, v in (r.get("timings") or {}).items() if _finite(v) and v > 0}
    if not t:
        return None
    return _section("timings", f"Time: {_f(r.get('seconds') or sum(t.values()), 2)} s",
                    _timing_bar(t))


def sparsity(r: dict[str, Any]) -> str | None:
    """What sparsify did: settings, fidelity on held-back samples, each layer's sparsity
    (and SparseGPT's reconstruction error), the layers left dense and why."""
    sp = r.get("sparsity") or {}
    if not sp:
        return None
    t, held = sp.get("totals") or {}, sp.get("holdout") or {}
    how = (f"{_e(sp.get('method'))}, pattern {_e(sp.get('pattern'))}, sparsity "
           f"{_f(sp.get('sparsity'), 3)}" + (", sequential" if sp.get("sequential") else ""))
    lead = (f"<p class=\"lead\">{how}: {_num(t.get('zeros', 0))} of the sparsified layers' "
            f"{_num(t.get('weights', 0))} weights are zero ({_f(t.get('sparsity'), 3)}; "
            f"{_f(t.get('model_sparsity'), 3)} of all parameters), the pattern verified in "
            f"every one as written. {_e(sp.get('check', ''))}.</p>")
    fid = [[_e(n), _f(f.get("cosine"), 4), _meter(f.get("cosine")), _sci(f.get("rel_l2")),
            _f(f.get("top1"), 3)] for n, f in (sp.get("fidelity") or {}).items()]
    body = lead + (f"<p>Fidelity against the original on {held.get('samples')} held-back "
                   f"samples ({_e(held.get('source'))}):</p>" + _table(
                       [("output", "name"), ("cosine", "num"), ("", ""),
                        ("relative L2", "num"), ("top-1 agreement", "num")], fid, "compact")
                   if fid else "")
    layers = sp.get("layers") or []
    err = any("error" in x for x in layers)
    rows = [[_breakable(x["node"]), _e(x["op"]), _shape(x.get("shape")),
             _f(x.get("sparsity"), 3), _meter(x.get("sparsity"))]
            + ([_sci(x.get("error"))] if err else []) for x in layers]
    cols = [("layer", "name"), ("op", ""), ("shape", "num"), ("sparsity", "num"), ("", "")]
    body += _scroll(_table(cols + ([("reconstruction error", "num")] if err else []), rows,
                           "compact"), len(layers) > 16, tall=False)
    dense = sp.get("skipped") or []
    if dense:
        body += f"<p>Left dense ({len(dense)}):</p>" + _scroll(_table(
            [("layer", "name"), ("why", "why")],
            [[_breakable(x["node"]), _e(x["reason"])] for x in dense], "compact"),
            len(dense) > 16, tall=False)
    return _section("sparsity", "Sparsity", body)


SECTIONS: list[Section] = [summary, widths, sensitivity, fidelity, recovery, sparsity,
                           blocks, group_table, frozen_reasons, blockers, io_changes, notes,
                           check_inputs, exact_check_runs, timings]


# -- summary parts ----------------------------------------------------------------------------
def _verdict(r: dict[str, Any]) -> str:
    ec = r.get("exact_check") or {}
    if not ec and r.get("sparsity"):
        return ("<div class=\"verdict pass\"><b>sparsity pattern verified</b><span>"
                f"{_e(r['sparsity'].get('check', ''))}</span></div>")
    if not ec:
        return ""
    ok = bool(ec.get("passed"))
    word = "exact check passed" if ok else "exact check FAILED"
    return (f"<div class=\"verdict {'pass' if ok else 'fail'}\"><b>{word}</b>"
            f"<span>vs masked original · max abs error {_sci(ec.get('max_abs_err'))} · "
            f"{len(ec.get('runs') or [])} runs</span></div>")


def _size_card(label: str, before: float | None, after: float | None,
               fmt: Callable[[float], str], goal: float | None = None) -> str:
    """After, before, the ratio as a meter; a target's fraction as a mark on it."""
    if not before or after is None or not _finite(before) or not _finite(after):
        return ""
    ratio = after / before
    aim = (f" <span class=\"dim\">· target ×{goal:.3f}</span>" if _finite(goal) else "")
    return (f"<div class=\"card\"><div class=\"label\">{label}</div>"
            f"<div class=\"big\">{_e(fmt(after))}</div><div class=\"dim\">from "
            f"{_e(fmt(before))}</div>{_meter(ratio, wide=True, mark=goal)}<div class=\"ratio\">"
            f"<b>×{ratio:.3f}</b> <span class=\"dim\">({_change(ratio)})</span>{aim}</div></div>")


def _facts(r: dict[str, Any]) -> str:
    """Settings of the run as a definition list (only what the report holds)."""
    facts = []
    if r.get("criterion"):
        extra = ", ".join(f"{k} {r[k]}" for k in ("aggregate", "normalize") if r.get(k))
        detail = f" [{r['criterion_detail']}]" if r.get("criterion_detail") else ""
        facts.append(("criterion", f"{r['criterion']}{detail}" + (f" ({extra})" if extra
                                                                   else "")))
    t = r.get("target") or {}
    if r.get("allocation"):
        ratio = "" if t else f", ratio {r.get('ratio', 0):g}"  # a target replaces the ratio
        facts.append(("allocation", f"{r['allocation']}{ratio}"))
    if t:
        met = "met" if t.get("met") else "not met"
        facts.append(("target", f"{t.get('metric')} {_f(t.get('value'), 3)} of the original, "
                      f"reached {_f(t.get('reached'), 3)} ({met}, tolerance "
                      f"{_f(100 * (t.get('tolerance') or 0.02), 0)}%)"))
    if r.get("scope"):
        facts.append(("scope", ", ".join(r["scope"])))
    cal = r.get("calibration") or {}
    if cal:
        facts.append(("calibration", f"{cal.get('samples')} samples ({cal.get('source')})"))
    rec = r.get("recovery") or {}
    if rec:
        facts.append(("recovery", rec["method"] + (f" ({rec['order']})" if rec.get("order")
                                                   else "")
                      + (f": {rec['reason']}" if rec.get("reason") else "")))
    if not facts:
        return ""
    return "<dl class=\"facts\">" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>"
                                            for k, v in facts) + "</dl>"


def _kinds_line(groups: list[dict[str, Any]]) -> str:
    """Units before → after summed per kind."""
    kinds: dict[str, list[int]] = {}
    for g in groups:
        k = kinds.setdefault(g.get("kind", ""), [0, 0])
        k[0] += g.get("units_before", 0)
        k[1] += g.get("units_after", 0)
    parts = [f"{_kind_tag(k)} {a} → {b} ({_pct(b, a)})" for k, (a, b) in kinds.items()]
    return "<p class=\"kinds\">units by kind: " + " · ".join(parts) + "</p>"


# -- charts -----------------------------------------------------------------------------------
ROW, LABEL_W, BAR_W, NUM_W = 18, 330, 430, 150


def _width_chart(groups: list[dict[str, Any]]) -> str:
    """One row per group (see _width_row), with the hatch pattern of frozen units."""
    defs = ("<defs><pattern id=\"gp-hatch\" width=\"5\" height=\"5\" "
            "patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">"
            "<rect width=\"5\" height=\"5\" class=\"hatch-bg\"/>"
            "<line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"5\" class=\"hatch-line\"/></pattern></defs>")
    rows = "".join(_width_row(i, g) for i, g in enumerate(groups))
    return _svg("widths", LABEL_W + BAR_W + NUM_W, max(len(groups), 1) * ROW, defs + rows)


def _width_row(i: int, g: dict[str, Any]) -> str:
    """Row i: the name (cut at the front), a bar of the group's units before (frozen units
    hatched, other kept units in the kind's colour, removed units the light rest of the
    track), the numbers; hovering shows the full name, the numbers and the reasons."""
    y, x0, h = i * ROW, LABEL_W, ROW - 6
    before = max(int(g.get("units_before", 0)), 0)
    after = min(max(int(g.get("units_after", 0)), 0), before)
    frozen = min(max(int(g.get("frozen", 0)), 0), after)
    scale = BAR_W / before if before else 0.0
    color = _color(g.get("kind", ""))
    bars = f"<rect class=\"track\" x=\"{x0}\" y=\"{y + 3}\" width=\"{BAR_W}\" height=\"{h}\"/>"
    if after > frozen:
        bars += (f"<rect class=\"kept\" x=\"{x0 + frozen * scale:.1f}\" y=\"{y + 3}\" "
                 f"width=\"{(after - frozen) * scale:.1f}\" height=\"{h}\" fill=\"{color}\"/>")
    if frozen:
        bars += (f"<rect class=\"frozen\" x=\"{x0}\" y=\"{y + 3}\" width=\"{frozen * scale:.1f}\" "
                 f"height=\"{h}\" fill=\"url(#gp-hatch)\" stroke=\"{color}\"/>")
    removed = before - after
    num = f"{before} → {after}" + (f"  −{_pct(removed, before)}" if removed else "")
    hover = (f"{g['name']}\n{g.get('kind', '')}: {before} → {after} units"
             + (f", {frozen} frozen" if frozen else "")
             + "".join(f"\n· {x}" for x in g.get("reasons") or []))
    return (f"<g class=\"row{' odd' if i % 2 else ''}\"><title>{_e(hover)}</title>"
            f"<rect class=\"band\" x=\"0\" y=\"{y}\" width=\"{LABEL_W + BAR_W + NUM_W}\" "
            f"height=\"{ROW}\"/><text class=\"label\" x=\"{LABEL_W - 8}\" y=\"{y + 13}\">"
            f"{_e(_fit(g['name'], NAME_CHARS))}</text>{bars}"
            f"<text class=\"num{' cut' if removed else ''}\" x=\"{x0 + BAR_W + 8}\" "
            f"y=\"{y + 13}\">{_e(num)}</text></g>")


def _curve_card(name: str, points: list[list[float]], group: dict[str, Any] | None,
                top: float) -> str:
    """A small line chart of one group's sensitivity curve (error vs units removed), the
    removal chosen shaded."""
    w, h, left, bottom, pad = 220, 104, 30, 16, 6
    pw, ph = w - left - pad, h - bottom - pad
    pts = [(float(c), float(e)) for c, e in points if _finite(c) and _finite(e)]
    units = int(group.get("units_before", 0)) if group else 0
    xmax = max([units] + [c for c, _ in pts]) or 1
    top = top or 1.0
    color = _color(group.get("kind", "") if group else "")

    def x(c: float) -> float:
        return left + pw * c / xmax

    def y(e: float) -> float:
        return pad + ph * (1 - min(max(e / top, 0.0), 1.0))

    body = [f"<rect class=\"plot\" x=\"{left}\" y=\"{pad}\" width=\"{pw}\" height=\"{ph}\"/>",
            f"<line class=\"grid\" x1=\"{left}\" y1=\"{y(top / 2):.1f}\" x2=\"{left + pw}\" "
            f"y2=\"{y(top / 2):.1f}\"/>"]
    removed = units - int(group.get("units_after", units)) if group and units else 0
    if removed > 0:
        body.append(f"<rect class=\"chosen-area\" x=\"{left}\" y=\"{pad}\" "
                    f"width=\"{x(removed) - left:.1f}\" height=\"{ph}\" fill=\"{color}\"/>"
                    f"<line class=\"chosen\" x1=\"{x(removed):.1f}\" y1=\"{pad}\" "
                    f"x2=\"{x(removed):.1f}\" y2=\"{pad + ph}\"/>")
        right = x(removed) > left + pw / 2
        body.append(f"<text class=\"tick chosen-label\" x=\"{x(removed) + (-3 if right else 3):.1f}"
                    f"\" y=\"{pad + 10}\" text-anchor=\"{'end' if right else 'start'}\">"
                    f"{removed} removed</text>")
    body += [f"<text class=\"tick\" x=\"{left - 3}\" y=\"{pad + 4}\" text-anchor=\"end\">"
             f"{top:g}</text>",
             f"<text class=\"tick\" x=\"{left - 3}\" y=\"{pad + ph + 3}\" text-anchor=\"end\">"
             f"0</text>",
             f"<text class=\"tick\" x=\"{left}\" y=\"{h - 3}\">0</text>",
             f"<text class=\"tick\" x=\"{left + pw}\" y=\"{h - 3}\" text-anchor=\"end\">"
             f"{xmax:g} units</text>"]
    if pts:
        line = " ".join(f"{x(c):.1f},{y(e):.1f}" for c, e in pts)
        body.append(f"<polyline class=\"curve\" points=\"{line}\" stroke=\"{color}\"/>")
        body += [f"<circle class=\"dot\" cx=\"{x(c):.1f}\" cy=\"{y(e):.1f}\" r=\"2.2\" "
                 f"fill=\"{color}\"><title>{c:g} removed: error {e:.3g}</title></circle>"
                 for c, e in pts]
    return (f"<figure class=\"mini\"><figcaption title=\"{_e(name)}\">"
            f"{_e(_fit(name, 34))}</figcaption>{_svg('curve', w, h, ''.join(body))}</figure>")


def _timing_bar(t: dict[str, float]) -> str:
    total, width, x = sum(t.values()), 900, 0.0
    palette = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2",
               "#ff9da6", "#9d755d", "#bab0ac"]
    segs, legend = [], []
    for i, (stage, s) in enumerate(t.items()):
        w = width * s / total
        color = palette[i % len(palette)]
        segs.append(f"<rect x=\"{x:.1f}\" y=\"0\" width=\"{w:.1f}\" height=\"16\" "
                    f"fill=\"{color}\"><title>{_e(stage)}: {s:.3f} s</title></rect>")
        legend.append(f"<span><i style=\"background:{color}\"></i>{_e(stage)} "
                      f"{s:.2f} s</span>")
        x += w
    return (_svg("timing", width, 16, "".join(segs))
            + f"<div class=\"legend\">{''.join(legend)}</div>")


def _count_table(key: str, heading: str, what: str, unit: str, counts: dict[str, int]) -> str:
    """A table of counts, largest first, each with a bar scaled to the largest."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top = items[0][1] or 1
    rows = [[str(n), _meter(n / top), _e(k)] for k, n in items]
    return _section(key, heading, _table([(unit, "num"), ("", ""), (what, "")], rows,
                                         "counts compact"))


def _meter(frac: float | None, wide: bool = False, mark: float | None = None) -> str:
    """A small horizontal bar: `frac` of its track filled (a tick at `mark`)."""
    if not _finite(frac):
        return ""
    w = 200 if wide else 90
    fill = max(0.0, min(float(frac), 1.0)) * w
    tick = ""
    if _finite(mark):
        x = max(0.0, min(float(mark), 1.0)) * w
        tick = (f"<line class=\"mark\" x1=\"{x:.1f}\" y1=\"-3\" x2=\"{x:.1f}\" y2=\"11\">"
                f"<title>target {mark:.3f}</title></line>")
    return _svg("meter", w, 8, f"<rect class=\"track\" width=\"{w}\" height=\"8\" rx=\"4\"/>"
                f"<rect class=\"fill\" width=\"{fill:.1f}\" height=\"8\" rx=\"4\"/>{tick}")


def _svg(cls: str, width: float, height: float, body: str) -> str:
    return (f"<svg class=\"{cls}\" width=\"{width:g}\" "
            f"height=\"{height:g}\" viewBox=\"0 0 {width:g} {height:g}\">{body}</svg>")


# -- small helpers ----------------------------------------------------------------------------
def _section(key: str, heading: str, body: str) -> str:
    return f"<section id=\"{key}\"><h2>{_e(heading)}</h2>{body}</section>"


def _scroll(inner: str, long: bool, tall: bool = True) -> str:
    """Long content scrolls inside its box, so the page stays readable."""
    return f"<div class=\"scroll{' tall' if tall else ''}\">{inner}</div>" if long else inner


def _table(columns: list[tuple[str, str]], rows: list[list[str]], cls: str = "") -> str:
    """A table of HTML cells; each column is (heading, CSS class of its cells)."""
    head = "".join(f"<th class=\"{c}\">{_e(h)}</th>" for h, c in columns)
    body = "".join("<tr>" + "".join(f"<td class=\"{c}\">{cell}</td>"
                                    for (_, c), cell in zip(columns, row, strict=True))
                   + "</tr>" for row in rows)
    return (f"<table class=\"{cls}\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
            "</table>")


def _value(v: Any) -> str:
    """A cell value of unknown type: numbers formatted, booleans as a verdict."""
    if isinstance(v, bool):
        return _ok(v)
    if isinstance(v, int):
        return str(v)
    return _sci(v) if isinstance(v, float) else ("" if v is None else _e(v))


def _dim_zero(n: int) -> str:
    return str(n) if n else "<span class=\"dim\">0</span>"


def _breakable(name: str) -> str:
    """A node name that may wrap after its path separators, not inside a word."""
    return "/<wbr>".join(_e(part) for part in name.split("/"))


def _kind_tag(kind: str) -> str:
    return f"<span class=\"tag\" style=\"--c:{_color(kind)}\">{_e(kind)}</span>"


def _color(kind: str) -> str:
    return KIND_COLORS.get(kind, OTHER_COLOR)


def _fit(name: str, width: int) -> str:
    """Long node names keep their end (the layer and op), which tells groups apart."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _f(v: Any, digits: int) -> str:
    return f"{v:.{digits}f}" if _finite(v) else _e(v)


def _sci(v: Any) -> str:
    return f"{v:.2e}" if _finite(v) else _e(v)


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "–"


def _change(ratio: float) -> str:
    return f"−{100 * (1 - ratio):.1f}%" if ratio <= 1 else f"+{100 * (ratio - 1):.1f}%"


def _nice(v: float) -> float:
    """The smallest 1/2/2.5/5 × 10^k at or above v (an axis end)."""
    if v <= 0:
        return 1.0
    base = 10 ** math.floor(math.log10(v))
    return next(m * base for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)
                if m * base >= v * (1 - 1e-9))


def _num(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:g}"


def _bytes(n: float) -> str:
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:g} B"


def _shape(dims: Iterable[Any] | None) -> str:
    return "[" + ", ".join("?" if d is None else _e(d) for d in dims or []) + "]"


def _ok(passed: Any) -> str:
    return "<span class=\"ok\">passed</span>" if passed else "<span class=\"bad\">FAILED</span>"


CSS = """
:root{--fg:#1f2328;--dim:#656d76;--bg:#fff;--panel:#f6f8fa;--line:#d8dee4;--track:#eaeef2;
--pass:#1a7f37;--fail:#cf222e;--accent:#4c78a8;
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--dim:#8d96a0;--bg:#0d1117;
--panel:#161b22;--line:#30363d;--track:#2d333b}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg)}
header,main,footer{max-width:960px;margin:0 auto;padding:0 20px}
header{padding-top:22px;display:flex;flex-wrap:wrap;align-items:center;gap:10px 18px}
h1{font-size:20px;margin:0;font-weight:600;word-break:break-all}
h2{font-size:15px;margin:26px 0 8px;padding-bottom:4px;border-bottom:1px solid var(--line)}
footer{color:var(--dim);font-size:12px;padding:24px 20px 28px}
.lead{color:var(--dim);margin:0 0 8px;font-size:13px}
.verdict{display:flex;gap:10px;align-items:baseline;padding:5px 12px;border-radius:6px;
border:1px solid}
.verdict.pass{color:var(--pass);background:color-mix(in srgb,var(--pass) 8%,transparent)}
.verdict.fail{color:var(--fail);background:color-mix(in srgb,var(--fail) 10%,transparent)}
.verdict span{color:var(--dim);font-size:13px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:12px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card .label{font-size:12px;color:var(--dim);text-transform:uppercase;letter-spacing:.04em}
.card .big{font-size:24px;font-weight:600;line-height:1.2;margin-top:2px}
.card .ratio{margin-top:2px}
.card svg.meter{width:100%;margin-top:8px}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:14px 0 0}
.facts dt{color:var(--dim)}.facts dd{margin:0}
.dim{color:var(--dim)}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;font-size:12px;color:var(--dim);margin:4px 0 8px}
.legend i{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;
vertical-align:-1px}
.legend i.removed{background:var(--track);outline:1px solid var(--line)}
.legend i.hatch{background:repeating-linear-gradient(45deg,#8c959f 0 2px,transparent 2px 4px)}
svg{display:block;max-width:100%;height:auto;overflow:visible}
svg text{font-size:11px;fill:var(--fg)}
svg.widths text.label{text-anchor:end;font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,
"DejaVu Sans Mono",monospace;font-size:11px}
svg.widths text.num{fill:var(--dim);font-variant-numeric:tabular-nums}
svg.widths text.num.cut{fill:var(--fg)}
svg .band{fill:transparent}svg .odd .band{fill:var(--panel)}
svg .row:hover .band{fill:color-mix(in srgb,var(--accent) 14%,transparent)}
svg .track{fill:var(--track)}
svg .hatch-bg{fill:var(--bg)}svg .hatch-line{stroke:#8c959f;stroke-width:2.5}
svg.meter .fill{fill:var(--accent)}svg.meter .mark{stroke:var(--fg);stroke-width:2}
.scroll{max-height:560px;overflow:auto;border:1px solid var(--line);border-radius:6px}
.scroll.tall{max-height:960px;padding:4px 0}
.multiples{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:10px}
.mini{margin:0;background:var(--panel);border:1px solid var(--line);border-radius:6px;
padding:6px 8px 4px}
.mini figcaption{font:11px ui-monospace,Menlo,Consolas,"DejaVu Sans Mono",monospace;
white-space:nowrap;overflow:hidden;text-overflow:ellipsis;margin-bottom:2px}
svg .plot{fill:var(--bg);stroke:var(--line)}
svg .curve{fill:none;stroke-width:1.8;stroke-linejoin:round}
svg .chosen{stroke:var(--fg);stroke-dasharray:3 2;stroke-width:1}
svg .chosen-area{opacity:.12}svg .grid{stroke:var(--line);stroke-dasharray:2 3}
svg text.tick{font-size:10px;fill:var(--dim)}svg text.chosen-label{fill:var(--fg)}
table{border-collapse:collapse;width:100%;font-size:13px}
th{text-align:left;font-weight:600;color:var(--dim);font-size:12px;background:var(--bg);
position:sticky;top:0;border-bottom:1px solid var(--line);padding:5px 8px;z-index:1}
td{padding:3px 8px;border-bottom:1px solid var(--line);vertical-align:top}
tbody tr:hover td{background:var(--panel)}
th.num,td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.name{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,"DejaVu Sans Mono",
monospace;font-size:12px;word-break:break-all}
table.groups td.name{min-width:300px;word-break:normal;overflow-wrap:anywhere}
table.compact{width:auto;min-width:50%}td.bar{min-width:90px}
td.why{font-size:12px;min-width:220px}th.why{min-width:220px}td.why div+div{margin-top:3px}
.tag{display:inline-block;padding:0 7px;border-radius:9px;font-size:11px;color:var(--c);
border:1px solid var(--c);background:color-mix(in srgb,var(--c) 10%,transparent)}
table.counts td svg{margin-top:6px}
.kinds{font-size:13px;color:var(--dim);margin:8px 0 0}
.ok{color:var(--pass)}.bad{color:var(--fail);font-weight:600}
ul{margin:0;padding-left:20px}
"""
