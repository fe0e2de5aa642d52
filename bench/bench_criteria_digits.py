"""One-shot pruning accuracy of every criterion × allocation at MAC targets, on a small CNN
trained on scikit-learn's bundled digits (8×8 images, 10 classes; no download).

    pip install scikit-learn
    python bench/bench_criteria_digits.py [--targets 0.8 0.6 0.4] [--epochs 20]
                                          [--json bench/results/criteria_digits.json]

Trains the CNN in torch (seeded; a few seconds), exports it with the TorchScript exporter,
then for each criterion, allocation (uniform, global, sensitivity) and target runs
`graphprune.compress(..., target_macs=T)` with 64 training images as calibration data, and
measures top-1 accuracy of the pruned model on the held-out test images in onnxruntime. No
fine-tuning: this compares how well each criterion picks units, nothing else.

`--bn-after-relu` builds the blocks as Conv → ReLU → BatchNorm instead of Conv → BatchNorm →
ReLU: the exporter cannot fold such a BatchNorm into its conv, so `bn-scale` reads real γ
(with the usual order it is folded away and `bn-scale` falls back to l1, as the notes say).
Prints numbers and writes JSON; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CRITERIA = ["l1", "l2", "bn-scale", "fpgm", "lamp", "random", "activation", "apoz", "wanda",
            "obd", "taylor"]
ALLOCATIONS = ["uniform", "global", "sensitivity"]


def load_data(seed: int = 0):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    x = (x - x.mean()) / x.std()
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.75 * len(x))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def build(bn_after_relu: bool):
    import torch
    from torch import nn

    def block(cin, cout):
        conv, bn, act = nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()
        return [conv, act, bn] if bn_after_relu else [conv, bn, act]

    torch.manual_seed(0)
    return nn.Sequential(*block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 64),
                         nn.MaxPool2d(2), *block(64, 64), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(64, 10))


def train(net, x, y, epochs: int):
    import torch

    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for k in range(0, len(xt), 128):
            idx = perm[k:k + 128]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return net.eval()


def accuracy(model, x, y) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return float((logits.argmax(1) == y).mean())


def run(args) -> dict:
    import onnx
    import torch

    import graphprune
    from models.export import export_onnx

    xtr, ytr, xte, yte = load_data()
    t = time.perf_counter()
    net = train(build(args.bn_after_relu), xtr, ytr, args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(net, torch.from_numpy(xtr[:1]), Path(tmp) / "digits.onnx")
        model = onnx.load(path)
    base = accuracy(model, xte, yte)
    print(f"trained in {time.perf_counter() - t:.1f} s; test accuracy {base:.4f} "
          f"({len(xte)} test images); BatchNorm nodes in the export: "
          f"{sum(n.op_type == 'BatchNormalization' for n in model.graph.node)}")
    calib = {"input": xtr[:args.calib]}
    results = []
    for crit in args.criteria:
        for alloc in args.allocations:
            for target in args.targets:
                t = time.perf_counter()
                pruned, rep = graphprune.compress(model, criterion=crit, allocation=alloc,
                                                  target_macs=target, calib=calib,
                                                  calib_samples=args.calib, seed=0)
                acc = accuracy(pruned, xte, yte)
                results.append({"criterion": crit, "allocation": alloc, "target": target,
                                "macs_ratio": round(rep.macs_ratio, 4),
                                "params_ratio": round(rep.params_ratio, 4),
                                "accuracy": round(acc, 4), "seconds": round(
                                    time.perf_counter() - t, 2), "notes": rep.notes})
                print(f"  {crit:<11}{alloc:<12}{target:>5.2f}  MACs {rep.macs_ratio:.3f}  "
                      f"acc {acc:.4f}  ({time.perf_counter() - t:.1f} s)", flush=True)
    return {"baseline_accuracy": base, "test_images": len(xte), "epochs": args.epochs,
            "bn_after_relu": args.bn_after_relu, "calibration_samples": args.calib,
            "results": results}


def table(out: dict, targets: list[float]) -> str:
    head = "| criterion | allocation | " + " | ".join(f"MACs {t:g}" for t in targets) + " |"
    rows = [head, "|" + "---|" * (2 + len(targets))]
    by = {(r["criterion"], r["allocation"], r["target"]): r for r in out["results"]}
    for crit in dict.fromkeys(r["criterion"] for r in out["results"]):
        for alloc in dict.fromkeys(r["allocation"] for r in out["results"]):
            cells = []
            for t in targets:
                r = by.get((crit, alloc, t))
                cells.append(f"{r['accuracy']:.3f} ({r['macs_ratio']:.3f})" if r else "-")
            rows.append(f"| {crit} | {alloc} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.6, 0.4])
    ap.add_argument("--criteria", nargs="+", default=CRITERIA)
    ap.add_argument("--allocations", nargs="+", default=ALLOCATIONS)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--calib", type=int, default=64, help="calibration images (training set)")
    ap.add_argument("--bn-after-relu", action="store_true")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" /
                    "criteria_digits.json")
    args = ap.parse_args()
    out = run(args)
    print(f"\nbaseline accuracy {out['baseline_accuracy']:.4f}; cells: test accuracy "
          "(MACs reached)\n")
    print(table(out, args.targets))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
