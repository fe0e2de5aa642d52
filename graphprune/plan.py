"""Pruning plans: what compress decided, saved as JSON and applied again later.

Format (version 2)::

    {
      "format": "graphprune-plan",
      "version": 2,
      "fingerprint": "sha256:…",          # op types and weight dims of the model it was made for
      "structure": "sha256:…",            # its groups: names, kinds, units, weights
      "settings": {"criterion": "l1", "allocation": "uniform", "target": {…}, …},
      "groups": [
        {"name": "layers.0.conv1", "kind": "channels", "units": 16, "weights": 3,
         "removed": [0, 5, 9]},
        …
      ],
      "blocks": [                          # removed residual blocks (scope blocks)
        {"index": 3, "label": "layers.1: post_attention_layernorm, mlp",
         "entry": "/layers.1/Add_output_0", "exit": "/layers.1/Add_1"}
      ],
      "sparsity": {"method": "sparsegpt", "pattern": "2:4", "sparsity": 0.5,   # optional
                   "layers": ["/fc1/MatMul", …], …}
    }

Groups are identified by their readable name (graphprune.names: the layer whose weight
produces the units, as `analyze` names them) and units by their index in the group's unit
order (the order of the producing weight's channels). Only groups that lose units are listed;
`weights` counts the constants each slices. The fingerprint hashes every node's op type and
the dims of its constant inputs, in graph order; weight values do not enter it, so a plan
applies to a fine-tuned copy of the model but not to another architecture or width.

Another export of the same module (TorchScript ↔ dynamo) has another fingerprint (other node
names, Flatten for Reshape, …) but the same groups: the same names, kinds and unit counts,
slicing weights of the same sizes. `structure` hashes exactly that, so such a model takes the
plan; where the exports differ (a BatchNorm folded into its conv in one and not in the other
couples other weights) the plan is refused in one line naming the first group that differs.

Version 1 plans (groups named by their node, no structure) are still read; they apply to the
model they were made for only.

Removed residual blocks (graphprune.blocks) are listed by position (`index`: the block's
place among the model's blocks in graph order, as `analyze --scope blocks` numbers them)
with the names a person recognises; `apply` checks a given `exit` (the Add's node name)
against the block at that position. A hand-written plan may name blocks by index alone
(ShortFormer-style alternating removal: `[{"index": 1}, {"index": 3}]`), or remove them
as the units of a group named `blocks`.

`sparsity` (optional) records a `graphprune sparsify` run on the model the groups leave
(the model itself when there are none): its settings and the layers (node names) it zeroed;
`apply` prunes the groups, then re-runs the sparsification on those layers (with the same
calibration data when the method reads data). Its other keys are
`passes.options.Options.sparsity_dict`'s.
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

from .analysis import Analysis, Group
from .edits import Member
from .errors import InputError

FORMAT = "graphprune-plan"
VERSION = 2
READABLE = (1, 2)
"""Plan versions this graphprune reads (1: groups named by node, same model only)."""


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


def structure(an: Analysis) -> str:
    """The groups as a plan sees them, whatever the exporter named nodes and values: each
    group's name, kind and unit count, and the role and size of every weight it slices.
    Two exports of one torch module share it where their coupled layers are the same."""
    h = hashlib.sha256()
    for line in sorted(_group_line(an, g) for g in an.groups):
        h.update(line.encode())
    return f"sha256:{h.hexdigest()[:32]}"


def _group_line(an: Analysis, g: Group) -> str:
    sizes = sorted(f"{m.role}:{_elements(an, m)}" for m in g.members)
    return f"{g.name}|{g.kind}|{len(g.units)}|{','.join(sizes)};"


def _elements(an: Analysis, m: Member) -> int:
    """Elements of a member's constant (-1 when its shape is unknown)."""
    name = an.graph.nodes[m.node].input[m.index]
    t = an.graph.initializers.get(name)
    dims = list(t.dims) if t is not None else an.graph.shape(name)
    if dims is None or not all(isinstance(d, int) for d in dims):
        return -1
    return int(np.prod(dims, dtype=np.int64))


