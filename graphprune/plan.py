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
      "sparsity": {"method": "sparsegpt", "pattern": "2:4", "sparsity": 0.5,   # optional
                   "layers": ["/fc1/MatMul", …], …}
    }

Groups are identified by name (the node whose weight produces the units, as in `analyze`)
and units by their index in the group's unit order (the order of the producing weight's
channels). Only groups that lose units are listed. The fingerprint hashes every node's op type
and the dims of its constant inputs, in graph order; weight values do not enter it, so a plan
applies to a fine-tuned copy of the model but not to another architecture or width.

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
    sparsity: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint,
             "settings": self.settings, "groups": self.groups}
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
        if d.get("version") != VERSION:
            raise InputError(f"{where} has plan version {d.get('version')!r}; this graphprune "
                             f"reads version {VERSION}")
        groups = d.get("groups")
        if not isinstance(d.get("fingerprint"), str) or not isinstance(groups, list) or not all(
                isinstance(g, dict) and isinstance(g.get("name"), str)
                and isinstance(g.get("removed"), list) for g in groups):
            raise InputError(f"{where} is malformed (fingerprint, groups[name, removed])")
        sparsity = d.get("sparsity")
        if sparsity is not None and not (
                isinstance(sparsity, dict) and isinstance(sparsity.get("layers"), list)
                and all(isinstance(x, str) for x in sparsity["layers"])):
            raise InputError(f"{where} is malformed (sparsity must hold a list of layers)")
        return cls(d["fingerprint"], groups, d.get("settings") or {}, sparsity)

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
        if gone:
            groups.append({"name": g.name, "units": len(g.units), "removed": gone})
    return Plan(fingerprint(model), groups, settings)


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
    return removed
