"""The op-rule registry: one small function per op type, keyed by (domain, op_type, opset).

An op without a rule is a barrier: the analysis freezes every slot that touches it and names
it as a blocker. Nothing passes channels through by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..analysis import Ctx

RuleFn = Callable[["Ctx"], None]


@dataclass(frozen=True)
class RuleEntry:
    domain: str
    op_type: str
    since: int
    fn: RuleFn


_RULES: dict[tuple[str, str], list[RuleEntry]] = {}


def rule(*op_types: str, domain: str = "", since: int = 1) -> Callable[[RuleFn], RuleFn]:
    """Register `fn` for each op type from opset `since` on; a duplicate key is an error."""

    def register(fn: RuleFn) -> RuleFn:
        for op in op_types:
            entries = _RULES.setdefault((domain, op), [])
            if any(e.since == since for e in entries):
                raise ValueError(f"duplicate rule for {domain or 'ai.onnx'}::{op} since {since}")
            entries.append(RuleEntry(domain, op, since, fn))
            entries.sort(key=lambda e: e.since)
        return fn

    return register


def lookup(domain: str, op_type: str, opset: int) -> RuleFn | None:
    domain = "" if domain == "ai.onnx" else domain
    best = None
    for entry in _RULES.get((domain, op_type), ()):
        if entry.since <= opset:
            best = entry.fn
    return best


def supported_ops() -> list[str]:
    return sorted(f"{d + '::' if d else ''}{op}" for d, op in _RULES)
