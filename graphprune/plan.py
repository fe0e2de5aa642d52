"""Pruning plans: what compress decided, saved as JSON and applied again later.

Format (version 1)::

    {
      "format": "graphprune-plan",
      "version": 1,
      "fingerprint": "sha256:…",          # op types and weight dims of the model it was made for
      "settings": {"criterion": "l1", "allocation": "uniform", "target": {…}, …},
      "groups": [
        {"name": "/layer1/conv1/Conv", "units": 16, "removed": [0, 5, 9]},
        …
      ],
      "blocks": [                          # removed residual blocks (scope blocks)
        {"index": 3, "label": "layers.1: post_attention_layernorm, mlp",
         "entry": "/layers.1/Add_output_0", "exit": "/layers.1/Add_1"}
      ]
    }

Groups are identified by name (the node whose weight produces the units, as in `analyze`)
and units by their index in the group's unit order (the order of the producing weight's
channels). Only groups that lose units are listed. The fingerprint hashes every node's op type
and the dims of its constant inputs, in graph order; weight values do not enter it, so a plan
applies to a fine-tuned copy of the model but not to another architecture or width.

Removed residual blocks (graphprune.blocks) are listed by position (`index`: the block's
place among the model's blocks in graph order, as `analyze --scope blocks` numbers them)
with the names a person recognises; `apply` checks a given `exit` (the Add's node name)
against the block at that position. A hand-written plan may name blocks by index alone
(ShortFormer-style alternating removal: `[{"index": 1}, {"index": 3}]`), or remove them
as the units of a group named `blocks`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from .analysis import Analysis
from .errors import InputError

FORMAT = "graphprune-plan"
VERSION = 1


def fingerprint(model: onnx.ModelProto) -> str:
    g = model.graph
    dims = {t.name: tuple(t.dims) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    dims[n.output[0]] = tuple(a.t.dims)
    h = hashlib.sha256()
    for n in g.node:
        shapes = ",".join("x".join(map(str, dims[i])) if i in dims else "-" for i in n.input)
        h.update(f"{n.domain}:{n.op_type}({shapes});".encode())
    return f"sha256:{h.hexdigest()[:32]}"


@dataclass
class Plan:
    fingerprint: str
    groups: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    """Removed residual blocks: {index, label, entry, exit} (index alone suffices)."""

    def to_dict(self) -> dict[str, Any]:
        out = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint,
               "settings": self.settings, "groups": self.groups}
        if self.blocks:
            out["blocks"] = self.blocks
        return out

    def to_json(self) -> str:
        """Indented JSON with each unit list on one line."""
        text = json.dumps(self.to_dict(), indent=2)
        return re.sub(r"\[\s*([-\d,\s]*?)\s*\]",
                      lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]",
                      text)

    @classmethod
    def from_dict(cls, d: Any, where: str = "plan") -> Plan:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError(f"{where} is not a graphprune plan (no \"format\": \"{FORMAT}\")")
        if d.get("version") != VERSION:
            raise InputError(f"{where} has plan version {d.get('version')!r}; this graphprune "
                             f"reads version {VERSION}")
        groups = d.get("groups")
        if not isinstance(d.get("fingerprint"), str) or not isinstance(groups, list) or not all(
                isinstance(g, dict) and isinstance(g.get("name"), str)
                and isinstance(g.get("removed"), list) for g in groups):
            raise InputError(f"{where} is malformed (fingerprint, groups[name, removed])")
        blocks = d.get("blocks") or []
        if not isinstance(blocks, list) or not all(
                isinstance(b, dict) and isinstance(b.get("index"), int)
                and not isinstance(b.get("index"), bool) for b in blocks):
            raise InputError(f"{where} is malformed (blocks[index])")
        return cls(d["fingerprint"], groups, d.get("settings") or {}, blocks)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plan:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as exc:
            raise InputError(f"cannot read plan {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise InputError(f"plan {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data, f"plan {path}")


def make_plan(model: onnx.ModelProto, an: Analysis, removed: np.ndarray,
              settings: dict[str, Any]) -> Plan:
    groups = []
    for g in an.groups:
        gone = [k for k, u in enumerate(g.units) if removed[u]]
        if gone and g.kind != "blocks":
            groups.append({"name": g.name, "units": len(g.units), "removed": gone})
    blocks = [{"index": k, "label": b.label, "entry": b.entry,
               "exit": an.graph.node_name(b.add)}
              for k, b in enumerate(an.blocks) if removed[b.unit]]
    return Plan(fingerprint(model), groups, settings, blocks)


def check_fingerprint(model: onnx.ModelProto, plan: Plan) -> None:
    have = fingerprint(model)
    if plan.fingerprint != have:
        raise InputError(f"the plan was made for a different model (fingerprint "
                         f"{plan.fingerprint}, this model has {have})")


def removed_from_plan(model: onnx.ModelProto, an: Analysis, plan: Plan) -> np.ndarray:
    """The removed-units array the plan describes for this model (InputError if it does not
    fit: another model, or a group or unit the analysis does not offer)."""
    check_fingerprint(model, plan)
    by_name = {g.name: g for g in an.groups}
    removed = np.zeros(len(an.roots), dtype=bool)
    for entry in plan.groups:
        g = by_name.get(entry["name"])
        if g is None:
            raise InputError(f"plan names group '{entry['name']}', which this model lacks")
        if entry.get("units", len(g.units)) != len(g.units):
            raise InputError(f"plan group '{g.name}' has {entry['units']} units, "
                             f"the model {len(g.units)}")
        for k in entry["removed"]:
            if not isinstance(k, int) or not 0 <= k < len(g.units):
                raise InputError(f"plan group '{g.name}': unit index {k!r} out of range")
            if g.units[k] in g.frozen:
                raise InputError(f"plan group '{g.name}': unit {k} is frozen "
                                 f"({'; '.join(g.frozen[g.units[k]])})")
            removed[g.units[k]] = True
        if all(removed[u] for u in g.units):
            raise InputError(f"plan group '{g.name}' removes every unit")
    _blocks_from_plan(an, plan, removed)
    return removed


def _blocks_from_plan(an: Analysis, plan: Plan, removed: np.ndarray) -> None:
    """Mark the blocks the plan names (by index, its exit checked when given)."""
    if not plan.blocks:
        return
    if not an.blocks:
        raise InputError("the plan removes residual blocks; this model has none")
    group = next(g for g in an.groups if g.kind == "blocks")
    for entry in plan.blocks:
        k = entry["index"]
        if not 0 <= k < len(an.blocks):
            raise InputError(f"plan block index {k} out of range (the model has "
                             f"{len(an.blocks)} blocks)")
        b = an.blocks[k]
        exit_name = an.graph.node_name(b.add)
        if "exit" in entry and entry["exit"] != exit_name:
            raise InputError(f"plan block {k} ends at '{entry['exit']}'; the model's block "
                             f"{k} ends at '{exit_name}'")
        if b.unit in group.frozen:
            raise InputError(f"plan block {k} ({b.label}) cannot be removed: "
                             f"{'; '.join(group.frozen[b.unit])}")
        removed[b.unit] = True
    if all(removed[u] for u in group.units):
        raise InputError("the plan removes every residual block")
