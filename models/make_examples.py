"""Regenerate the small ONNX files checked in under ``models/examples/``.

Run as ``python -m models.make_examples``. The README demo needs a real
model file that works without torch installed, so we commit one tiny export
and keep this script as the single way to rebuild it.
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
}


def make_examples(out_dir: Path = EXAMPLES_DIR) -> list[Path]:
    """Export every example (dynamic batch) into ``out_dir`` and sanity-check it."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from models import get
    from models.export import export_spec

    written = []
    for filename, (name, exporter) in EXAMPLES.items():
        path = export_spec(name, out_dir / filename, exporter, dynamic_batch=True)
        onnx.checker.check_model(str(path))
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise RuntimeError(f"{path} is {size} bytes, over the {MAX_BYTES} byte budget")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = np.zeros((2, *get(name).input_shape[1:]), dtype=np.float32)
        (out,) = sess.run(None, {"input": x})
        if out.shape[0] != 2:
            raise RuntimeError(f"{path}: batch axis is not dynamic (output {out.shape})")
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
