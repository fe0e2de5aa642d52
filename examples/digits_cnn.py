"""Prune a digits CNN while fine-tuning it: Taylor scores, Zhu & Gupta's cubic schedule.

    pip install scikit-learn               # its bundled 8×8 digits; nothing is downloaded
    python examples/digits_cnn.py [--target-macs 0.4] [--epochs 5] [--criterion taylor]
                                  [--schedule cubic] [--smoke]

A four-block Conv-BN-ReLU network is trained on scikit-learn's digits (75% train, 25% test).
Then `graphprune.torch.Pruner` takes it to 40% of its MACs during `--epochs` epochs of
fine-tuning: every batch accumulates first-order Taylor scores (|Σ w·∂L/∂w| per channel, from
the same backward pass as the training step), and the cubic schedule removes channels at
steps spread over the first 60% of fine-tuning, fast at first, slowly at the end; the last 40%
only recovers. Masks keep the removed channels at zero through Adam. Finally `export()`
writes the dense ONNX model and proves it equal to the masked network, and the test accuracy
is measured in torch and in onnxruntime.

`--smoke`: seeded random data, one short epoch (the code path only; the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from graphprune.torch import Pruner


def load_digits_split(smoke: bool, seed: int = 0):
    """(x_train, y_train, x_test, y_test) as float32 [n, 1, 8, 8] and int64 labels."""
    if smoke:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((256, 1, 8, 8)).astype(np.float32)
        y = (x.reshape(256, -1)[:, :10].argmax(axis=1)).astype(np.int64)
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise SystemExit("this example needs scikit-learn: pip install scikit-learn") from None
        d = load_digits()
        x = (d.images / 16.0).astype(np.float32)[:, None]
        x = (x - x.mean()) / x.std()
        y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.75 * len(x))
    tr, te = order[:cut], order[cut:]
    return (torch.from_numpy(x[tr]), torch.from_numpy(y[tr]), torch.from_numpy(x[te]),
            torch.from_numpy(y[te]))


def build(seed: int = 0) -> nn.Sequential:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    torch.manual_seed(seed)
    return nn.Sequential(*block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 64),
                         nn.MaxPool2d(2), *block(64, 64), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(64, 10))


def batches(n: int, size: int, seed: int):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [perm[k:k + size] for k in range(0, n, size)]


def train(net: nn.Module, x, y, epochs: int, lr: float = 2e-3, seed: int = 0) -> nn.Module:
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    net.train()
    for epoch in range(epochs):
        for idx in batches(len(x), 64, seed * 1000 + epoch):
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
            opt.zero_grad()
    return net.eval()


def accuracy(net: nn.Module, x, y) -> float:
    was = net.training
    net.eval()
    with torch.no_grad():
        acc = float((net(x).argmax(1) == y).float().mean())
    net.train(was)
    return acc


def finetune(net: nn.Module, pruner: Pruner | None, x, y, epochs: int, lr: float = 1e-3,
             seed: int = 1) -> None:
    """Fine-tuning with the pruner in the loop: accumulate after backward, step after the
    optimizer step (the schedule decides when it prunes). Without a pruner: plain
    fine-tuning, the same batches in the same order."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    if pruner is not None:
        pruner.attach(opt)
    net.train()
    for epoch in range(epochs):
        for idx in batches(len(x), 64, seed * 1000 + epoch):
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            if pruner is not None:
                pruner.accumulate()
            opt.step()
            opt.zero_grad()
            if pruner is not None:
                pruner.step()
    net.eval()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target-macs", type=float, default=0.4)
    p.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs")
    p.add_argument("--train-epochs", type=int, default=20, help="epochs before pruning")
    p.add_argument("--criterion", default="taylor")
    p.add_argument("--schedule", default="cubic")
    p.add_argument("--smoke", action="store_true", help="random data, one short epoch")
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs, args.train_epochs = 1, 1
    torch.set_num_threads(min(2, torch.get_num_threads()))
    xtr, ytr, xte, yte = load_digits_split(args.smoke)
    t0 = time.time()
    net = train(build(), xtr, ytr, args.train_epochs)
    dense_acc = accuracy(net, xte, yte)
    print(f"trained: test top-1 {dense_acc:.4f} ({time.time() - t0:.1f} s)")
    steps_per_epoch = len(batches(len(xtr), 64, 0))
    total = args.epochs * steps_per_epoch
    n = 10 if not args.smoke else 2  # pruning steps over the first 60% of fine-tuning
    every = max(1, int(0.6 * total) // n)  # steps k·every, k = 1..n (k = 0: sparsity 0)
    pruner = Pruner(net, xtr[:2], target_macs=args.target_macs, criterion=args.criterion,
                    schedule=args.schedule, steps=n, every=every,
                    dynamic_shapes=({0: torch.export.Dim("batch")},))
    t1 = time.time()
    finetune(net, pruner, xtr, ytr, args.epochs)
    acc = accuracy(net, xte, yte)
    print(f"pruned to {args.target_macs} of the MACs with {args.criterion} + {args.schedule} "
          f"over {args.epochs} epochs: test top-1 {acc:.4f} ({time.time() - t1:.1f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits.onnx"
        dense, report = pruner.export(str(path))
        onnx_acc = _onnx_accuracy(str(path), xte, yte)
    print(f"exported: MACs {report.macs_ratio:.3f} of the original, params "
          f"{report.params_before} -> {report.params_after}, exact check "
          f"{'passed' if report.exact_check['passed'] else 'FAILED'}, onnxruntime test top-1 "
          f"{onnx_acc:.4f}")
    return {"dense": dense_acc, "pruned": acc, "onnx": onnx_acc, "macs": report.macs_ratio,
            "exact": report.exact_check["passed"]}


def _onnx_accuracy(path: str, x, y) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    pred = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0].argmax(1)
    return float((pred == y.numpy()).mean())


if __name__ == "__main__":
    sys.exit(0 if main()["exact"] else 1)
