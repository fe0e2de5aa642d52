"""Readable, stable group names: what a user recognises in their own model.

A group is named after the layer whose weight produces its units, as the model's author
wrote it: the torch module path (`features.0`, `encoder.layer.3.attention.self.query`).
In order, the first of these that exists:

1. the producing weight's own name, when the exporter kept the parameter's name
   (`features.0.weight` → `features.0`; a trailing `.weight` or `.bias` is dropped so that
   every source below gives the same name), unless it is another module's weight (tied
   embeddings, see `layer_name`);
2. the module scope the dynamo exporter records on the node (`pkg.torch.onnx.name_scopes`:
   `['', 'layers.0', 'layers.0.query', 'linear']` → `layers.0.query`), for weights it
   renamed (a Linear's transposed weight becomes `val_56`), unless its optimiser made the
   node by fusing others;
3. the module path in a TorchScript node name (`/layers/layers.1/layers.1.0/conv1/Conv` →
   `layers.1.0.conv1`), for weights it renamed (a BatchNorm folded into a conv becomes
   `onnx::Conv_146`);
4. the node name.

Names an exporter makes up (`onnx::Conv_146`, `val_56`, `/stem/Constant_output_0`) are never
used. The same torch module therefore gets the same name from both torch exporters, which is
what lets a plan made on one export apply to the other (graphprune.plan). Names are made
unique in graph order (`name#2` for a second group of the same weight, as Q/K/V pieces of one
fused weight are).
"""

from __future__ import annotations

import ast
import re

import onnx

GENERATED = re.compile(r"::|^_?val_\d+$|^\d+$|_output_\d+$|^$")
"""Value names exporters make up: TorchScript's `onnx::Conv_146` and numbered values, the
dynamo exporter's `val_56`, a Constant node's `/stem/Constant_output_0`."""
SUFFIXES = (".weight", ".bias")
SCOPES_KEY = "pkg.torch.onnx.name_scopes"
REWRITTEN_KEY = "pkg.onnxscript.rewriter.rule_name"


def from_weight(name: str | None) -> str | None:
    """The layer a parameter name names, None for a name an exporter made up."""
    if not name or GENERATED.search(name):
        return None
    for suffix in SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def from_scopes(node: onnx.NodeProto) -> str | None:
    """The innermost module the dynamo exporter says the node came from (its metadata lists
    the scopes from the root module, '', to the node's own fx name). A node its optimiser
    made by fusing others carries the scope of one of them (a BatchNorm folded into a conv
    names the BatchNorm): not used."""
    meta = {p.key: p.value for p in node.metadata_props}
    value = meta.get(SCOPES_KEY)
    if value is None or REWRITTEN_KEY in meta:
        return None
    try:
        scopes = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(scopes, list) or len(scopes) < 3 or not all(
            isinstance(s, str) for s in scopes):
        return None
    return scopes[-2] or None


def from_torchscript(node_name: str) -> str | None:
    """The module path in a TorchScript node name `/scope/…/scope/OpType`.

    Each scope is the module's name within the nearest enclosing module that ran: an
    attribute (`conv1`) or, for a child of a Sequential or ModuleList, the parent's name with
    the index (`layers.1` inside `layers`, `layers.1.0` inside `layers.1`). A scope that
    starts with the previous one and a dot extends it; any other is a child of it."""
    if not node_name.startswith("/"):
        return None
    scopes = node_name.split("/")[1:-1]
    if not scopes or not all(scopes):
        return None
    path, last = scopes[0], scopes[0]
    for scope in scopes[1:]:
        if scope.startswith(last + "."):
            path += scope[len(last):]
        else:
            path += "." + scope
        last = scope
    return path


def layer_name(node: onnx.NodeProto, node_name: str, weight: str | None,
               tied: bool = False) -> str:
    """The readable name of the layer whose `weight` (its initializer's name) node uses.

    A weight of another module (tied embeddings: GPT-2's output head and token embedding
    share one tensor, which has one name for two modules, and exporters pick different
    ones) is named by the node's module: the dynamo exporter's scope when the weight's name
    is not inside it, the TorchScript path when the graph reads the weight in several
    layers (`tied`)."""
    own = from_weight(weight)
    scope = from_scopes(node)
    if scope is not None:
        return own if own is not None and (own + ".").startswith(scope + ".") else scope
    path = from_torchscript(node_name)
    if tied:
        return path or own or node_name
    return own or path or node_name


def dedupe(names: list[str]) -> list[str]:
    """The names made unique in order: a repeat becomes `name#2`, `name#3`, …"""
    seen: dict[str, int] = {}
    out = []
    taken = set(names)
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        if seen[name] == 1:
            out.append(name)
            continue
        k = seen[name]
        while f"{name}#{k}" in taken:
            k += 1
        seen[name] = k
        out.append(f"{name}#{k}")
        taken.add(out[-1])
    return out
