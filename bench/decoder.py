"""The trained byte-level decoder: build it, measure perplexity, write calibration data, prune it.

    python -m bench.decoder build                 # train (or load from the cache) and export
    python -m bench.decoder eval [MODEL.onnx ...] # per-byte perplexity on the held-out windows
    python -m bench.decoder calib OUT.npz [--samples 128]
    python -m bench.decoder prune [--run ffn:0.3]  # graphprune compress: perplexity before/after

The model, data and cache are `models.decoder` / `models.decoder_data` (see there). `build`
prints the model's size, its training cost, the eval perplexity of torch and of the three
exports (models/export.py's TorchScript and dynamo files, and a plain
`torch.onnx.export(..., dynamo=True)` with external data), and the unigram baseline. `prune`
runs the `graphprune` command on each export, as a user would, and measures the result.
Run from the repository root (or as `python bench/decoder.py ...`).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import common  # noqa: E402

from models import decoder as dec  # noqa: E402
from models.decoder_data import (  # noqa: E402
    EVAL_WINDOWS,
    calibration_npz,
    eval_windows,
    load_corpus,
    unigram_nll,
)

KINDS = ("torchscript", "dynamo", "default")
"""The exports: models/export.py with each exporter, and torch's plain dynamo default."""
DEFAULT_RUNS = ("ffn:0.3", "ffn:0.5", "heads:0.3", "heads:0.5")
"""With 2 KV heads per layer a head unit is a KV group (4 query heads): 0.3 rounds down to
none of the 2, 0.5 removes one."""
DATA_CRITERIA = ("activation", "apoz", "wanda", "obd", "taylor")
"""Criteria that read calibration data; they get `--calib` (the calibration files' windows)."""


def _progress(step: int, loss: float) -> None:
    print(f"  step {step:>5}  train loss {loss:.4f} nats/byte", flush=True)


def _trained():
    model, meta, where = dec.load_or_train(progress=_progress)
    return model, meta, where


