"""Speed of `graphprune compress` on a ResNet-50-sized model, end to end (validation included).

    python bench/bench_compress.py [--repeat 3] [--ratio 0.4]

Exports the full-size ResNet-50 layout from models/ (25.6M parameters, TorchScript exporter,
dynamic batch), then times the real CLI as a user runs it (process start, load, analysis,
rewrite, checker, exact check at batch 1 and 2, atomic save) and prints the per-stage split.
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ratio", type=float, default=0.4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "resnet50.onnx"
        t = time.perf_counter()
        from models.export import export_spec

        export_spec("resnet50", src, "torchscript")
        print(f"exported resnet50 in {time.perf_counter() - t:.1f} s "
              f"({src.stat().st_size / 2**20:.1f} MB)")
        walls, reports = [], []
        for k in range(args.repeat):
            out, rep = Path(tmp) / f"out{k}.onnx", Path(tmp) / f"rep{k}.json"
            t = time.perf_counter()
            subprocess.run(["graphprune", "compress", str(src), "-o", str(out), "--ratio",
                            str(args.ratio), "--quiet", "--report", str(rep)], check=True)
            walls.append(time.perf_counter() - t)
            reports.append(json.loads(rep.read_text()))
        r = reports[-1]
        print(f"{'run':<6}{'wall s':>8}{'api s':>8}  stages")
        for k, (w, rp) in enumerate(zip(walls, reports, strict=True)):
            stages = " ".join(f"{n}={v:.2f}" for n, v in rp["timings"].items())
            print(f"{k:<6}{w:>8.2f}{rp['seconds']:>8.2f}  {stages}")
        print(f"median wall {statistics.median(walls):.2f} s (target < 5 s); params "
              f"{r['params_before']:,} -> {r['params_after']:,} ({r['params_ratio']:.3f}); "
              f"MACs ratio {r['macs_ratio']:.3f}; exact check "
              f"{'passed' if r['exact_check']['passed'] else 'FAILED'} "
              f"(max abs err {r['exact_check']['max_abs_err']:.1e})")


if __name__ == "__main__":
    main()
