"""graphprune on transformer families that are not in models/, as a new user would meet them.

    python bench/bench_families.py [--exporter torchscript --exporter dynamo]
                                   [--family qwen2 ...] [--ratio 0.5] [--json out.json]

Each family is a Hugging Face model built from a tiny config (random weights, seeded; nothing
is downloaded): hidden 64, 2 layers, 4 heads, FFN 128, vocab 100 where the config allows, eager
attention, no cache. Text models take `input_ids` and `attention_mask` (dynamic batch and
sequence) and return the last hidden state; DeiT takes `pixel_values` (dynamic batch). Each is
exported with the chosen torch exporters (models.export.export_onnx) and compressed with the
default scope (channels, heads, FFN) at `--ratio`. Prints, per family and exporter: whether the
exact check passed, the parameter ratio, units per kind before → after, and for kinds that
kept every unit, the reasons the report gives. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FAMILIES = ("distilbert", "roberta", "albert", "electra", "qwen2", "mistral", "phi", "gpt_neox",
            "opt", "bloom", "gemma", "deit", "t5_encoder")


def build(family: str):
    """(module returning the last hidden state, example args, input specs)."""
    import torch
    import transformers as t

    from models import InputSpec

    common = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64}
    configs = {
        "distilbert": (t.DistilBertModel, t.DistilBertConfig(
            vocab_size=100, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
            max_position_embeddings=64)),
        "roberta": (t.RobertaModel, t.RobertaConfig(**common)),
        "albert": (t.AlbertModel, t.AlbertConfig(embedding_size=32, **common)),
        "electra": (t.ElectraModel, t.ElectraConfig(embedding_size=32, **common)),
        "qwen2": (t.Qwen2Model, t.Qwen2Config(num_key_value_heads=2, **common)),
        "mistral": (t.MistralModel, t.MistralConfig(num_key_value_heads=2, **common)),
        "phi": (t.PhiModel, t.PhiConfig(**common)),
        "gpt_neox": (t.GPTNeoXModel, t.GPTNeoXConfig(**common)),
        "opt": (t.OPTModel, t.OPTConfig(
            vocab_size=100, hidden_size=64, num_hidden_layers=2, ffn_dim=128,
            num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=64)),
        "bloom": (t.BloomModel, t.BloomConfig(vocab_size=100, hidden_size=64, n_layer=2,
                                              n_head=4)),
        "gemma": (t.GemmaModel, t.GemmaConfig(num_key_value_heads=1, head_dim=16, **common)),
        "deit": (t.DeiTModel, t.DeiTConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            image_size=32, patch_size=8)),
        "t5_encoder": (t.T5EncoderModel, t.T5Config(
            vocab_size=100, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)),
    }
    cls, config = configs[family]
    config._attn_implementation = "eager"
    if hasattr(config, "use_cache"):
        config.use_cache = False
    torch.manual_seed(0)
    inner = cls(config).eval()

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = inner

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask)[0]

    class Vision(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = inner

        def forward(self, pixel_values):
            return self.model(pixel_values=pixel_values)[0]

    axes = {0: "batch", 1: "sequence"}
    if family == "deit":
        return (Vision().eval(), (torch.randn(2, 3, 32, 32),),
                [InputSpec("pixel_values", (2, 3, 32, 32), dynamic_axes={0: "batch"})])
    return (Text().eval(), (torch.randint(0, 100, (2, 7)), torch.ones(2, 7, dtype=torch.int64)),
            [InputSpec("input_ids", (2, 7), dtype="int64", high=100, dynamic_axes=axes),
             InputSpec("attention_mask", (2, 7), dtype="int64", high=1, dynamic_axes=axes)])


def run_one(family: str, exporter: str, ratio: float, folder: Path) -> dict:
    import graphprune
    from models.export import export_onnx

    row: dict = {"family": family, "exporter": exporter, "ratio": ratio}
    path = folder / f"{family}-{exporter}.onnx"
    try:
        module, args, specs = build(family)
        export_onnx(module, args, path, exporter=exporter, inputs=specs)
    except Exception as exc:  # noqa: BLE001 - an exporter failure is a row, not a crash
        row["error"] = f"export: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
        return row
    t0 = time.perf_counter()
    try:
        _, rep = graphprune.compress(str(path), ratio=ratio)
    except Exception as exc:  # noqa: BLE001
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        return row
    row["seconds"] = round(time.perf_counter() - t0, 2)
    row["exact"] = bool(rep.exact_check.get("passed"))
    row["params_ratio"] = round(rep.params_after / rep.params_before, 3)
    kinds: dict[str, list[int]] = {}
    reasons: dict[str, set[str]] = {}
    for d in rep.group_details:
        k = kinds.setdefault(d.kind, [0, 0])
        k[0] += d.units_before
        k[1] += d.units_after
        if d.kind != "hidden" and d.units_after == d.units_before:
            reasons.setdefault(d.kind, set()).update(r.split(" (")[0] for r in d.reasons)
    row["units"] = kinds
    row["kept_because"] = {k: sorted(v) for k, v in reasons.items() if kinds[k][0] ==
                           kinds[k][1]}
    return row


def table(rows: list[dict]) -> str:
    out = ["| family | exporter | exact | params after/before | heads | FFN | whole kinds kept "
           "because |", "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['family']} | {r['exporter']} | - | - | - | - | {r['error']} |")
            continue
        u = r["units"]
        heads, ffn = (f"{u[k][0]} → {u[k][1]}" if k in u else "-" for k in ("heads", "ffn"))
        why = "; ".join(f"{k}: {', '.join(v)}" for k, v in r["kept_because"].items())
        out.append(f"| {r['family']} | {r['exporter']} | {'yes' if r['exact'] else 'NO'} | "
                   f"{r['params_ratio']:.3f} | {heads} | {ffn} | {why} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exporter", action="append", choices=("torchscript", "dynamo"))
    ap.add_argument("--family", action="append", choices=FAMILIES)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--json")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in a.family or FAMILIES:
            for exporter in a.exporter or ("torchscript", "dynamo"):
                rows.append(run_one(family, exporter, a.ratio, Path(tmp)))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
