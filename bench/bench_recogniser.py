"""Selection on a real text recogniser: PP-OCRv4's recogniser on rendered text (see ocr.py).

    python bench/bench_recogniser.py groups [--ratio 0.1] [--eval-lines 160]
    python bench/bench_recogniser.py matrix [--macs 0.9 0.8 0.6] [--variants ...]
                                            [--recover none bias refit] [--json out.json]

`groups`: every prunable group alone loses `ratio` of its units (lowest l1 first; the masked
original, which the exact check proves equal to the pruned model) and the evaluation lines are
read: which groups are fragile. `matrix`: `graphprune.compress` at MACs targets for each
selection variant (uniform without and with its fragile-group check, sensitivity with and
without bias-compensated trials) × recovery method, with `--calib` the calibration lines
(disjoint from the evaluation lines); character accuracy of the pruned model, MACs reached,
the exact check, seconds, and what the selection measured (from the report's notes).
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import ocr  # noqa: E402
from graphprune.passes import rewrite, scoring  # noqa: E402
from graphprune.passes.selection import removal  # noqa: E402

import graphprune  # noqa: E402
from graphprune.analysis import analyze_graph  # noqa: E402
from graphprune.ir import Graph  # noqa: E402

VARIANTS = {
    # name: compress keywords (besides target, calib and recover)
    "uniform-noprotect": {"allocation": "uniform", "fragile_check": "off"},
    "uniform": {"allocation": "uniform", "fragile_check": "on"},
    "sensitivity-plain": {"allocation": "sensitivity", "sensitivity_trials": "plain"},
    "sensitivity-comp": {"allocation": "sensitivity", "sensitivity_trials": "compensated"},
}


def per_group(model: onnx.ModelProto, data: ocr.TextSet, chars: list[str],
              ratio: float) -> list[dict]:
    """Character accuracy with one group at a time losing `ratio` of its units (l1)."""
    an = analyze_graph(Graph(model))
    scores = scoring.score_units(an, "l1")
    rows = []
    for gi, g in enumerate(an.groups):
        c = min(len(g.prunable), int(np.floor(ratio * len(g.units) + 1e-9)))
        if not g.prunable or c == 0:
            continue
        removed, _ = removal(an, scores, {gi: c})
        t = time.perf_counter()
        acc = ocr.evaluate(rewrite.masked_model(model, an, removed), data, chars)
        rows.append({"group": g.name, "units": len(g.units), "removed": c, **acc,
                     "seconds": round(time.perf_counter() - t, 1)})
        print(f"{g.name:<16} {len(g.units):>5} {c:>4}   {acc['char_acc']:.4f}  "
              f"{acc['line_acc']:.3f}", flush=True)
    return rows


def calib_file(folder: Path, lines: int) -> Path:
    path = folder / f"ocr_calib_{lines}.npz"
    if not path.exists():
        np.savez(path, x=ocr.text_set("calib", lines).x)
    return path


def matrix(args, path: Path, data: ocr.TextSet, chars: list[str]) -> list[dict]:
    folder = Path(args.work)
    folder.mkdir(parents=True, exist_ok=True)
    calib = calib_file(folder, args.calib_lines)
    rows = []
    for macs in args.macs:
        for variant in args.variants:
            for recover in args.recover:
                kw = dict(VARIANTS[variant])
                if recover != "none" or "recover" in _option_names():
                    kw["recover"] = recover
                t = time.perf_counter()
                try:
                    pruned, rep = graphprune.compress(
                        str(path), target_macs=macs, calib=str(calib),
                        calib_samples=args.calib_lines, criterion=args.criterion, **kw)
                except TypeError as exc:  # an option this version of graphprune lacks
                    print(f"{macs:.2f} {variant:<18} {recover:<6} skipped: {exc}", flush=True)
                    continue
                secs = time.perf_counter() - t
                acc = ocr.evaluate(pruned, data, chars)
                row = {"macs_target": macs, "variant": variant, "recover": recover,
                       "macs": round(rep.macs_ratio, 4), "params": round(rep.params_ratio, 4),
                       **{k: round(v, 4) for k, v in acc.items()},
                       "exact": rep.exact_check.get("passed"),
                       "max_abs_err": rep.exact_check.get("max_abs_err"),
                       "seconds": round(secs, 1),
                       "select_seconds": round(rep.timings.get("selection", 0.0), 1),
                       "notes": [n for n in rep.notes if n.startswith(
                           ("sensitivity", "uniform", "fragile", "protected"))]}
                rows.append(row)
                print(f"{macs:.2f} {variant:<18} {recover:<6} macs {row['macs']:.3f} "
                      f"char {row['char_acc']:.4f} line {row['line_acc']:.3f} "
                      f"exact {row['exact']} {secs:6.1f} s (select {row['select_seconds']} s)",
                      flush=True)
                for n in row["notes"]:
                    print(f"      {n}", flush=True)
    return rows


def _option_names() -> set[str]:
    import dataclasses
    return {f.name for f in dataclasses.fields(graphprune.Options)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("groups", "matrix"))
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--eval-lines", type=int, default=160)
    ap.add_argument("--calib-lines", type=int, default=64)
    ap.add_argument("--macs", type=float, nargs="+", default=[0.9, 0.8, 0.6])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--recover", nargs="+", default=["none", "bias", "refit"])
    ap.add_argument("--criterion", default="l1")
    ap.add_argument("--work", default=str(common.cache_dir() / "recogniser"))
    ap.add_argument("--json")
    args = ap.parse_args()
    path = ocr.model_path()
    chars = ocr.characters(path)
    data = ocr.text_set("eval", args.eval_lines)
    print(common.machine())
    print(f"load average {os.getloadavg()[0]:.1f}; {len(data.labels)} evaluation lines, "
          f"{sum(map(len, data.labels))} characters")
    t = time.perf_counter()
    base = ocr.evaluate(str(path), data, chars)
    print(f"original: char {base['char_acc']:.4f} line {base['line_acc']:.3f} "
          f"({time.perf_counter() - t:.1f} s)", flush=True)
    model = onnx.load(str(path))
    out = {"original": base, "eval_lines": len(data.labels)}
    if args.mode == "groups":
        print(f"group            units  cut   char    line   (each group alone at "
              f"ratio {args.ratio})")
        out["groups"] = per_group(model, data, chars, args.ratio)
    else:
        out["runs"] = matrix(args, path, data, chars)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
