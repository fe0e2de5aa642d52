"""Tiny GPT-2 decoder: fused ``c_attn`` + ``split``, causal buffer mask, tied LM head.

Mirrors HF ``GPT2Model``'s eager attention: one Linear to ``3 * hidden``
followed by ``split(hidden, dim=2)`` (a Split or three Slices in ONNX), a
lower-triangular bool buffer sliced to ``[:S, :S]`` and applied with
``masked_fill``, pre-LN blocks with a tanh-GELU MLP, and an LM head whose
weight *is* the token embedding, so a pruner must treat the embedding's
hidden dim and the logits' contraction dim as one coupled axis.
"""

from __future__ import annotations

import torch
from torch import nn

from models.transformers.common import attend, merge_heads, split_heads

__all__ = ["GPT2", "GPT2Block", "gpt2"]


class CausalSelfAttention(nn.Module):
    """c_attn (fused qkv) -> split -> heads -> causal softmax attention -> c_proj."""

    def __init__(self, hidden: int, heads: int, max_positions: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.heads = heads
        self.c_attn = nn.Linear(hidden, 3 * hidden)
        self.c_proj = nn.Linear(hidden, hidden)
        causal = torch.tril(torch.ones(max_positions, max_positions, dtype=torch.bool))
        self.register_buffer(
            "bias", causal.view(1, 1, max_positions, max_positions), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.shape[1]
        q, k, v = self.c_attn(x).split(self.hidden, dim=2)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
        keep = self.bias[:, :, :seq, :seq]  # bool [1, 1, S, S], True on and below diagonal
        return self.c_proj(merge_heads(attend(q, k, v, keep)))


class GPT2Block(nn.Module):
    """Pre-LN: x + attn(ln_1(x)); x + MLP(ln_2(x)) with GELU(tanh)."""

    def __init__(self, hidden: int, heads: int, max_positions: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden, eps=1e-5)
        self.attn = CausalSelfAttention(hidden, heads, max_positions)
        self.ln_2 = nn.LayerNorm(hidden, eps=1e-5)
        self.c_fc = nn.Linear(hidden, 4 * hidden)
        self.act = nn.GELU(approximate="tanh")
        self.mlp_proj = nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_proj(self.act(self.c_fc(self.ln_2(x))))


class GPT2(nn.Module):
    """wte + wpe(arange(S)) -> pre-LN blocks -> ln_f -> tied lm_head logits."""

    def __init__(
        self,
        vocab: int = 100,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 4,
        max_positions: int = 64,
    ) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, hidden)
        self.wpe = nn.Embedding(max_positions, hidden)
        self.h = nn.ModuleList(GPT2Block(hidden, heads, max_positions) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden, eps=1e-5)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        position_ids = torch.arange(seq, dtype=torch.long, device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(position_ids).unsqueeze(0)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def gpt2() -> GPT2:
    """GPT-2: hidden 64, 4 heads, MLP 256, 2 layers, vocab 100, tied head."""
    return GPT2()