@dataclass
class Plan:
    fingerprint: str
    groups: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    structure: str | None = None
    """The groups of the model it was made for (`structure`); None in version 1 plans."""
    version: int = VERSION
    blocks: list[dict[str, Any]] = field(default_factory=list)
    """Removed residual blocks: {index, label, entry, exit} (index alone suffices)."""
    sparsity: dict[str, Any] | None = None
    """A `graphprune sparsify` run on the pruned model: its settings and the layers zeroed."""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": FORMAT, "version": self.version,
                             "fingerprint": self.fingerprint}
        if self.structure is not None:
            d["structure"] = self.structure
        d = {**d, "settings": self.settings, "groups": self.groups}
        if self.blocks:
            d["blocks"] = self.blocks
        if self.sparsity is not None:
            d["sparsity"] = self.sparsity
        return d

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
        if d.get("version") not in READABLE:
            raise InputError(f"{where} has plan version {d.get('version')!r}; this graphprune "
                             f"reads versions {', '.join(map(str, READABLE))}")
        groups = d.get("groups")
        if not isinstance(d.get("fingerprint"), str) or not isinstance(groups, list) or not all(
                isinstance(g, dict) and isinstance(g.get("name"), str)
                and isinstance(g.get("removed"), list) for g in groups):
            raise InputError(f"{where} is malformed (fingerprint, groups[name, removed])")
        shape = d.get("structure")
        if shape is not None and not isinstance(shape, str):
            raise InputError(f"{where} is malformed (structure is not a string)")
        blocks = d.get("blocks") or []
        if not isinstance(blocks, list) or not all(
                isinstance(b, dict) and isinstance(b.get("index"), int)
                and not isinstance(b.get("index"), bool) for b in blocks):
            raise InputError(f"{where} is malformed (blocks[index])")
        sparsity = d.get("sparsity")
        if sparsity is not None and not (
                isinstance(sparsity, dict) and isinstance(sparsity.get("layers"), list)
                and all(isinstance(x, str) for x in sparsity["layers"])):
            raise InputError(f"{where} is malformed (sparsity must hold a list of layers)")
        return cls(d["fingerprint"], groups, d.get("settings") or {}, shape, d["version"],
                   blocks, sparsity)

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
            groups.append({"name": g.name, "kind": g.kind, "units": len(g.units),
                           "weights": len(g.members), "removed": gone})
    blocks = [{"index": k, "label": b.label, "entry": b.entry,
               "exit": an.graph.node_name(b.add)}
              for k, b in enumerate(an.blocks) if removed[b.unit]]
    return Plan(fingerprint(model), groups, settings, structure(an), blocks=blocks)


def check_fingerprint(model: onnx.ModelProto, plan: Plan) -> None:
    """A version 1 plan fits only the model it was made for (a later one may fit another
    export of it: `removed_from_plan` checks its groups)."""
    if plan.version == 1:
        _same_model(model, plan)


def _same_model(model: onnx.ModelProto, plan: Plan) -> str:
    have = fingerprint(model)
    if plan.fingerprint != have:
        raise InputError(f"the plan was made for a different model (fingerprint "
                         f"{plan.fingerprint}, this model has {have})")
    return have


def plan_groups(model: onnx.ModelProto, an: Analysis, plan: Plan) -> dict[str, Group]:
    """This model's groups by the names the plan uses, once the plan is known to fit: the
    same model (fingerprint), or another export of it (the same `structure`)."""
    if plan.version == 1:
        _same_model(model, plan)
        return {g.node: g for g in an.groups}
    by_name = {g.name: g for g in an.groups}
    if plan.fingerprint == fingerprint(model) or plan.structure == structure(an):
        return by_name
    why = _first_difference(by_name, plan) or "its groups are coupled differently"
    raise InputError(f"the plan was made for a different model, not another export of this "
                     f"one: {why} (fingerprint {plan.fingerprint}, this model has "
                     f"{fingerprint(model)})")


def _first_difference(by_name: dict[str, Group], plan: Plan) -> str | None:
    """What first tells the plan's groups from this model's, in words."""
    for entry in plan.groups:
        name = entry["name"]
        g = by_name.get(name)
        if g is None:
            return f"it has no group '{name}'"
        if entry.get("kind", g.kind) != g.kind:
            return f"group '{name}' holds {g.kind} here, {entry['kind']} in the plan's model"
        if entry.get("units", len(g.units)) != len(g.units):
            return (f"group '{name}' has {len(g.units)} units here, {entry['units']} in the "
                    "plan's model")
        if entry.get("weights", len(g.members)) != len(g.members):
            return (f"group '{name}' slices {len(g.members)} weights here, {entry['weights']} "
                    "in the plan's model (a BatchNorm folded into its conv in only one of "
                    "the exports does that)")
    return None


def removed_from_plan(model: onnx.ModelProto, an: Analysis, plan: Plan) -> np.ndarray:
    """The removed-units array the plan describes for this model (InputError if it does not
    fit: another model, or a group or unit the analysis does not offer)."""
    by_name = plan_groups(model, an, plan)
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
