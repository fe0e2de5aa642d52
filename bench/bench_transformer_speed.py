"""Speed of graphprune on BERT-base- and ViT-B/16-sized models, end to end through the CLI.

    python bench/bench_transformer_speed.py [--model bert_base --model vit_b16]
                                            [--exporter torchscript --exporter dynamo]
                                            [--repeat 3] [--ratio 0.4] [--json out.json]

Builds, with random weights (seeded; nothing is downloaded):
- bert_base: Hugging Face `BertModel` from a `BertConfig` of BERT-base's size (12 layers,
  hidden 768, 12 heads, FFN 3072, vocab 30522, 512 positions; eager attention), taking
  input_ids, attention_mask, token_type_ids (int64, dynamic batch and sequence) and returning
  last_hidden_state;
- vit_b16: the repo's `models/transformers/vit.py` ViT scaled to ViT-B/16 (image 224, patch 16,
  hidden 768, 12 layers, 12 heads, MLP 3072, 1000 classes; dynamic batch).

Exports each with the chosen torch exporters, then times the real CLI as a user runs it:
`graphprune analyze MODEL --quiet` and `graphprune compress MODEL -o OUT --ratio R --quiet
--report r.json` (process start, load, analysis, scoring, selection, rewrite, checker, exact
check at batch 1 and 2, atomic save), `--repeat` times each, and prints the per-stage split
from the report's `timings`. The goal the project tracks: analysis + rewrite + validation
under 5 s for BERT-base on the 2-core machine (the median over repeats is compared).
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import common  # noqa: E402

GOAL_STAGES = ("analysis", "rewrite", "validation")
GOAL_SECONDS = 5.0
STAGES = ("analysis", "scoring", "selection", "rewrite", "validation", "report")
MODELS = ("bert_base", "vit_b16")


# -- models ----------------------------------------------------------------------------------
def build_bert_base():
    """HF BertModel at BERT-base size, random weights; (module, example args, input specs)."""
    import torch
    from transformers import BertConfig, BertModel

    from models import InputSpec

    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                        num_attention_heads=12, intermediate_size=3072,
                        max_position_embeddings=512, type_vocab_size=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    bert = BertModel(config).eval()

    class Wrapper(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids, return_dict=True).last_hidden_state

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (2, 7), generator=gen)
    mask = torch.ones(2, 7, dtype=torch.int64)
    mask[1, 4:] = 0  # the second example is padded
    types = torch.zeros(2, 7, dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    specs = [InputSpec("input_ids", (2, 7), "int64", 0, 30522, axes),
             InputSpec("attention_mask", (2, 7), "int64", 0, 2, axes),
             InputSpec("token_type_ids", (2, 7), "int64", 0, 2, axes)]
    return Wrapper(bert).eval(), (ids, mask, types), specs


def build_vit_b16():
    """models/transformers/vit.py at ViT-B/16 size, random weights (norms randomised too)."""
    import torch

    from models import InputSpec
    from models.transformers.common import randomize_norms
    from models.transformers.vit import ViT

    torch.manual_seed(0)
    model = ViT(image=224, patch=16, in_ch=3, hidden=768, layers=12, heads=12, mlp=3072,
                classes=1000)
    randomize_norms(model, seed=0)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    return model.eval(), (x,), [InputSpec("input", (2, 3, 224, 224))]


BUILDERS = {"bert_base": build_bert_base, "vit_b16": build_vit_b16}


# -- timing ----------------------------------------------------------------------------------
def _cli(*args: str) -> list[str]:
    """The installed `graphprune` script, else the module (same code)."""
    from shutil import which

    exe = which("graphprune")
    return [exe, *args] if exe else [sys.executable, "-m", "graphprune.cli", *args]


def _run(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return time.perf_counter() - t, proc


def _err(proc: subprocess.CompletedProcess) -> str:
    text = (proc.stderr or proc.stdout or "").strip().splitlines()
    return f"exit {proc.returncode}: {text[-1] if text else '(no output)'}"


def bench_one(name: str, exporter: str, folder: Path, repeat: int, ratio: float) -> dict:
    import torch

    from models.export import export_onnx

    res: dict = {"model": name, "exporter": exporter}
    model, args, specs = BUILDERS[name]()
    res["params_torch"] = sum(p.numel() for p in model.parameters())
    src = folder / f"{name}_{exporter}.onnx"
    t = time.perf_counter()
    try:
        export_onnx(model, args, src, exporter=exporter, inputs=specs)
    except Exception as exc:  # noqa: BLE001 - a failure is a result here
        res["error"] = f"export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        return res
    finally:
        del model
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    res["export_seconds"] = round(time.perf_counter() - t, 1)
    res["onnx_mb"] = round(src.stat().st_size / 2**20, 1)
    print(f"{name}/{exporter}: exported in {res['export_seconds']:.1f} s "
          f"({res['onnx_mb']:.0f} MB)", flush=True)

    # the analysis summary (untimed), then timed analyze and compress runs
    _, proc = _run(_cli("analyze", str(src), "--json"))
    if proc.returncode == 0:
        summary = json.loads(proc.stdout)
        res["analysis_summary"] = summary.get("summary")
        res["blockers"] = summary.get("blockers")
        kinds: dict[str, list[int]] = {}
        for g in summary.get("groups", []):
            k = kinds.setdefault(g.get("kind", "?"), [0, 0])
            k[0] += g.get("prunable", 0)
            k[1] += g.get("units", 0)
        res["prunable_by_kind"] = kinds
    else:
        res["analyze_error"] = _err(proc)
    res["analyze_walls"], res["compress_walls"], res["runs"] = [], [], []
    for _ in range(repeat):
        wall, proc = _run(_cli("analyze", str(src), "--quiet"))
        if proc.returncode != 0:
            res["analyze_error"] = _err(proc)
            break
        res["analyze_walls"].append(round(wall, 2))
    for k in range(repeat):
        out, rep = folder / f"{name}_{exporter}.pruned{k}.onnx", folder / f"rep{k}.json"
        wall, proc = _run(_cli("compress", str(src), "-o", str(out), "--ratio", str(ratio),
                               "--quiet", "--report", str(rep)))
        if proc.returncode != 0:
            res["compress_error"] = _err(proc)
            break
        r = json.loads(rep.read_text())
        res["compress_walls"].append(round(wall, 2))
        res["runs"].append({"wall": round(wall, 2), "seconds": r["seconds"],
                            "timings": r["timings"]})
        res["report"] = {key: r[key] for key in ("params_before", "params_after",
                                                 "params_ratio", "macs_before", "macs_after",
                                                 "macs_ratio", "groups", "scope")}
        res["report"]["exact_check"] = {x: r["exact_check"].get(x)
                                        for x in ("passed", "max_abs_err")}
        units: dict[str, list[int]] = {}
        for g in r.get("group_details", []):
            u = units.setdefault(g.get("kind", "?"), [0, 0])
            u[0] += g["units_after"]
            u[1] += g["units_before"]
        res["report"]["units_kept_by_kind"] = units
        out.unlink(missing_ok=True)
    if res["runs"]:
        med = {s: statistics.median(run["timings"].get(s, 0.0) for run in res["runs"])
               for s in STAGES}
        res["stage_median"] = {s: round(v, 3) for s, v in med.items()}
        goal = statistics.median(sum(run["timings"].get(s, 0.0) for s in GOAL_STAGES)
                                 for run in res["runs"])
        res["goal_seconds"] = round(goal, 3)
        res["goal_met"] = goal < GOAL_SECONDS
    return res


# -- output ----------------------------------------------------------------------------------
def _med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f}" if xs else "-"


def print_table(results: list[dict], ratio: float, repeat: int) -> None:
    print(f"\ncompress --ratio {ratio}, median of {repeat} (seconds; goal: analysis + rewrite + "
          f"validation < {GOAL_SECONDS:.0f} s)")
    head = (f"{'model':<10}{'exporter':<12}{'export':>7}{'analyze':>8}{'compress':>9}"
            f"{'api':>7} " + "".join(f"{s[:8]:>9}" for s in STAGES)
            + f"{'a+r+v':>7}  {'goal':<5}{'params':>7}{'MACs':>7}  exact")
    print(head)
    print("-" * len(head))
    for r in results:
        lead = f"{r['model']:<10}{r['exporter']:<12}"
        if "error" in r:
            print(f"{lead}ERROR {r['error']}")
            continue
        api = _med([x["seconds"] for x in r["runs"]])
        stages = "".join(f"{r['stage_median'][s]:>9.2f}" for s in STAGES) if r["runs"] else ""
        line = (f"{lead}{r['export_seconds']:>7.1f}{_med(r['analyze_walls']):>8}"
                f"{_med(r['compress_walls']):>9}{api:>7} {stages}")
        if r["runs"]:
            rep = r["report"]
            ex = rep["exact_check"]
            line += (f"{r['goal_seconds']:>7.2f}  {'met' if r['goal_met'] else 'NOT':<5}"
                     f"{rep['params_ratio']:>7.3f}{rep['macs_ratio']:>7.3f}  "
                     f"{'pass' if ex['passed'] else 'FAIL'} {ex['max_abs_err']:.0e}")
        print(line)
        for key in ("analyze_error", "compress_error"):
            if key in r:
                print(f"{'':<22}{key.replace('_', ' ')}: {r[key]}")
    print("\nunits kept / total by kind (from the report), prunable / total (from analyze):")
    for r in results:
        if r.get("runs"):
            kept = " ".join(f"{k} {a}/{b}" for k, (a, b) in
                            r["report"]["units_kept_by_kind"].items())
            prun = " ".join(f"{k} {a}/{b}" for k, (a, b) in
                            (r.get("prunable_by_kind") or {}).items())
            g = r["report"]["groups"]
            print(f"  {r['model']}/{r['exporter']}: kept {kept}; prunable {prun}; groups pruned "
                  f"{g.get('pruned')}/{g.get('total')}; params {r['report']['params_before']:,}"
                  f" -> {r['report']['params_after']:,}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", choices=MODELS,
                    help="repeatable (default: both)")
    ap.add_argument("--exporter", action="append", choices=("torchscript", "dynamo"),
                    help="repeatable (default: both)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ratio", type=float, default=0.4)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in load_before)} "
          f"({os.cpu_count()} cores; a load above that means other work shares the machine "
          "and times run high)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.model or MODELS:
            for exporter in args.exporter or ["torchscript", "dynamo"]:
                r = bench_one(name, exporter, Path(tmp), args.repeat, args.ratio)
                results.append(r)
                if r.get("runs"):
                    for k, run in enumerate(r["runs"]):
                        st = " ".join(f"{s}={v:.2f}" for s, v in run["timings"].items())
                        print(f"  compress run {k}: wall {run['wall']:.2f} s, api "
                              f"{run['seconds']:.2f} s  {st}", flush=True)
                for key in ("error", "analyze_error", "compress_error"):
                    if key in r:
                        print(f"  {key}: {r[key]}", flush=True)
                (Path(tmp) / f"{name}_{exporter}.onnx").unlink(missing_ok=True)
    print_table(results, args.ratio, args.repeat)
    bert = [r for r in results if r["model"] == "bert_base" and "goal_met" in r]
    for r in bert:
        print(f"goal (BERT-base, {r['exporter']}): analysis + rewrite + validation = "
              f"{r['goal_seconds']:.2f} s -> {'MET' if r['goal_met'] else 'NOT MET'} "
              f"(< {GOAL_SECONDS:.0f} s on {os.cpu_count()} cores)")
    total = round(time.perf_counter() - t0, 1)
    load_after = os.getloadavg()
    print(f"total {total:.0f} s; load average at end: "
          f"{' '.join(f'{x:.2f}' for x in load_after)}")
    if args.json:
        args.json.write_text(json.dumps({"ratio": args.ratio, "repeat": args.repeat,
                                         "goal_seconds": GOAL_SECONDS,
                                         "goal_stages": list(GOAL_STAGES),
                                         "versions": common.versions(), "results": results,
                                         "loadavg_start": load_before,
                                         "loadavg_end": load_after,
                                         "total_seconds": total}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
