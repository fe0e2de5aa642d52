"""The op registry: everything the engine knows about an op, declared with its rule.

One entry per (domain, op_type): the op's rules by opset (`since`) and its `Traits`. The rule
modules (graphprune/rules/) fill it when they are imported, which importing graphprune does;
this module imports nothing of graphprune, so every layer may read it.

An op without a rule is a barrier: the analysis freezes every slot that touches it and names
it as a blocker. Nothing passes channels through by default, and an op without traits is
assumed to know nothing: no marks, no tiling, units read on its first input only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RuleFn = Callable[[Any], None]
"""A rule: takes the node's context (rules.context.Ctx), labels, couples and freezes slots."""


@dataclass(frozen=True)
class Traits:
    """What the engine may assume of an op besides its rule."""

    multi_input: bool = False
    """The rule reads units on every input; for other ops, units on inputs past the first
    (weights, parameters, settings) are frozen before the rule runs."""
    tiled: bool = False
    """The rule maps tiled spans (units repeating along a dynamic axis, slots.Span.tiled);
    for other ops the units are kept whole along tiled axes first."""
    sizes: bool = False
    """The rule reads a size input (a shape, split sizes, slice bounds) whose entries the
    rewrite overrides: marks reaching it are the rule's to take or freeze."""
    kind: str = "channels"
    """Kind of the units whose anchor (source member) this op holds: channels or ffn."""
    shape_eval: Callable | None = None
    """Shape arithmetic: `(graph, node, known inputs) -> known output` (see shapeval). An op
    that has it passes marks (sizes read through Shape) from its inputs to its output."""
    dims: Callable | None = None
    """`(graph, node) -> output dims` from known shape values, where ONNX inference loses them."""
    fold: Callable | None = None
    """`(node, input values, output index, opset) -> value` of a layout op over constants."""
    macs: Callable | None = None
    """`(node, static shapes by tensor name) -> multiply-accumulates` (informative)."""
    settings: tuple[int, ...] = ()
    """Inputs that are settings (scales, bounds, fill values), not parameters, even when
    they are float constants: parameter counts leave them out."""

    @property
    def marks(self) -> bool:
        """Whether the rule handles marks: it computes shape values or reads a size input.
        Marks reaching any other op freeze their units (the count is used as a value)."""
        return self.shape_eval is not None or self.sizes


@dataclass
class OpEntry:
    domain: str
    op_type: str
    traits: Traits = field(default_factory=Traits)
    rules: list[tuple[int, RuleFn]] = field(default_factory=list)
    """(since opset, rule), ascending."""

    @property
    def name(self) -> str:
        return f"{self.domain + '::' if self.domain else ''}{self.op_type}"


_TABLE: dict[tuple[str, str], OpEntry] = {}
_NO_TRAITS = Traits()


def rule(*op_types: str, domain: str = "", since: int = 1,
         **traits: Any) -> Callable[[RuleFn], RuleFn]:
    """Register the decorated rule for each op type from opset `since` on, with `traits`
    (keyword arguments of Traits). A second rule for the same op and opset, or traits
    declared twice for one op, is an error."""
    declared = Traits(**traits)

    def register(fn: RuleFn) -> RuleFn:
        for op in op_types:
            entry = _TABLE.setdefault((domain, op), OpEntry(domain, op))
            if any(s == since for s, _ in entry.rules):
                raise ValueError(f"duplicate rule for {entry.name} since opset {since}")
            if traits:
                if entry.traits != _NO_TRAITS:
                    raise ValueError(f"traits of {entry.name} declared twice")
                entry.traits = declared
            entry.rules.append((since, fn))
            entry.rules.sort(key=lambda r: r[0])
        return fn

    return register


def _key(domain: str, op_type: str) -> tuple[str, str]:
    return ("" if domain == "ai.onnx" else domain, op_type)


def lookup(domain: str, op_type: str, opset: int) -> RuleFn | None:
    """The rule for an op at `opset` (the newest registered at or before it), or None."""
    entry = _TABLE.get(_key(domain, op_type))
    best = None
    for since, fn in entry.rules if entry else ():
        if since <= opset:
            best = fn
    return best


def traits(domain: str, op_type: str) -> Traits:
    entry = _TABLE.get(_key(domain, op_type))
    return entry.traits if entry else _NO_TRAITS


def entries() -> list[OpEntry]:
    """Every registered op, sorted by name."""
    return sorted(_TABLE.values(), key=lambda e: e.name)


def supported_ops() -> list[str]:
    """Names of the ops that have a rule (any other op is a barrier)."""
    return [e.name for e in entries() if e.rules]

