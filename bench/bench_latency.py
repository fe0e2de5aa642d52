"""Speed of the pruned models: onnxruntime CPU latency of the original against graphprune's output.

    python bench/bench_latency.py [--quick] [--model NAME ...] [--ratios 0.2,0.4,0.6]
                                  [--threads 1,2] [--runs 30] [--json out.json]

For each model, exports the original once (TorchScript exporter, cached), runs
`graphprune.compress(original, ratio=R, criterion="l1", round_to=K)` for every ratio R and
K in {1, 8}, and times every variant in onnxruntime's CPU provider as a user would run it:
graph optimisations ENABLED (ORT_ENABLE_ALL: Conv+BN/activation fusion, layout transforms),
`intra_op_num_threads` 1 and 2, one inter-op thread, batch 1, the same seeded inputs.

Timing: warm-up runs, then `--runs` rounds; each round runs the original and every pruned
variant once, in rotating order (bench/common.py: interleaved_medians), so a slow phase of a
noisy shared machine hits all variants alike. Reported: median latency, speedup = original
median / pruned median, the MACs ratio (after/before, graphprune.metrics.count_macs at the
timed input shape), the MACs-proportional speedup = MACs before / MACs after, and
efficiency = measured speedup / MACs-proportional speedup (1.0: latency falls as fast as MACs).

Models (full tier): resnet50 (BENCH_MODELS, 1x3x224x224); mobilenet_v2 and resnet_bottleneck
from CNN_MODELS, traced at 1x3x224x224 (their registry examples are 32x32, where per-op
overhead, not compute, sets the latency); bert from TRANSFORMER_MODELS at batch 1, sequence 64
(its position table has 64 entries, so 128 is not possible); and bert_512: the same `Bert`
class at hidden 512, 8 heads, FFN 2048, 4 layers, 128 positions, at batch 1, sequence 128.
Quick tier (--quick): resnet50 and mobilenet_v2 at ratio 0.4, 20 rounds.
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

CNN_224 = ("mobilenet_v2", "resnet_bottleneck")
ALL_MODELS = ("resnet50", "mobilenet_v2", "resnet_bottleneck", "bert", "bert_512")
QUICK_MODELS = ("resnet50", "mobilenet_v2")


def _bert_512_specs():
    from models import InputSpec

    axes = {0: "batch", 1: "sequence"}
    return (InputSpec("input_ids", (2, 7), "int64", 0, 100, axes),
            InputSpec("attention_mask", (2, 7), "int64", 1, 2, axes))


def _build_bert_512():
    import torch

    from models.transformers.bert import Bert
    from models.transformers.common import randomize_norms

    torch.manual_seed(0)
    model = Bert(vocab=100, hidden=512, layers=4, heads=8, ffn=2048, max_positions=128)
    randomize_norms(model, seed=0)
    return model.eval()


def prepare(name: str) -> tuple[Path, dict[str, np.ndarray], str]:
    """Export (cached) and the batch-1 inputs to time it with, plus a shape label."""
    import torch

    from models import get

    if name == "bert_512":
        specs = _bert_512_specs()
        gen = torch.Generator().manual_seed(0)
        example = tuple(s.sample(None, gen) for s in specs)
        path = common.export_cached(name, build=_build_bert_512, inputs=specs, example=example)
        gen = torch.Generator().manual_seed(1)
        feeds = {s.name: s.sample({"batch": 1, "sequence": 128}, gen).numpy() for s in specs}
        return path, feeds, "1x128 tokens"
    spec = get(name)
    if name in CNN_224:
        path = common.export_cached(name, input_shape=(1, 3, 224, 224))
    else:
        path = common.export_cached(name)
    if spec.family == "transformer":
        ex = spec.example_inputs({"batch": 1, "sequence": 64}, seed=1)
        feeds = {n: t.numpy() for n, t in zip(spec.input_names, ex, strict=True)}
        if "attention_mask" in feeds:
            feeds["attention_mask"][:] = 1
        return path, feeds, "1x64 tokens"
    rng = np.random.default_rng(1)
    return path, {"input": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}, \
        "1x3x224x224"


def bench_model(name: str, ratios: list[float], roundings: list[int], threads: list[int],
                runs: int, warmup: int) -> list[dict]:
    import onnx

    import graphprune

    path, feeds, shape = prepare(name)
    orig = onnx.load(str(path))
    macs0 = common.count_macs(orig, feeds)
    params0 = common.count_float_params(orig)
    variants: dict[str, Any] = {"original": orig}
    rows: dict[str, dict] = {"original": {"model": name, "shape": shape, "ratio": 0.0,
                                          "round_to": "-", "macs_ratio": 1.0,
                                          "params_ratio": 1.0}}
    sizes = {k: list(v.shape) for k, v in feeds.items()}
    for r in ratios:
        for k in roundings:
            key = f"r{r}/k{k}"
            t = time.perf_counter()
            try:
                pruned, rep = graphprune.compress(str(path), ratio=r, criterion="l1",
                                                  round_to=k, input_sizes=sizes)
            except Exception as exc:  # noqa: BLE001
                rows[key] = {"model": name, "shape": shape, "ratio": r, "round_to": k,
                             "error": f"{type(exc).__name__}: {exc}"[:120]}
                continue
            variants[key] = pruned
            rows[key] = {"model": name, "shape": shape, "ratio": r, "round_to": k,
                         "compress_seconds": time.perf_counter() - t,
                         "exact": bool(rep.exact_check.get("passed")),
                         "params_ratio": common.count_float_params(pruned) / params0,
                         "macs_ratio": common.count_macs(pruned, feeds) / macs0}
    for th in threads:
        sessions = {k: common.ort_session(m, threads=th) for k, m in variants.items()}
        fns = {k: (lambda s=s: s.run(None, feeds)) for k, s in sessions.items()}
        stats = common.interleaved_medians(fns, runs=runs, warmup=warmup)
        base = stats["original"]["median"]
        for k, st in stats.items():
            rows[k][f"ms_t{th}"] = st["median"] * 1e3
            rows[k][f"iqr_ms_t{th}"] = st["iqr"] * 1e3
            rows[k][f"speedup_t{th}"] = base / st["median"]
        del sessions
    for row in rows.values():
        if "macs_ratio" in row and "error" not in row:
            row["macs_speedup"] = 1.0 / row["macs_ratio"]
            for th in threads:
                if f"speedup_t{th}" in row:
                    row[f"eff_t{th}"] = row[f"speedup_t{th}"] / row["macs_speedup"]
    return list(rows.values())


def render(rows: list[dict], threads: list[int]) -> str:
    head = ["model", "input", "ratio", "round_to", "params ratio", "MACs ratio",
            "MACs speedup"]
    for th in threads:
        head += [f"ms ({th}T)", f"speedup ({th}T)", f"eff ({th}T)"]
    out = []
    for r in rows:
        if "error" in r:
            out.append([r["model"], r["shape"], r["ratio"], r["round_to"],
                        f"fails: {r['error']}"] + ["-"] * (len(head) - 5))
            continue
        line = [r["model"], r["shape"], r["ratio"], r["round_to"], f"{r['params_ratio']:.3f}",
                f"{r['macs_ratio']:.3f}", f"{r['macs_speedup']:.2f}x"]
        for th in threads:
            line += [f"{r[f'ms_t{th}']:.2f}", f"{r[f'speedup_t{th}']:.2f}x",
                     f"{r[f'eff_t{th}']:.2f}" if r["ratio"] else "-"]
        out.append(line)
    return common.table(head, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="resnet50 and mobilenet_v2, ratio 0.4, 20 rounds")
    ap.add_argument("--model", action="append", choices=ALL_MODELS)
    ap.add_argument("--ratios", default=None, help="default 0.2,0.4,0.6 (quick: 0.4)")
    ap.add_argument("--round-to", default="1,8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=None, help="timed rounds (default 30; quick 20)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    names = args.model or list(QUICK_MODELS if args.quick else ALL_MODELS)
    ratios = [float(x) for x in (args.ratios or ("0.4" if args.quick else "0.2,0.4,0.6"))
              .split(",")]
    roundings = [int(x) for x in args.round_to.split(",")]
    threads = [int(x) for x in args.threads.split(",")]
    runs = args.runs or (20 if args.quick else 30)
    print(common.machine())
    print(f"onnxruntime CPU, graph optimisations enabled; batch 1; median of {runs} interleaved "
          f"rounds after {args.warmup} warm-up rounds; speedup = original / pruned median\n")
    t0 = time.perf_counter()
    rows: list[dict] = []
    for name in names:
        t = time.perf_counter()
        rows.extend(bench_model(name, ratios, roundings, threads, runs, args.warmup))
        print(f"  {name}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    print(render(rows, threads))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
