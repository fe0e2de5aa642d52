"""Layers, one direction: drivers ← passes ← core.

    drivers   graphprune (the package: the public API), graphprune.pipeline, graphprune.cli
       ↓
    passes    graphprune.passes.* (passes/: scoring, selection, rewrite, validation, ...)
       ↓
    core      graph view (ir, shapeval, slots), op rules (graphprune.rules.*), analysis,
              plans, report (and its HTML page), errors, model I/O, run context, version

A module may import its own layer or a lower one, never a higher one, and no import cycle may
join the library's modules. Every import counts: at module level, inside functions (lazy) and
under `if TYPE_CHECKING:`. No module uses another module's private names (`_x`), by import or
as `module._x`. And the library never prints: only the CLI writes to the terminal.

Every module has a layer, declared below (the modules of graphprune/rules/ and passes/ by
their folder): a new module in graphprune/ fails this test until it is given one.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = (("graphprune", "graphprune"), ("passes", "graphprune.passes"))
"""Source folder → package name (pyproject maps passes/ to graphprune.passes)."""

CORE, PASSES, DRIVERS = 0, 1, 2
LAYER_NAMES = {CORE: "core", PASSES: "passes", DRIVERS: "drivers"}
LAYERS = {
    "graphprune.errors": CORE, "graphprune.version": CORE, "graphprune.context": CORE,
    "graphprune.ir": CORE, "graphprune.shapeval": CORE, "graphprune.slots": CORE,
    "graphprune.ops": CORE, "graphprune.edits": CORE,
    "graphprune.rules": CORE, "graphprune.rules.*": CORE, "graphprune.analysis": CORE,
    "graphprune.names": CORE, "graphprune.reasons": CORE, "graphprune.table": CORE,
    "graphprune.metrics": CORE, "graphprune.plan": CORE, "graphprune.report": CORE,
    "graphprune.html_report": CORE, "graphprune.io": CORE, "graphprune.external": CORE,
    "graphprune.topology": CORE, "graphprune.blocks": CORE,
    "graphprune.passes": PASSES, "graphprune.passes.*": PASSES,
    "graphprune": DRIVERS, "graphprune.pipeline": DRIVERS, "graphprune.cli": DRIVERS,
    "graphprune.torch": DRIVERS, "graphprune.torch.*": DRIVERS,
}

KNOWN_EDGES: set[tuple[str, str]] = set()
"""(module, module it imports) left out of every check below, so any other cycle or upward
import still fails; one that is gone must leave this set (test_known_exceptions_still_exist).
None left."""
KNOWN_PRIVATE: set[tuple[str, str, str]] = set()
"""(module, module whose private name it uses, name): none left."""


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def layer_of(name: str) -> int | None:
    if name in LAYERS:
        return LAYERS[name]
    parent = name.rpartition(".")[0]
    return LAYERS.get(parent + ".*")


def imports(name: str, path: Path, mods: dict[str, Path]):
    """(edges, private uses) of one module: every import statement anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: set[str] = set()
    private: set[tuple[str, str]] = set()
    aliases: dict[str, str] = {}  # local name → library module it is bound to

    def library(dotted: str) -> str | None:
        while dotted and dotted not in mods:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                target = library(a.name)
                if target:
                    edges.add(target)
                    if a.asname:
                        aliases[a.asname] = target
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for a in node.names:
                if f"{source}.{a.name}" in mods:  # a submodule
                    edges.add(f"{source}.{a.name}")
                    aliases[a.asname or a.name] = f"{source}.{a.name}"
                    continue
                target = library(source)
                if target:
                    edges.add(target)
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        private.add((target, a.name))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            private.add((aliases[node.value.id], node.attr))
    edges.discard(name)
    return edges, {(m, x) for m, x in private if m != name}


def graph() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    mods = modules()
    edges, private = {}, []
    for name, path in mods.items():
        out, priv = imports(name, path, mods)
        edges[name] = {t for t in out if (name, t) not in KNOWN_EDGES}
        private += [(name, m, x) for m, x in sorted(priv) if (name, m, x) not in KNOWN_PRIVATE]
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_every_module_has_a_layer():
    missing = [m for m in modules() if layer_of(m) is None]
    assert not missing, (f"modules without a layer: {missing}; declare each in LAYERS "
                         "(tests/test_layers.py)")


def test_no_import_cycles():
    found = cycles(graph()[0])
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_upward_imports():
    edges, _ = graph()
    upward = [f"{a} ({LAYER_NAMES[layer_of(a)]}) imports {b} ({LAYER_NAMES[layer_of(b)]})"
              for a, targets in sorted(edges.items()) for b in sorted(targets)
              if layer_of(a) is not None and layer_of(b) is not None
              and layer_of(b) > layer_of(a)]
    assert not upward, "\n".join(upward)


def test_no_private_names_across_modules():
    _, private = graph()
    assert not private, [f"{a} uses {m}.{x}" for a, m, x in private]


def test_known_exceptions_still_exist():
    """An entry of KNOWN_EDGES/KNOWN_PRIVATE that no longer occurs is stale: remove it."""
    mods = modules()
    real_edges, real_private = set(), set()
    for name, path in mods.items():
        out, priv = imports(name, path, mods)
        real_edges |= {(name, t) for t in out}
        real_private |= {(name, m, x) for m, x in priv}
    assert real_edges >= KNOWN_EDGES, sorted(KNOWN_EDGES - real_edges)
    assert real_private >= KNOWN_PRIVATE, sorted(KNOWN_PRIVATE - real_private)


def test_the_checks_catch_what_they_should(tmp_path):
    """The walk itself: a cycle through a lazy import, an upward import under
    TYPE_CHECKING and a private attribute are all found."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                 "    from graphprune.pipeline import compress\n")
    b.write_text("def f():\n    from graphprune import errors\n    return errors._x\n")
    mods = {**modules(), "graphprune.a": a, "graphprune.b": b}
    assert imports("graphprune.a", a, mods)[0] == {"graphprune.pipeline"}
    edges, private = imports("graphprune.b", b, mods)
    assert edges == {"graphprune.errors"} and private == {("graphprune.errors", "_x")}
    assert cycles({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}) == [["x", "y", "z"]]


def test_the_library_never_prints():
    """Progress goes through callbacks (graphprune.context); only the CLI prints."""
    found = []
    for name, path in modules().items():
        if name == "graphprune.cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Name) and node.id == "print":
                found.append(f"{name}:{node.lineno} print")
            if (isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr")
                    and isinstance(node.value, ast.Name) and node.value.id == "sys"):
                found.append(f"{name}:{node.lineno} sys.{node.attr}")
    assert not found, found
