"""Lottery tickets, structured: iterative magnitude pruning with rewinding on a digits CNN.

    pip install scikit-learn
    python examples/lottery_ticket.py [--target-macs 0.4] [--rounds 3] [--epochs 4]
                                      [--rewind-iterations 20] [--smoke]

Frankle & Carbin (2019) train, prune the smallest weights, reset the survivors to their
initial values and train again; Frankle et al. (2020) rewind to an early iteration k instead
of the initialisation, which is what makes it work beyond small networks. Here the units are
channels: each round trains `--epochs` epochs, removes the same fraction of the remaining
MACs (`schedule="geometric"`: 1 − (1 − s_f)^(r/n) after round r, by l1 magnitude), and
rewinds the kept weights to iteration k (`pruner.snapshot()` there, `pruner.rewind()` after
each round: the removed channels stay zero, the optimizer starts again). The ticket is then
trained once more and exported; its test accuracy is printed next to the dense network's.
`--smoke`: random data, one short epoch per round (the code path only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_cnn import accuracy, batches, build, load_digits_split  # noqa: E402

from graphprune.torch import Pruner  # noqa: E402


def run_epochs(net: nn.Module, opt: torch.optim.Optimizer, x, y, epochs: int, seed: int,
               limit: int | None = None) -> int:
    """Train; `limit` stops after that many iterations. Returns the iterations run."""
    net.train()
    done = 0
    for epoch in range(epochs):
        for idx in batches(len(x), 64, seed * 1000 + epoch):
            if limit is not None and done >= limit:
                return done
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
            opt.zero_grad()
            done += 1
    return done


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target-macs", type=float, default=0.4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4, help="training epochs per round")
    p.add_argument("--rewind-iterations", type=int, default=20,
                   help="k: the iteration the kept weights rewind to (0: the initialisation)")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.epochs, args.rounds = 1, 2
    torch.set_num_threads(min(2, torch.get_num_threads()))
    xtr, ytr, xte, yte = load_digits_split(args.smoke)
    net = build()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    pruner = Pruner(net, xtr[:2], target_macs=args.target_macs, criterion="l1",
                    schedule="geometric", steps=args.rounds, optimizer=opt)
    t0 = time.time()
    run_epochs(net, opt, xtr, ytr, 1, seed=0, limit=args.rewind_iterations)
    pruner.snapshot()  # iteration k
    for r in range(args.rounds):
        run_epochs(net, opt, xtr, ytr, args.epochs, seed=10 + r)
        acc = accuracy(net, xte, yte)
        pruner.step()  # the next round's sparsity, by magnitude of the trained weights
        pruner.rewind()
        print(f"round {r + 1}: trained to {acc:.4f}, then pruned to sparsity "
              f"{pruner.sparsity:.3f} of the MACs and rewound to iteration "
              f"{args.rewind_iterations}")
    run_epochs(net, opt, xtr, ytr, args.epochs, seed=99)
    ticket = accuracy(net, xte, yte)
    dense, report = pruner.export()
    print(f"ticket: test top-1 {ticket:.4f} at {report.macs_ratio:.3f} of the MACs "
          f"({time.time() - t0:.1f} s); exact check "
          f"{'passed' if report.exact_check['passed'] else 'FAILED'}")
    return {"ticket": ticket, "macs": report.macs_ratio, "exact": report.exact_check["passed"]}


if __name__ == "__main__":
    sys.exit(0 if main()["exact"] else 1)
