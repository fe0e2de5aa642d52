"""What each criterion and allocation costs, on real-size models: seconds per stage of compress.

    GRAPHPRUNE_BENCH_CACHE=/work/tp/cache python bench/bench_selection_cost.py \
        [--models recogniser resnet50] [--target-macs 0.8]

Models: PP-OCRv4's recogniser (bench/ocr.py; calibration: 64 rendered text lines, the
calibration split) and the full-size ResNet-50 layout from models/ (25.6M parameters, 4.1
GMACs per 224×224 image; calibration: generated inputs). For each, `graphprune.compress` at a
MACs target with every criterion under uniform allocation (fragile-group check off: the
criterion alone), then l1 with uniform + fragile-group check and with sensitivity allocation.
Prints each run's wall seconds, the seconds of its scoring and selection stages, and what the
criterion or allocation said it measured (report notes, the criterion line's detail: taylor
probed in blocks or fell back). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import graphprune  # noqa: E402

RUNS = [  # (label, compress keywords)
    ("l1", {"criterion": "l1", "fragile_check": "off"}),
    ("wanda", {"criterion": "wanda", "fragile_check": "off"}),
    ("obd", {"criterion": "obd", "fragile_check": "off"}),
    ("taylor", {"criterion": "taylor", "fragile_check": "off"}),
    ("l1 + fragile check", {"criterion": "l1", "fragile_check": "on"}),
    ("l1 + sensitivity", {"criterion": "l1", "allocation": "sensitivity"}),
]
SAYS = ("taylor", "sensitivity", "fragile-group", "uniform: kept")


def model_and_calib(name: str, folder: Path) -> tuple[Path, Path | None]:
    """The model file and its calibration data (None: generated inputs)."""
    if name == "recogniser":
        import bench_recogniser
        import ocr
        return ocr.model_path(), bench_recogniser.calib_file(folder, 64)
    return common.export_cached(name), None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["recogniser", "resnet50"])
    ap.add_argument("--target-macs", type=float, default=0.8)
    ap.add_argument("--runs", nargs="+", default=[label for label, _ in RUNS])
    args = ap.parse_args()
    folder = common.cache_dir() / "recogniser"
    folder.mkdir(parents=True, exist_ok=True)
    print(common.machine())
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':<11} {'run':<19} {'wall s':>7} {'score s':>8} {'select s':>9} "
          f"{'macs':>6}  exact")
    for name in args.models:
        path, calib = model_and_calib(name, folder)
        for label, kw in RUNS:
            if label not in args.runs:
                continue
            t = time.perf_counter()
            _, rep = graphprune.compress(str(path), target_macs=args.target_macs, calib=calib,
                                         **({"calib_samples": 64} if calib else {}), **kw)
            wall = time.perf_counter() - t
            tm = rep.timings
            print(f"{name:<11} {label:<19} {wall:>7.1f} {tm.get('scoring', 0):>8.1f} "
                  f"{tm.get('selection', 0):>9.1f} {rep.macs_ratio:>6.3f}  "
                  f"{rep.exact_check.get('passed')}", flush=True)
            if rep.criterion_detail:
                print(f"    criterion: {rep.criterion} [{rep.criterion_detail}]")
            for n in rep.notes:
                if n.startswith(SAYS):
                    print(f"    {n}", flush=True)


if __name__ == "__main__":
    main()
