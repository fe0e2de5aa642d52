"""Depth: removing residual blocks (`--scope blocks`), chosen by block influence, by
sensitivity, or by position; quality, size and onnxruntime latency after 1, 2, … blocks.

    python bench/bench_depth.py decoder [--exporter default] [--max-blocks 6] [--json out.json]
    python bench/bench_depth.py minilm  [--exporter torchscript] [--max-blocks 8]
    python bench/bench_depth.py resnet  [--max-blocks 10]    (each: [--runs N] [--method M])

- `decoder`: the trained byte-level LLaMA (models/decoder.py, 4 layers = 8 blocks: each
  layer's attention and FFN branch), per-byte perplexity on the held-out windows; block
  scores calibrated on windows of the calibration files (bench/decoder.py's data).
- `minilm`: all-MiniLM-L6-v2 with its real weights (bench/bench_minilm.py's model and
  sentences), cosine of the sentence embeddings to the original's and paraphrase pair@1;
  calibrated on every other sentence, padded to one length.
- `resnet`: models' ResNet-50 layout (random weights, so no accuracy): parameters, MACs and
  latency against blocks removed (16 bottleneck blocks, 4 with projection shortcuts).

For k = 1, 2, …: `graphprune.compress(model, scope="blocks", ratio=(k + ½)/n,
block_criterion=c)` removes the k lowest-scored blocks by influence (ShortGPT's block
influence, 1 − cos of a block's input and output) or by sensitivity (output error with
the block alone removed); `position` removes the last k removable blocks through a plan
(`{"blocks": [{"index": i}, …]}`, ShortGPT's and ShortFormer's baseline). Every row passes the
exact check (the pruned model equals the original with the removed branches multiplied by
zero). MACs are counted here at the latency run's input (the decoder: 1 window of 128 bytes;
MiniLM: its first batch, 32 sentences of 20 tokens; ResNet: one 224×224 image), not taken from
the report, which counts them at its check inputs: the calibration samples for `compress`,
synthetic ones of another sequence length for a plan applied without data, and attention's MACs
grow with the square of that length (`macs_ratio_report` in the JSON keeps the report's).
Latency: onnxruntime with all graph optimisations, one intra-op thread (it computes on the
calling thread), on that input, the original and the pruned model run interleaved (`--runs`
rounds each, default 100); the ratio of their median CPU time per run (`time.thread_time`: what
the run itself costs, which other work on a shared machine does not inflate, unlike wall-clock
time; the JSON keeps the wall-clock medians too). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import common  # noqa: E402

import graphprune  # noqa: E402
from graphprune.metrics import count_macs  # noqa: E402
from graphprune.plan import fingerprint  # noqa: E402

METHODS = ("influence", "sensitivity", "position")
RUNS = 100


def latency(original, pruned, feeds: dict, runs: int = RUNS) -> dict[str, float]:
    """Pruned / original: ratio of median thread CPU time per run (and of wall time)."""
    sessions = [common.ort_session(original), common.ort_session(pruned)]
    cpu: list[list[float]] = [[], []]
    wall: list[list[float]] = [[], []]
    for s in sessions:
        s.run(None, feeds)  # warm-up
    for k in range(runs):
        for i in (0, 1) if k % 2 else (1, 0):
            c, w = time.thread_time(), time.perf_counter()
            sessions[i].run(None, feeds)
            cpu[i].append(time.thread_time() - c)
            wall[i].append(time.perf_counter() - w)
    med = [statistics.median(x) for x in cpu]
    return {"latency_cpu": med[1] / med[0],
            "latency_wall": statistics.median(wall[1]) / statistics.median(wall[0]),
            "ms_original": 1e3 * med[0]}


def remove(path: str, method: str, k: int, n: int, calib, samples: int, last: list[int]):
    """(pruned model, report) with k blocks removed by `method` (`last`: the removable
    blocks' indices in graph order, for `position`)."""
    if method == "position":
        model = onnx.load(path)
        plan = {"format": "graphprune-plan", "version": 1, "fingerprint": fingerprint(model),
                "settings": {"scope": ["blocks"]},
                "groups": [], "blocks": [{"index": i} for i in sorted(last[-k:])]}
        return graphprune.apply_plan(path, plan)
    return graphprune.compress(path, scope="blocks", ratio=(k + 0.5) / n,
                               block_criterion=method, calib=calib, calib_samples=samples)


def describe(report) -> tuple[str, list[dict]]:
    gone = [b for b in report.blocks["list"] if b["removed"]]
    return " ".join(f"#{b['index']}" for b in gone), gone


def sweep(path: str, kmax: int, calib, samples: int, quality, feeds, methods,
          runs: int = RUNS) -> list[dict]:
    """Rows for k = 1..kmax under each method: blocks, sizes, latency, quality."""
    an = graphprune.analyze(path, scope="blocks").analysis
    n = len(an.blocks)
    removable = [k for k, b in enumerate(an.blocks) if not b.reasons]
    print(f"{n} blocks, {len(removable)} removable:")
    for k, b in enumerate(an.blocks):
        print(f"  #{k:<2} {b.label:<60} {b.params:>10,} params"
              + ("" if not b.reasons else f"  kept: {b.reasons[0]}"))
    macs_before = count_macs(onnx.load(path), feeds)
    rows = []
    for method in methods:
        for k in range(1, min(kmax, len(removable) - 1) + 1):
            t = time.perf_counter()
            pruned, report = remove(path, method, k, n, calib, samples, removable)
            seconds = time.perf_counter() - t
            lat = latency(path, pruned, feeds, runs)
            names, gone = describe(report)
            row = {"method": method, "k": k, "blocks": names,
                   "scores": [b.get("score") for b in gone],
                   "params_ratio": round(report.params_ratio, 4),
                   "macs_ratio": round(count_macs(pruned, feeds) / macs_before, 4),
                   "macs_ratio_report": round(report.macs_ratio, 4),
                   "latency_cpu": round(lat["latency_cpu"], 3),
                   "latency_wall": round(lat["latency_wall"], 3),
                   "ms_original": round(lat["ms_original"], 3),
                   "exact": bool(report.exact_check["passed"]),
                   "max_abs_err": report.exact_check["max_abs_err"],
                   "seconds": round(seconds, 1), **quality(pruned)}
            rows.append(row)
            print("  " + json.dumps({x: row[x] for x in row if x != "scores"}), flush=True)
    return rows


def print_rows(rows: list[dict], quality_cols: list[tuple[str, str]]) -> None:
    heads = ["method", "k", "blocks removed", "params", "MACs", "CPU time",
             *[h for h, _ in quality_cols], "exact check"]
    body = [[r["method"], r["k"], r["blocks"], f"{r['params_ratio']:.3f}",
             f"{r['macs_ratio']:.3f}", f"{r['latency_cpu']:.3f}",
             *[fmt.format(r[key]) for key, fmt in quality_cols],
             f"{'pass' if r['exact'] else 'FAIL'} {r['max_abs_err']:.0e}"] for r in rows]
    print(common.table(heads, body))


# -- the decoder ------------------------------------------------------------------------------
def cmd_decoder(args: argparse.Namespace) -> dict:
    from models import decoder as dec
    from models.decoder_data import calibration_npz, eval_windows, load_corpus

    corpus = load_corpus()
    windows = eval_windows(corpus, args.windows)
    model, _, where = dec.load_or_train()
    src = dec.exported(model, where, args.exporter)
    base = dec.perplexity_onnx(src, windows).ppl
    print(f"decoder {where.name} ({args.exporter} export): perplexity {base:.4f}/byte on "
          f"{len(windows)} held-out windows")
    feeds = {"input_ids": windows[:1, :-1].astype(np.int64)}
    with tempfile.TemporaryDirectory() as tmp:
        calib = calibration_npz(Path(tmp) / "calib.npz", args.calib_samples, corpus)
        rows = sweep(str(src), args.max_blocks, str(calib), args.calib_samples,
                     lambda m: {"ppl": dec.perplexity_onnx(m, windows).ppl}, feeds,
                     args.method or METHODS, args.runs)
    print(f"\nperplexity per byte before: {base:.4f}")
    print_rows(rows, [("ppl", "{:.4f}")])
    return {"ppl_before": base, "rows": rows}


# -- MiniLM -----------------------------------------------------------------------------------
def cmd_minilm(args: argparse.Namespace) -> dict:
    import bench_minilm as mini
    from sentences import SENTENCES

    model, tokenizer = mini.load_model(mini.model_dir())
    batches = mini.tokenize(tokenizer, SENTENCES, 32)
    calib_sentences = list(SENTENCES[1::2])
    calib = mini.calibration(tokenizer, calib_sentences)
    with tempfile.TemporaryDirectory() as tmp:
        path = mini.export(model, tokenizer, args.exporter, Path(tmp) / "minilm.onnx")
        ref, _ = mini.ort_embeddings(path.read_bytes(), batches)
        print(f"all-MiniLM-L6-v2 ({args.exporter} export): {len(SENTENCES)} sentences; "
              f"original paraphrase pair@1 {mini.pair_top1(ref):.3f}; calibration: "
              f"{len(calib_sentences)} sentences (every other one)")

        def quality(pruned) -> dict:
            emb, _ = mini.ort_embeddings(pruned.SerializeToString(), batches)
            cos = mini.cosines(emb, ref)
            return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                    "pair_top1": mini.pair_top1(emb)}

        rows = sweep(str(path), args.max_blocks, calib, len(calib_sentences), quality,
                     batches[0], args.method or METHODS, args.runs)
    print_rows(rows, [("cos_mean", "{:.4f}"), ("cos_min", "{:.4f}"), ("pair_top1", "{:.3f}")])
    return {"pair_top1_before": mini.pair_top1(ref), "rows": rows}


