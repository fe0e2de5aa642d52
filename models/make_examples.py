"""Regenerate the small ONNX files checked in under ``models/examples/``.

Run as ``python -m models.make_examples``. The README demo and tests need
real model files that work without torch installed, so we commit a few tiny
exports (a CNN, and a BERT with int64 ``input_ids``/``attention_mask`` and
dynamic batch and sequence axes) and keep this script as the single way to
rebuild them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

__all__ = ["EXAMPLES", "main", "make_examples"]

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
MAX_BYTES = 2 * 1024 * 1024

# file name -> (registered model, exporter)
EXAMPLES: dict[str, tuple[str, str]] = {
    "resnet_small.onnx": ("resnet_basic", "torchscript"),
    "bert_tiny.onnx": ("bert", "torchscript"),
}


def make_examples(out_dir: Path = EXAMPLES_DIR) -> list[Path]:
    """Export every example (dynamic axes) into ``out_dir`` and sanity-check it.

    Each file is run in onnxruntime at sizes other than the traced ones
    (batch 3, and sequence 11 where the model has one) to prove the dynamic
    axes really are dynamic.
    """
    import onnx
    import onnxruntime as ort

    from models import get
    from models.export import export_spec

    written = []
    for filename, (name, exporter) in EXAMPLES.items():
        spec = get(name)
        path = export_spec(name, out_dir / filename, exporter, dynamic_batch=True)
        onnx.checker.check_model(str(path))
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise RuntimeError(f"{path} is {size} bytes, over the {MAX_BYTES} byte budget")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        sizes = {"batch": 3, "sequence": 11}
        xs = spec.example_inputs(sizes, seed=1)
        outs = sess.run(None, {n: x.numpy() for n, x in zip(spec.input_names, xs, strict=True)})
        expect_seq = "sequence" in spec.dynamic_dims(exporter)
        for out in outs:
            if out.shape[0] != 3 or (expect_seq and out.ndim > 2 and out.shape[1] != 11):
                raise RuntimeError(f"{path}: dynamic axes not honoured (output {out.shape})")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: write the examples and print their paths and sizes."""
    parser = argparse.ArgumentParser(prog="python -m models.make_examples", description=__doc__)
    parser.add_argument("-o", "--out-dir", type=Path, default=EXAMPLES_DIR)
    args = parser.parse_args(argv)
    for path in make_examples(args.out_dir):
        print(f"{path}  ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
