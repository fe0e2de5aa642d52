"""The HTML report (`--html`, `Report.to_html()`): one self-contained page, drawn in a browser.

Reports come from real compress runs: the bundled ResNet with sensitivity allocation (its
curves), a ViT with hidden units and a MACs target (fidelity, the target's mark), attention
heads of which one stays frozen, a graph with an op without a rule (blockers). The page must
load nothing (no URL, no script, no external style), every section must come from the
report's numbers, and headless Chromium must lay the charts out with non-zero size, bar
lengths in the report's proportions and the kinds' colours, without fetching a single
resource. Chromium is Debian's `chromium` (`.ci/run`
installs it when missing); without it the browser tests fail and say so.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import chromium
import onnx
import pytest
import zoo
from helpers import Builder

import graphprune
from graphprune import cli, html_report
from models.export import export_spec

BERT = zoo.ROOT / "models" / "examples" / "bert_tiny.onnx"


# -- reports from real runs ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet() -> dict:
    """The bundled ResNet at ratio 0.4, sensitivity allocation: curves for every group."""
    _, report = graphprune.compress(str(zoo.EXAMPLE), ratio=0.4, allocation="sensitivity")
    assert report.sensitivity and report.exact_check["passed"]
    return report.to_dict()


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A ViT with hidden units pruned (inexact: fidelity) under a MACs target."""
    path = export_spec("vit", tmp_path_factory.mktemp("vit") / "vit.onnx", "torchscript")
    _, report = graphprune.compress(str(path), ratio=0.25, scope="heads,ffn,hidden",
                                    target_macs=0.6)
    assert report.fidelity and report.target["met"]
    return report.to_dict()


