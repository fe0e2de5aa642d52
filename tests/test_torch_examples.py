"""The examples in examples/ run, in their reduced mode (`--smoke`: seeded random data or a
tiny random model, a few steps): each prunes, trains or distils, exports and passes the
exact check. Their full runs and numbers are in bench/README.md ("The torch path")."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from zoo import ROOT

EXAMPLES = {
    "digits_cnn.py": [r"pruned to 0\.4 of the MACs with taylor \+ cubic",
                      r"MACs 0\.[34]\d\d of the original",
                      r"exact check passed, onnxruntime test top-1 [01]\.\d{4}"],
    "lottery_ticket.py": [r"round 1: .* sparsity 0\.368 .* rewound to iteration 20",
                          r"round 2: .* sparsity 0\.600",
                          r"ticket: test top-1 [01]\.\d{4} at 0\.[34]\d\d of the MACs .*exact "
                          r"check passed"],
    "minilm_distill.py": [r"one-shot wanda at ratio 0\.5: held-out mean cosine [01]\.\d{4}",
                          r"after 6 distillation steps: held-out mean cosine [01]\.\d{4}",
                          r"exact check passed, onnxruntime held-out mean cosine [01]\.\d{4}"],
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_smoke(name):
    if name == "minilm_distill.py":
        pytest.importorskip("transformers", reason="the MiniLM example needs transformers")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / name), "--smoke"],
                         capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    for pattern in EXAMPLES[name]:
        assert re.search(pattern, out.stdout), (pattern, out.stdout)
