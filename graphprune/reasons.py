"""Why units stay, in words a user can act on: the analysis's reasons, explained.

The rules record terse reasons ("normalisation or softmax over a unit axis (LayerNormalization
/embeddings/LayerNorm)"); reports keep them as they are (JSON, `analyze --json`). The
terminal shows them through `plain`: what holds the units, and the flag that lifts it where
one exists (`--scope hidden`, `--allow-io-change`, `--protect`). A reason no entry here
knows is shown as recorded.

`summary` is the key a report counts units by: the reason without node names (the op type
stays where it says what to do).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection

from .analysis import SCOPES

STATISTICS = ("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization",
              "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceL1")
"""Ops whose statistic over the hidden size `--scope hidden` lets units through (inexactly)."""
MIXING = ("normalisation or softmax over a unit axis", "reduction over a unit axis")
"""The rules' reasons for a statistic over the units' own axis (graphprune.rules)."""
_WHERE = re.compile(r"^(?P<base>.*?) \((?P<op>(?:[\w.]+::)?[A-Z]\w*) (?P<node>[^()]*)\)$")


def split(reason: str) -> tuple[str, str | None, str | None]:
    """(reason, op type, node name): "why (Op node)" → ("why", "Op", "node")."""
    m = _WHERE.match(reason)
    if m is None:
        return reason, None, None
    return m["base"], m["op"], m["node"]


def summary(reason: str) -> str:
    """The reason without its node: what a report counts units by. A statistic over the
    units' axis keeps its op type (LayerNormalization and Softmax are lifted differently)."""
    base, op, _ = split(reason)
    return f"{base} ({op})" if op is not None and base in MIXING else base


def plain(reason: str, *, scope: Collection[str] = (), state: Collection[str] = ()) -> str:
    """`reason` in plain words, with the flag that lifts it where one does. `scope`: the
    run's unit kinds; `state`: graph inputs and outputs that carry state (a KV cache), which
    `--allow-io-change` lets shrink."""
    base, op, node = split(reason)
    if base.endswith(")") and op is None:  # a summary: "why (Op)"
        cut = base.rfind(" (")
        if cut > 0 and base[:cut] in MIXING:
            base, op = base[:cut], base[cut + 2:-1]
    at = f" at {node}" if node else ""
    for pattern, explain in _EXPLAIN:
        m = re.match(pattern, base)
        if m is not None:
            text = explain(m, op, set(scope), set(state))
            if text is not None:
                return text.replace("{at}", at)
    return reason


def _mixing(m: re.Match, op: str | None, scope: set[str], state: set[str]) -> str:
    if op in STATISTICS:
        lift = "" if "hidden" in scope else "; `--scope hidden` prunes them, inexactly"
        return f"frozen by {op}{{at}} over the hidden size{lift}"
    what = op or "a normalisation, softmax or reduction"
    return f"frozen by {what}{{at}} over the units' axis, which mixes them"


def _output(m: re.Match, op: str | None, scope: set[str], state: set[str]) -> str:
    name = m[1]
    if name in state:
        return (f"reaches graph output '{name}', state fed back as an input; "
                "`--allow-io-change` lets it shrink")
    return f"reaches graph output '{name}' (outputs keep their shape)"


def _input(m: re.Match, op: str | None, scope: set[str], state: set[str]) -> str:
    name = m[1]
    if name in state:
        return (f"meets graph input '{name}'{{at}}, state fed back from an output; "
                "`--allow-io-change` lets it shrink")
    return f"meets graph input '{name}'{{at}} (inputs keep their shape)"


def _scope(m: re.Match, op: str | None, scope: set[str], state: set[str]) -> str:
    kind = m[1]
    wider = ",".join([*sorted(scope, key=SCOPES.index), kind]) if scope else kind
    inexact = ", inexactly" if kind == "hidden" else ""
    return f"{kind} units are outside --scope; `--scope {wider}` prunes them{inexact}"


Explain = Callable[[re.Match, "str | None", "set[str]", "set[str]"], "str | None"]
_EXPLAIN: list[tuple[str, Explain]] = [
    (r"^(?:normalisation or softmax|reduction) over a unit axis$", _mixing),
    (r"^reaches graph output '(.*)'$", _output),
    (r"^combined with graph input '(.*)', which carries no units$", _input),
    (r"^comes from graph input '(.*)'$", _input),
    (r"^(channels|heads|ffn|hidden) not in --scope$", _scope),
    (r"^no rule for op (.*)$", lambda m, *_: f"no rule for op {m[1]}{{at}}: what it touches "
                                            "stays (a blocker)"),
    (r"^combined with a tensor that carries no units$",
     lambda m, *_: "joined{at} to a tensor that has no units there (it would have to "
                   "shrink with them)"),
    (r"^protected by --protect$", lambda m, *_: "protected by --protect"),
]
