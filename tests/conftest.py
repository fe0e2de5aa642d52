"""Test-wide fixtures.

TVM-style: every rewrite any test runs (through `graphprune.compress` or directly) is followed
by `onnx.checker` and the invariants of `helpers.check_invariants`, and must leave its input
model untouched; every masked original is checked to differ only in values.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import helpers  # noqa: E402
from graphprune.passes import rewrite  # noqa: E402


@pytest.fixture(autouse=True)
def checked_rewrites(monkeypatch):
    """Wrap the rewrite pass so each model it emits is checked as it is made."""
    real_prune, real_mask = rewrite.prune_model, rewrite.masked_model
    made: list = []

    def prune_model(model, an, removed, spill=None):
        before = model.SerializeToString()
        pruned = real_prune(model, an, removed, spill)
        assert model.SerializeToString() == before, "prune_model modified its input model"
        helpers.check_invariants(model, pruned)
        made.append(pruned)
        return pruned

    def masked_model(model, an, removed):
        before = model.SerializeToString()
        masked = real_mask(model, an, removed)
        assert model.SerializeToString() == before, "masked_model modified its input model"
        helpers.check_masked(model, masked)
        return masked

    monkeypatch.setattr(rewrite, "prune_model", prune_model)
    monkeypatch.setattr(rewrite, "masked_model", masked_model)
    yield made
