"""Layers, one direction: core (graph view, slots, op rules, analysis, shape arithmetic,
edits, plans, reports, errors, model I/O) <- passes (graphprune.passes) <- drivers (pipeline,
CLI, the package's front door). An AST walk counts every import, lazy ones and those under
TYPE_CHECKING included.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DRIVERS = {"graphprune", "graphprune.pipeline", "graphprune.cli"}
KNOWN_CYCLES = {
    frozenset({"graphprune.io", "graphprune.passes.inputs", "graphprune.passes.validation"}),
    frozenset({"graphprune.passes.calibration", "graphprune.passes.probe",
               "graphprune.passes.scoring"}),
}
"""Cycles outside the core's own that issue 13 removes separately (external data in one
module; calibration/probe/scoring): listed so that a new cycle fails, and one that is gone
must leave this list."""
KNOWN_UPWARD = {("graphprune.io", "graphprune.passes.inputs")}
"""io runs the input diagnosis of passes/inputs.py (the first cycle above)."""


def _modules() -> dict[str, Path]:
    mods = {}
    for top, pkg in (("graphprune", "graphprune"), ("passes", "graphprune.passes")):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT / top).with_suffix("").parts
            rel = rel[:-1] if rel[-1] == "__init__" else rel
            mods[".".join((pkg, *rel))] = path
    return mods


def _imports(mods: dict[str, Path]) -> tuple[set[tuple[str, str]], list[str]]:
    """(importer, imported module) pairs among `mods`, and private names imported across."""
    edges, private = set(), []
    for name, path in mods.items():
        base = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[tuple[str, str | None]] = []
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                parts = base.split(".")
                mod = node.module or ""
                if node.level:
                    mod = ".".join(parts[:len(parts) - node.level + 1] + ([mod] if mod else []))
                for a in node.names:
                    sub = f"{mod}.{a.name}"
                    targets.append((sub, None) if sub in mods else (mod, a.name))
            for target, attr in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if not target or target == name:
                    continue
                if not (path.name == "__init__.py" and target.startswith(name + ".")):
                    edges.add((name, target))  # (a package importing its own parts is fine)
                if attr and attr.startswith("_") and not attr.startswith("__"):
                    private.append(f"{name} imports {target}.{attr}")
    return edges, private


def _cycles(nodes: list[str], edges: set[tuple[str, str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in sorted(edges):
        succ[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for n in nodes:
        if n not in index:
            visit(n)
    return out


def _layer(name: str) -> int:
    if name in DRIVERS:
        return 2
    return 1 if name.startswith("graphprune.passes") else 0


def test_no_import_cycles() -> None:
    mods = _modules()
    edges, _ = _imports(mods)
    cycles = set(_cycles(sorted(mods), edges))
    assert not cycles - KNOWN_CYCLES, f"import cycles: {[sorted(c) for c in cycles - KNOWN_CYCLES]}"
    assert not KNOWN_CYCLES - cycles, "a known cycle is gone: take it off KNOWN_CYCLES"


def test_no_import_upward() -> None:
    edges, _ = _imports(_modules())
    upward = {(a, b) for a, b in edges if _layer(b) > _layer(a)}
    assert upward == KNOWN_UPWARD, sorted(upward - KNOWN_UPWARD)


def test_no_private_name_across_modules() -> None:
    _, private = _imports(_modules())
    assert not private, private


def test_the_walk_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    """The walk is no stronger than what it parses: a lazy import inside a function and one
    under TYPE_CHECKING both count."""
    (tmp_path / "graphprune").mkdir()
    (tmp_path / "graphprune" / "__init__.py").write_text("")
    (tmp_path / "graphprune" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import X\n")
    (tmp_path / "graphprune" / "b.py").write_text("def f():\n    from . import a\n")
    mods = {"graphprune": tmp_path / "graphprune" / "__init__.py",
            "graphprune.a": tmp_path / "graphprune" / "a.py",
            "graphprune.b": tmp_path / "graphprune" / "b.py"}
    edges, _ = _imports(mods)
    assert _cycles(sorted(mods), edges) == [frozenset({"graphprune.a", "graphprune.b"})]
