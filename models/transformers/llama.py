"""Tiny LLaMA-family decoder: RMSNorm, rotary embeddings, GQA, SwiGLU, causal mask.

Written like HF's eager ``LlamaModel`` (which Qwen2 and Mistral share):
``rotate_half`` slices the head dim in halves and concatenates
``(-x2, x1)``, so pruning inside a head must keep the two rotary halves
paired; ``repeat_kv`` broadcasts each K/V head to ``heads // kv_heads``
query heads via ``expand`` + ``reshape``, so K/V heads couple to *groups*
of Q heads; and the SwiGLU MLP multiplies ``silu(gate(x)) * up(x)``,
coupling the gate and up projections' output channels.
"""

from __future__ import annotations

import torch
from torch import nn

from models.transformers.common import RMSNorm, attend, merge_heads, split_heads

__all__ = ["Llama", "LlamaLayer", "llama", "repeat_kv", "rotate_half"]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` over the last (head) dim."""
    half = x.shape[-1] // 2
    x1 = x[..., :half]
    x2 = x[..., half:]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``[B, kv_heads, S, D] -> [B, kv_heads * n_rep, S, D]`` (HF ``repeat_kv``)."""
    batch, kv_heads, seq, dim = x.shape
    if n_rep == 1:
        return x
    x = x[:, :, None, :, :].expand(batch, kv_heads, n_rep, seq, dim)
    return x.reshape(batch, kv_heads * n_rep, seq, dim)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for positions ``arange(S)`` from fixed inverse frequencies."""

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, seq: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(seq, dtype=torch.float32, device=self.inv_freq.device)
        freqs = torch.outer(positions, self.inv_freq)  # [S, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [S, D]
        return emb.cos().to(dtype)[None, None], emb.sin().to(dtype)[None, None]


class LlamaAttention(nn.Module):
    """GQA: q_proj to ``heads * D``, k/v_proj to ``kv_heads * D``, RoPE on q/k, repeat_kv."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.kv_heads = heads, kv_heads
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        q = split_heads(self.q_proj(x), self.heads)
        k = split_heads(self.k_proj(x), self.kv_heads)
        v = split_heads(self.v_proj(x), self.kv_heads)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        n_rep = self.heads // self.kv_heads
        out = attend(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), mask)
        return self.o_proj(merge_heads(out))


class LlamaLayer(nn.Module):
    """Pre-RMSNorm attention and SwiGLU MLP, each with a residual add."""

    attention = LlamaAttention

    def __init__(
        self, hidden: int, heads: int, kv_heads: int, head_dim: int, intermediate: int
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(hidden)
        self.self_attn = self.attention(hidden, heads, kv_heads, head_dim)
        self.post_attention_layernorm = RMSNorm(hidden)
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)
        self.act = nn.SiLU()

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(self.act(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    """embed -> layers (shared RoPE tables and causal mask) -> RMSNorm -> untied lm_head."""

    def __init__(
        self,
        vocab: int = 100,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 4,
        kv_heads: int = 2,
        head_dim: int = 16,
        intermediate: int = 128,
    ) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.rotary = RotaryEmbedding(head_dim)
        self.layers = nn.ModuleList(
            LlamaLayer(hidden, heads, kv_heads, head_dim, intermediate) for _ in range(layers)
        )
        self.norm = RMSNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        x = self.embed_tokens(input_ids)
        cos, sin = self.rotary(seq, x.dtype)
        # Additive causal mask [1, 1, S, S]: dtype-min strictly above the diagonal.
        mask = torch.full((seq, seq), torch.finfo(x.dtype).min, dtype=x.dtype).triu(1)
        mask = mask[None, None]
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.norm(x))


def llama() -> Llama:
    """LLaMA: hidden 64, 4 query / 2 KV heads of 16, SwiGLU 128, 2 layers, vocab 100."""
    return Llama()
