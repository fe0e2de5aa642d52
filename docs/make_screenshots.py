"""Regenerate docs/report_resnet.png and docs/report_bert.png: the HTML report (`--html`) of
a ResNet-50 and a BERT-base-sized BERT from models/, compressed at ratio 0.4 with the CLI, as
full-page screenshots in headless Chromium.

    python docs/make_screenshots.py [--keep DIR]

Needs torch (to export the models, random weights with fixed seeds) and Chromium (Debian's
`chromium` package). Takes a few minutes on two cores. `--keep DIR` keeps the exported models,
the reports (JSON and HTML) there.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import chromium  # noqa: E402  (tests/chromium.py: the same headless runs the tests use)

WIDTH = 1100
"""Window width of the screenshots, in CSS pixels."""


def export_resnet50(path: Path) -> Path:
    """models/cnn/resnet.py's ResNet-50 layout (TorchScript exporter, dynamic batch)."""
    from models.export import export_spec

    return export_spec("resnet50", path, "torchscript")


def export_bert_base(path: Path) -> Path:
    """models/transformers/bert.py at BERT-base size: 12 layers, hidden 768, 12 heads, FFN
    3072, vocabulary 30522, 512 positions; dynamic batch and sequence."""
    import torch

    from models import InputSpec
    from models.export import export_onnx
    from models.transformers.bert import Bert
    from models.transformers.common import randomize_norms

    torch.manual_seed(0)
    model = Bert(vocab=30522, hidden=768, layers=12, heads=12, ffn=3072, max_positions=512)
    randomize_norms(model, seed=0)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 30522, (2, 7), generator=gen)
    mask = torch.ones(2, 7, dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    specs = [InputSpec("input_ids", (2, 7), "int64", 0, 30522, axes),
             InputSpec("attention_mask", (2, 7), "int64", 0, 2, axes)]
    return export_onnx(model.eval(), (ids, mask), path, inputs=specs)


RUNS = {
    # name: (export function, compress options)
    "resnet": (export_resnet50, ["--ratio", "0.4"]),
    "bert": (export_bert_base, ["--ratio", "0.4", "--allocation", "sensitivity"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep models and reports in this directory")
    parser.add_argument("--only", choices=sorted(RUNS), action="append",
                        help="regenerate only this screenshot (repeatable)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gp-docs-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.only or RUNS:
            export, options = RUNS[name]
            model = work / f"{name}.onnx"
            if not model.exists():
                export(model)
            html = work / f"report_{name}.html"
            subprocess.run([sys.executable, "-m", "graphprune.cli", "compress", str(model),
                            "-o", str(work / f"{name}.pruned.onnx"), *options, "--quiet",
                            "--report", str(work / f"report_{name}.json"), "--html", str(html)],
                           check=True)
            png = chromium.screenshot(html, ROOT / "docs" / f"report_{name}.png", WIDTH)
            print(f"wrote {png.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
