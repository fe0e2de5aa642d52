"""Tiny LLaMA-style decoder with an explicit KV cache as graph inputs and outputs.

Each layer takes ``past.{i}.key`` / ``past.{i}.value`` of ``[B, kv_heads, P, D]`` and
returns ``present.{i}.key`` / ``present.{i}.value`` of ``[B, kv_heads, P + S, D]``: the new
keys/values (after RoPE at positions ``P .. P+S-1``) are concatenated with the past along
the sequence axis, as HF's ``DynamicCache`` does in an exported decoder step. The causal
mask lets query ``i`` see cache positions ``j <= P + i``. Batch, sequence and past length
are dynamic; the head counts are static. ``kv_heads < heads`` gives grouped-query attention
(``repeat_kv`` after the cache concat, as in HF).
"""

from __future__ import annotations

import torch
from torch import nn

from models.transformers.common import RMSNorm, attend, merge_heads, split_heads
from models.transformers.llama import LlamaAttention, LlamaLayer, repeat_kv, rotate_half

__all__ = ["KVDecoder", "kv_gqa", "kv_mha"]


class KVAttention(LlamaAttention):
    """LLaMA attention (same projections) that also reads and returns the key/value cache."""

    def forward(self, x, cos, sin, mask, past_k, past_v):
        q = split_heads(self.q_proj(x), self.heads)
        k = split_heads(self.k_proj(x), self.kv_heads)
        v = split_heads(self.v_proj(x), self.kv_heads)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = torch.cat((past_k, k), dim=2)
        v = torch.cat((past_v, v), dim=2)
        n_rep = self.heads // self.kv_heads
        out = attend(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), mask)
        return self.o_proj(merge_heads(out)), k, v


class KVLayer(LlamaLayer):
    """A LLaMA layer whose attention reads and returns the key/value cache."""

    attention = KVAttention

    def forward(self, x, cos, sin, mask, past_k, past_v):
        a, k, v = self.self_attn(self.input_layernorm(x), cos, sin, mask, past_k, past_v)
        x = x + a
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(self.act(self.gate_proj(h)) * self.up_proj(h)), k, v


class KVDecoder(nn.Module):
    """forward(input_ids, past.0.key, past.0.value, past.1.key, past.1.value) -> (logits,
    present.0.key, present.0.value, present.1.key, present.1.value). Two layers: the past
    tensors are separate positional arguments (torch.export does not take ``*args``)."""

    LAYERS = 2

    def __init__(self, vocab: int = 100, hidden: int = 64, heads: int = 4,
                 kv_heads: int = 2, head_dim: int = 16, intermediate: int = 128) -> None:
        super().__init__()
        layers = self.LAYERS
        self.embed_tokens = nn.Embedding(vocab, hidden)
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32)
                                      / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.layers = nn.ModuleList(
            KVLayer(hidden, heads, kv_heads, head_dim, intermediate) for _ in range(layers))
        self.norm = RMSNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor, past_key_0: torch.Tensor,
                past_value_0: torch.Tensor, past_key_1: torch.Tensor,
                past_value_1: torch.Tensor) -> tuple[torch.Tensor, ...]:
        past = (past_key_0, past_value_0, past_key_1, past_value_1)
        seq = input_ids.shape[1]
        past_len = past[0].shape[2]
        x = self.embed_tokens(input_ids)
        positions = torch.arange(seq, dtype=torch.float32) + past_len
        freqs = positions[:, None] * self.inv_freq[None, :]  # [S, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        # additive causal mask [1, 1, S, P+S]: query i sees cache positions j <= P + i
        rows = torch.arange(seq)[:, None] + past_len
        cols = torch.arange(seq + past_len)[None, :]
        mask = torch.where(cols > rows, torch.finfo(x.dtype).min, 0.0).to(x.dtype)[None, None]
        presents: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, cos, sin, mask, past[2 * i], past[2 * i + 1])
            presents += [k, v]
        return (self.lm_head(self.norm(x)), *presents)


def kv_gqa() -> KVDecoder:
    """Grouped-query: 4 query heads, 2 KV heads of 16, hidden 64, 2 layers."""
    return KVDecoder(heads=4, kv_heads=2)


def kv_mha() -> KVDecoder:
    """Multi-head: 4 query and 4 KV heads of 16, hidden 64, 2 layers."""
    return KVDecoder(heads=4, kv_heads=4)