def cmd_build(args: argparse.Namespace) -> int:
    """Train or load, export all three ways, print perplexities."""
    t0 = time.perf_counter()
    corpus = load_corpus()
    print(common.machine())
    print(f"corpus: {json.dumps(corpus.describe())}")
    model, meta, where = _trained()
    log = meta["log"]
    print(f"decoder: {where}")
    print(f"  config {meta['config']}")
    print(f"  {meta['params']:,} parameters; {meta['steps']} steps x {meta['train']['batch']} "
          f"windows of {meta['config']['context']} bytes = {meta['tokens_seen']:,} bytes seen")
    print(f"  training: {log['wall_s']:.0f} s wall, {log['cpu_s']:.0f} s CPU "
          f"({meta['train']['threads']} threads); loss {log['first_loss']:.3f} -> "
          f"{log['final_train_loss']:.3f} nats/byte (mean of the last "
          f"{meta['train']['log_every']} steps)")
    windows = eval_windows(corpus, args.windows)
    uni = unigram_nll(corpus.train, windows)
    rows = [["unigram (train byte frequencies)", f"{math.exp(uni):.3f}",
             f"{uni / math.log(2):.3f}", "-"]]
    ref = dec.perplexity_torch(model, windows)
    rows.append(["torch", f"{ref.ppl:.4f}", f"{ref.bits_per_byte:.4f}", "-"])
    for kind in KINDS:
        t = time.perf_counter()
        path = dec.exported(model, where, kind)
        p = dec.perplexity_onnx(path, windows)
        rel = abs(p.ppl - ref.ppl) / ref.ppl
        rows.append([f"onnxruntime, {kind} export ({time.perf_counter() - t:.1f} s)",
                     f"{p.ppl:.4f}", f"{p.bits_per_byte:.4f}", f"{rel:.1e}"])
    print(f"\nheld-out: {len(windows)} windows x {windows.shape[1] - 1} predicted bytes "
          f"from {len(corpus.eval_files)} eval files")
    print(common.table(["model", "ppl/byte", "bits/byte", "rel diff vs torch"], rows))
    for kind in KINDS:
        print(f"  {kind}: {dec.exported(model, where, kind)}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Perplexity of ONNX files (default: the trained model and its exports)."""
    corpus = load_corpus()
    windows = eval_windows(corpus, args.windows)
    rows = []
    if not args.models:
        model, _, where = _trained()
        p = dec.perplexity_torch(model, windows)
        rows.append(["torch", f"{p.ppl:.4f}", f"{p.bits_per_byte:.4f}"])
        args.models = [dec.exported(model, where, kind) for kind in KINDS]
    for path in args.models:
        p = dec.perplexity_onnx(Path(path), windows)
        rows.append([str(path), f"{p.ppl:.4f}", f"{p.bits_per_byte:.4f}"])
    print(common.table(["model", "ppl/byte", "bits/byte"], rows))
    return 0


def cmd_calib(args: argparse.Namespace) -> int:
    """Write the calibration arrays."""
    path = calibration_npz(args.output, args.samples)
    print(f"{path}: input_ids [{args.samples}, 128] int64 from the calibration files")
    return 0


def _compress(src: Path, out_dir: Path, ratio: float, scope: str, criterion: str,
              calib: Path | None, samples: int) -> dict:
    """One `graphprune compress` run; its report, or why it failed."""
    exe = shutil.which("graphprune") or str(Path(sys.executable).parent / "graphprune")
    out, rep = out_dir / "pruned.onnx", out_dir / "report.json"
    cmd = [exe, "compress", str(src), "-o", str(out), "--ratio", str(ratio), "--scope", scope,
           "--criterion", criterion, "--report", str(rep), "--quiet"]
    if calib is not None:
        cmd += ["--calib", str(calib), "--calib-samples", str(samples)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t
    if proc.returncode != 0 or not rep.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        return {"ok": False, "rc": proc.returncode, "error": tail[-1] if tail else "",
                "cmd": " ".join(cmd), "seconds": seconds}
    report = json.loads(rep.read_text())
    return {"ok": True, "out": out, "report": report, "seconds": seconds,
            "cmd": " ".join(cmd)}


def _kept_units(report: dict) -> dict[str, tuple[int, int]]:
    """Units before/after per kind over the groups that could be pruned (not the lm_head's
    vocabulary or the hidden width, which are frozen whole)."""
    kinds: dict[str, tuple[int, int]] = {}
    for g in report.get("group_details", []):
        if g["frozen"] >= g["units_before"]:
            continue
        a, b = kinds.get(g["kind"], (0, 0))
        kinds[g["kind"]] = (a + g["units_before"], b + g["units_after"])
    return dict(sorted(kinds.items()))


def _measure(src: Path, before: float, run_dir: Path, scope: str, ratio: float,
             criterion: str, calib: Path, samples: int, windows) -> tuple[dict, list]:
    """One compress run on `src`: its JSON record and its table row."""
    data = calib if criterion in DATA_CRITERIA else None
    r = _compress(src, run_dir, ratio, scope, criterion, data, samples)
    row = {"scope": scope, "criterion": criterion, "ratio": ratio, "ppl_before": before,
           "seconds": r["seconds"], "ok": r["ok"], "cmd": r["cmd"]}
    head = [scope, ratio, criterion]
    if not r["ok"]:
        row |= {"rc": r["rc"], "error": r["error"]}
        return row, [*head, "-", "-", "-", f"{before:.3f}", "-",
                     f"error rc {r['rc']}: {r['error'][:60]}", f"{r['seconds']:.1f}"]
    rep = r["report"]
    after = dec.perplexity_onnx(r["out"], windows).ppl
    ec = rep.get("exact_check", {})
    kinds = _kept_units(rep)
    row |= {"ppl_after": after, "params_ratio": rep["params_ratio"],
            "macs_ratio": rep["macs_ratio"], "exact": bool(ec.get("passed")),
            "max_abs_err": ec.get("max_abs_err"), "units": kinds}
    units = " ".join(f"{k} {b}/{a}" for k, (a, b) in kinds.items() if b < a)
    verdict = "pass" if ec.get("passed") else "FAIL"
    return row, [*head, f"{rep['params_ratio']:.3f}", f"{rep['macs_ratio']:.3f}",
                 units or "-", f"{before:.3f}", f"{after:.3f}",
                 f"{verdict} {ec.get('max_abs_err', float('nan')):.0e}",
                 f"{r['seconds']:.1f}"]


def cmd_prune(args: argparse.Namespace) -> int:
    """graphprune compress on every export x scope:ratio x criterion; perplexity before/after."""
    t0 = time.perf_counter()
    corpus = load_corpus()
    windows = eval_windows(corpus, args.windows)
    model, _, where = _trained()
    print(common.machine())
    ref = dec.perplexity_torch(model, windows)
    print(f"decoder {where.name}: torch perplexity {ref.ppl:.4f}/byte "
          f"({ref.bits_per_byte:.4f} bits) on {len(windows)} held-out windows")
    runs = []
    for spec in args.run or DEFAULT_RUNS:
        scope, _, ratio = spec.partition(":")
        runs.append((scope, float(ratio or 0.3)))
    results, rows = [], []
    with tempfile.TemporaryDirectory(prefix="decoder-prune-") as tmp:
        calib = calibration_npz(Path(tmp) / "calib.npz", args.calib_samples, corpus)
        for kind in args.exporter or KINDS:
            src = dec.exported(model, where, kind)
            before = dec.perplexity_onnx(src, windows).ppl
            for scope, ratio in runs:
                for criterion in args.criterion or ("l1", "wanda"):
                    run_dir = Path(tmp) / f"{kind}-{scope}-{ratio}-{criterion}"
                    run_dir.mkdir()
                    row, cells = _measure(src, before, run_dir, scope, ratio, criterion, calib,
                                          args.calib_samples, windows)
                    results.append({"export": kind, **row})
                    rows.append([kind, *cells])
                    print("  " + "  ".join(str(c) for c in rows[-1]), flush=True)
    data_criteria = [c for c in args.criterion or ("l1", "wanda") if c in DATA_CRITERIA]
    print(f"\nuniform allocation; {', '.join(data_criteria) or 'no criterion'} calibrated on "
          f"{args.calib_samples} windows of the calibration files; perplexity per byte on "
          f"{len(windows)} held-out windows")
    print(common.table(["export", "scope", "ratio", "criterion", "params", "MACs", "units kept",
                        "ppl before", "ppl after", "exact check", "s"], rows))
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"torch_ppl": ref.ppl, "runs": results,
                                               "versions": common.versions()}, indent=1))
    return 0 if all(r["ok"] and r["exact"] for r in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.decoder",
                                 description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train or load the decoder, export it, print perplexities")
    e = sub.add_parser("eval", help="perplexity of ONNX decoders on the held-out windows")
    e.add_argument("models", nargs="*", type=Path)
    c = sub.add_parser("calib", help="write calibration inputs (.npz) from the calibration files")
    c.add_argument("output", type=Path)
    c.add_argument("--samples", type=int, default=128)
    p = sub.add_parser("prune", help="graphprune compress each export; perplexity before/after")
    p.add_argument("--run", action="append", metavar="SCOPE:RATIO",
                   help=f"repeatable (default: {' '.join(DEFAULT_RUNS)})")
    p.add_argument("--criterion", action="append", help="repeatable (default: l1 and wanda)")
    p.add_argument("--exporter", action="append", choices=KINDS,
                   help="repeatable (default: all three exports)")
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--json", help="write the runs as JSON here")
    for s in (b, e, p):
        s.add_argument("--windows", type=int, default=EVAL_WINDOWS,
                       help=f"held-out windows of 128 bytes (default {EVAL_WINDOWS})")
    args = ap.parse_args(argv)
    return {"build": cmd_build, "eval": cmd_eval, "calib": cmd_calib,
            "prune": cmd_prune}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