@pytest.fixture(scope="module")
def mha(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """nn.MultiheadAttention layers: one head of each stays frozen (its size reaches data
    arithmetic), so bars show frozen and prunable units side by side."""
    path = export_spec("mha_encoder", tmp_path_factory.mktemp("mha") / "mha.onnx",
                       "torchscript")
    _, report = graphprune.compress(str(path), ratio=0.4)
    assert any(0 < g.frozen < g.units_after for g in report.group_details)
    return report.to_dict()


@pytest.fixture(scope="module")
def depth() -> dict:
    """The bundled ResNet losing channels and residual blocks in one run."""
    _, report = graphprune.compress(str(zoo.EXAMPLE), ratio=0.5, scope="channels,blocks",
                                    calib_samples=8)
    assert report.blocks["removed"] == 2 and report.exact_check["passed"]
    return report.to_dict()


def blocked_model() -> onnx.ModelProto:
    """Conv → Einsum (an identity; no rule: a blocker) → Conv → Relu → Conv."""
    b = Builder()
    x = b.input("X", [1, 3, 8, 8])
    a = b.op("Einsum", [b.conv(x, 3, 16, name="A")], equation="nchw->nchw")
    c = b.op("Relu", [b.conv(a, 16, 8, name="B")])
    return b.build(b.conv(c, 8, 4, name="C"))


@pytest.fixture(scope="module")
def blocked() -> dict:
    _, report = graphprune.compress(blocked_model(), ratio=0.5)
    assert report.blockers == {"Einsum": 1}
    return report.to_dict()


# -- the page, without a browser ----------------------------------------------------------------
def sections(page: str) -> list[str]:
    return re.findall(r'<section id="([\w-]+)">', page)


class Tags(HTMLParser):
    """Every start tag of a page with its attributes, and the text of its <style> elements."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.css: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self.css += [v for k, v in attrs if v and (k == "style" or "url(" in v.lower())]

    def handle_data(self, data: str) -> None:
        if self.lasttag == "style":
            self.css.append(data)


def assert_self_contained(page: str) -> None:
    """Nothing on the page points outside it: no URL, no element or attribute that loads
    anything, no CSS url() but fragments of the page itself."""
    low = page.lower()
    assert "http://" not in low and "https://" not in low, "a URL in the page"
    parsed = Tags(page)
    names = {t for t, _ in parsed.tags}
    assert not names & {"script", "link", "img", "iframe", "object", "embed", "image", "use",
                        "base", "audio", "video", "source"}, names
    loading = [(t, k) for t, attrs in parsed.tags for k in attrs
               if k in ("src", "href", "xlink:href", "srcset", "action", "data")]
    assert not loading, loading
    css = " ".join(parsed.css).lower()
    assert "@import" not in css and "@font-face" not in css
    assert all(u.strip("'\" ").startswith("#") for u in re.findall(r"url\(([^)]*)\)", css)), \
        "a url() that is not a fragment of the page"


def test_pages_are_self_contained(resnet: dict, vit: dict, blocked: dict) -> None:
    for report in (resnet, vit, blocked):
        page = html_report.render(report, title="a → b")
        assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
        assert_self_contained(page)
    outside = ['<link rel="stylesheet" href="x.css">', '<script src="x.js"></script>',
               "<style>@import 'x.css';</style>", '<svg><image href="x.png"/></svg>',
               '<div style="background:url(x.png)"></div>', "<p>https://example.org</p>",
               '<svg><rect fill="url(x.svg#p)"/></svg>']
    for bad in outside:  # the check itself catches each way out
        with pytest.raises(AssertionError):
            assert_self_contained(page.replace("</main>", bad + "</main>"))


def test_sections_follow_the_report(resnet: dict, vit: dict, blocked: dict) -> None:
    always = ["summary", "widths", "groups", "frozen-reasons", "check-inputs", "exact-check",
              "timings"]
    # the sensitivity scan notes what it measured (samples, counts per group, seconds)
    assert sections(html_report.render(resnet)) == (
        always[:2] + ["sensitivity"] + always[2:4] + ["notes"] + always[4:])
    assert sections(html_report.render(vit)) == always[:2] + ["fidelity"] + always[2:]
    assert sections(html_report.render(blocked)) == always[:4] + ["blockers"] + always[4:]
    assert sections(html_report.render({})) == []
    only_groups = {"group_details": resnet["group_details"]}
    assert sections(html_report.render(only_groups)) == ["widths", "groups"]


def test_blocks_section(depth: dict) -> None:
    """One row per residual block: its name, size and score, the removed ones marked."""
    page = html_report.render(depth)
    assert sections(page) == ["summary", "widths", "blocks", "groups", "frozen-reasons",
                              "check-inputs", "exact-check", "timings"]
    part = page.split('<section id="blocks">')[1].split("</section>")[0]
    rows = depth["blocks"]["list"]
    assert part.count("<tr>") == len(rows) + 1
    assert part.count(">removed</span>") == depth["blocks"]["removed"] == 2
    for b in rows:
        assert html.escape(b["label"]) in part and f"{b['score']:.2e}" in part
        assert html_report._num(b["params"]) in part
    assert "2 of 4 residual blocks removed (4 removable), scored by influence" in part


def test_page_holds_the_report_numbers(resnet: dict) -> None:
    page = html_report.render(resnet)
    groups = resnet["group_details"]
    widths = page.split('<section id="widths">')[1].split("</section>")[0]
    assert widths.count('<g class="row') == len(groups)
    table = page.split('<section id="groups">')[1].split("</section>")[0]
    assert table.count("<tr>") == len(groups) + 1
    for g in groups:  # "before → after" per bar, in graph order
        assert f"{g['units_before']} → {g['units_after']}" in widths
    order = [html.unescape(t).split("\n")[0] for t in re.findall(r"<title>([^<]*)</title>",
                                                                   widths)]
    assert order == [g["name"] for g in groups]
    pb, pa = resnet["params_before"], resnet["params_after"]
    assert f"×{pa / pb:.3f}" in page
    assert html_report._num(pa) in page and html_report._num(pb) in page
    assert f"max abs error {resnet['exact_check']['max_abs_err']:.2e}" in page
    curves = page.split('<section id="sensitivity">')[1].split("</section>")[0]
    assert curves.count("<polyline") == len(resnet["sensitivity"])
    assert curves.count("<circle") == sum(len(p) for p in resnet["sensitivity"].values())


def test_long_names_are_cut_with_the_full_name_on_hover(resnet: dict) -> None:
    report = json.loads(json.dumps(resnet))  # names are short now: make one long
    report["group_details"][1]["name"] = "model.encoder.layer.11.attention.self.query.lora_A"
    page = html_report.render(report)
    long = [g["name"] for g in report["group_details"]
            if len(g["name"]) > html_report.NAME_CHARS]
    assert long, "the example has no long group name"
    for name in long:
        cut = "…" + name[-(html_report.NAME_CHARS - 1):]
        assert f">{html.escape(cut)}</text>" in page
        assert f"<title>{html.escape(name)}\n" in page


def test_target_and_fidelity(vit: dict) -> None:
    page = html_report.render(vit)
    assert 'class="mark"' in page and "target ×0.600" in page
    for out, f in vit["fidelity"].items():
        assert f"{f['cosine']:.4f}" in page and f"{f['rel_l2']:.2e}" in page
        assert html.escape(out) in page
    assert "allocation</dt><dd>uniform</dd>" in page  # a target replaces the ratio


def test_text_from_the_report_is_escaped() -> None:
    evil = "<img src=x onerror=alert(1)>&\"'"
    page = html_report.render({
        "group_details": [{"name": evil, "units_before": 4, "units_after": 2, "frozen": 0,
                           "reasons": [evil], "kind": evil}],
        "notes": ["</style><script>alert(2)</script>"], "blockers": {evil: 1},
        "frozen_reasons": {evil: 3}, "sensitivity": {evil: [[0, 0.0], [1, 0.5]]},
    }, title=evil)
    assert_self_contained(page)
    assert "<img" not in page and "<script" not in page
    assert html.escape(evil) in page


def test_odd_values_draw_no_nan() -> None:
    """Empty groups, infinite errors, missing fields: the page still renders, SVG gets no
    NaN or inf coordinates."""
    page = html_report.render({
        "params_before": 0, "params_after": 0, "macs_before": 10, "macs_after": 10,
        "group_details": [{"name": "g", "units_before": 0, "units_after": 0, "frozen": 0}],
        "sensitivity": {"g": [[0, 0.0], [1, float("inf")]], "h": []},
        "fidelity": {"y": {"rel_l2": float("inf"), "cosine": 0.0, "top1": 0.0}},
        "timings": {"analysis": 0.0}, "exact_check": {"passed": True, "runs": []},
    })
    svg = "".join(re.findall(r"<svg.*?</svg>", page, re.S))
    assert not re.search(r"\bnan\b|\binf\b", svg.lower())
    assert "inf" in page.split('<section id="fidelity">')[1]  # said in words, not drawn


def test_many_groups_scroll() -> None:
    groups = [{"name": f"/blocks.{i}/mlp/fc1/MatMul", "units_before": 64, "units_after": 32,
               "frozen": 0, "reasons": [], "kind": "ffn"} for i in range(400)]
    page = html_report.render({"group_details": groups})
    widths = page.split('<section id="widths">')[1].split("</section>")[0]
    assert '<div class="scroll tall">' in widths
    assert f'height="{400 * html_report.ROW}"' in widths


def test_same_report_same_page(resnet: dict) -> None:
    again = json.loads(json.dumps(resnet))
    assert html_report.render(resnet) == html_report.render(again)


# -- the command line ---------------------------------------------------------------------------
def run_cli(capsys: pytest.CaptureFixture, *args: str | Path) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_compress_and_apply_write_the_page(capsys, tmp_path: Path) -> None:
    model = zoo.copy_example(tmp_path)
    code, _, err = run_cli(capsys, "compress", model, "-o", tmp_path / "o.onnx", "--quiet",
                           "--report", tmp_path / "r.json", "--html", tmp_path / "r.html",
                           "--plan-out", tmp_path / "plan.json")
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<title>model.onnx → o.onnx</title>" in page
    assert_self_contained(page)
    assert page.count('<g class="row') == len(report["group_details"])
    assert f"×{report['params_after'] / report['params_before']:.3f}" in page
    assert f"×{report['bytes_after'] / report['bytes_before']:.3f}" in page  # sizes filled in
    code, _, err = run_cli(capsys, "apply", model, tmp_path / "plan.json", "-o",
                           tmp_path / "a.onnx", "--quiet", "--html", tmp_path / "a.html")
    assert code == 0, err
    applied = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert "<title>model.onnx → a.onnx</title>" in applied
    assert applied.count('<g class="row') == len(report["group_details"])
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def dynamo_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled ResNet's torch module exported as torch does by default (dynamo: net.onnx
    plus net.onnx.data)."""
    import torch

    from models import get

    spec = get("resnet_basic")
    path = tmp_path_factory.mktemp("dynamo") / "net.onnx"
    torch.onnx.export(spec.build(), tuple(spec.example_inputs(seed=0)), str(path),
                      dynamo=True)
    assert (path.parent / "net.onnx.data").is_file()
    return path


def test_html_for_a_default_dynamo_export(capsys, tmp_path: Path, dynamo_export: Path) -> None:
    for f in dynamo_export.parent.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    model = tmp_path / "net.onnx"
    code, _, err = run_cli(capsys, "compress", model, "-o", tmp_path / "o.onnx", "--quiet",
                           "--report", tmp_path / "r.json", "--html", tmp_path / "r.html")
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert page.count('<g class="row') == len(report["group_details"]) > 0
    assert report["exact_check"]["passed"] and report["groups"]["pruned"] > 0
    before = _snapshot(tmp_path)
    code, _, err = run_cli(capsys, "compress", model, "-o", tmp_path / "o2.onnx", "--quiet",
                           "--html", tmp_path / "net.onnx.data")
    assert code == 2 and "html path" in err and "net.onnx.data" in err, err
    assert _snapshot(tmp_path) == before


def _snapshot(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.mark.parametrize("where", ["input", "output", "report", "plan", "directory"])
def test_html_path_that_would_overwrite_is_refused(capsys, tmp_path: Path, where: str) -> None:
    model = zoo.copy_example(tmp_path)
    (tmp_path / "d").mkdir()
    target = {"input": model, "output": tmp_path / "o.onnx", "report": tmp_path / "r.json",
              "plan": tmp_path / "p.json", "directory": tmp_path / "d"}[where]
    before = _snapshot(tmp_path)
    code, out, err = run_cli(capsys, "compress", model, "-o", tmp_path / "o.onnx", "--quiet",
                             "--report", tmp_path / "r.json", "--plan-out",
                             tmp_path / "p.json", "--html", target)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphprune: error: html path"), err
    assert _snapshot(tmp_path) == before


def test_apply_html_path_that_is_the_plan_is_refused(capsys, tmp_path: Path) -> None:
    model = zoo.copy_example(tmp_path)
    plan = tmp_path / "plan.json"
    assert run_cli(capsys, "compress", model, "-o", tmp_path / "o.onnx", "--quiet",
                   "--plan-out", plan)[0] == 0
    before = _snapshot(tmp_path)
    code, _, err = run_cli(capsys, "apply", model, plan, "-o", tmp_path / "a.onnx", "--quiet",
                           "--html", plan)
    assert code == 2 and "html path" in err and "plan.json" in err, err
    assert _snapshot(tmp_path) == before


# -- in headless Chromium -----------------------------------------------------------------------
MEASURE = """
const box = e => { const b = e.getBoundingClientRect(); return [b.width, b.height]; };
const out = {resources: performance.getEntriesByType('resource').map(e => e.name),
             sections: [...document.querySelectorAll('section')].map(s => s.id)};
out.svgs = [...document.querySelectorAll('svg')].map(s => ({cls: s.getAttribute('class'),
            section: s.closest('section') ? s.closest('section').id : '', size: box(s)}));
out.rows = [...document.querySelectorAll('svg.widths g.row')].map(g => {
  const part = q => { const e = g.querySelector(q); if (!e) return null;
    e.scrollIntoView({block: 'center'}); const b = e.getBoundingClientRect();
    const hit = document.elementFromPoint(b.x + b.width / 2, b.y + b.height / 2);
    return {size: box(e), fill: getComputedStyle(e).fill, seen: hit === e}; };
  return {name: g.querySelector('title').textContent.split('\\n')[0], track: part('.track'),
          kept: part('.kept'), frozen: part('.frozen'),
          label: box(g.querySelector('text.label'))}; });
out.curves = [...document.querySelectorAll('svg.curve polyline')].map(p => ({
  size: box(p), points: p.points.numberOfItems, stroke: getComputedStyle(p).stroke}));
out.meters = [...document.querySelectorAll('svg.meter .fill')].map(box);
document.getElementById('gp-measure').textContent = JSON.stringify(out);
"""


@pytest.fixture(scope="module")
def browser() -> None:
    if chromium.binary() is None:
        pytest.fail("headless Chromium is needed to test the HTML report: install Debian's "
                    "`chromium` package (`.ci/run` does), or set GRAPHPRUNE_CHROMIUM")


def measure(page: str) -> dict:
    dom = chromium.measured_dom(page, MEASURE)
    found = re.search(rf'<pre id="{chromium.MEASURE_ID}">(.*?)</pre>', dom, re.S)
    assert found and found.group(1), f"the measuring script did not run: {dom[-500:]}"
    return json.loads(html.unescape(found.group(1)))


def rgb(hex_color: str) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


@pytest.mark.parametrize("which", ["resnet", "vit", "mha", "blocked", "depth"])
def test_charts_are_drawn_in_chromium(browser, which: str, request) -> None:
    report = request.getfixturevalue(which)
    m = measure(html_report.render(report, title=which))
    assert m["resources"] == [], "the page fetched something"
    assert m["sections"] == sections(html_report.render(report))
    assert m["svgs"], "no SVG on the page"
    for svg in m["svgs"]:
        assert min(svg["size"]) > 0, f"an empty {svg['cls']} chart in {svg['section']}"
    groups = report["group_details"]
    assert [r["name"] for r in m["rows"]] == [g["name"] for g in groups]
    for row, g in zip(m["rows"], groups, strict=True):
        track = row["track"]["size"][0]
        assert track > 100 and row["label"][0] > 0 and row["label"][1] > 0
        before, after, frozen = g["units_before"], g["units_after"], g["frozen"]
        for part, units in (("kept", after - frozen), ("frozen", frozen)):
            if units == 0:
                assert row[part] is None
                continue
            width = row[part]["size"][0]
            assert abs(width / track - units / before) < 1.5 / track, (g["name"], part)
            assert row[part]["seen"], f"{g['name']}: {part} bar is covered"
        if after > frozen:
            assert row["kept"]["fill"] == rgb(html_report._color(g["kind"]))
    curves = report["sensitivity"]
    assert len(m["curves"]) == len(curves)
    for drawn, pts in zip(m["curves"], curves.values(), strict=True):
        assert drawn["points"] == len(pts) and drawn["size"][0] > 0 and drawn["size"][1] > 0
        assert drawn["stroke"] not in ("none", "rgba(0, 0, 0, 0)")
    assert m["meters"] and all(w >= 0 and h > 0 for w, h in m["meters"])


def test_screenshot_is_full_page(browser, resnet: dict, tmp_path: Path) -> None:
    """The docs screenshots' route: the PNG is as tall as the laid-out page."""
    page = tmp_path / "r.html"
    page.write_text(html_report.render(resnet), encoding="utf-8")
    png = chromium.screenshot(page, tmp_path / "r.png", width=900)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == 900
    assert height == chromium.page_height(page.read_text(encoding="utf-8"), 900) > 1000