# -- ResNet-50 --------------------------------------------------------------------------------
def cmd_resnet(args: argparse.Namespace) -> dict:
    path = common.export_cached("resnet50", "torchscript")
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 224, 224),
                                                               dtype=np.float32)}
    name = onnx.load(str(path)).graph.input[0].name
    feeds = {name: feeds["input"]}
    rows = sweep(str(path), args.max_blocks, None, 8, lambda m: {}, feeds,
                 args.method or ("influence",), args.runs)
    print_rows(rows, [])
    return {"rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("decoder")
    d.add_argument("--exporter", default="default", choices=("torchscript", "dynamo", "default"))
    d.add_argument("--windows", type=int, default=64)
    d.add_argument("--calib-samples", type=int, default=64)
    d.add_argument("--max-blocks", type=int, default=6)
    m = sub.add_parser("minilm")
    m.add_argument("--exporter", default="torchscript", choices=("torchscript", "dynamo"))
    m.add_argument("--max-blocks", type=int, default=8)
    r = sub.add_parser("resnet")
    r.add_argument("--max-blocks", type=int, default=10)
    for s in (d, m, r):
        s.add_argument("--method", action="append", choices=METHODS,
                       help="repeatable (default: all three; resnet: influence)")
        s.add_argument("--json", type=Path, help="write the rows here")
        s.add_argument("--runs", type=int, default=30 if s is r else RUNS,
                       help="interleaved timing rounds per row (default 100; resnet 30)")
    args = ap.parse_args()
    print(common.machine())
    t0 = time.perf_counter()
    load = os.getloadavg()
    result = {"decoder": cmd_decoder, "minilm": cmd_minilm, "resnet": cmd_resnet}[
        args.command](args)
    result |= {"seconds": round(time.perf_counter() - t0, 1), "loadavg_start": load,
               "versions": common.versions()}
    print(f"total {result['seconds']:.0f} s (load average {load[0]:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end, {os.cpu_count()} cores)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
