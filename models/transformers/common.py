"""Pieces shared by the reference transformers.

Kept plain (no fused kernels, no ``scaled_dot_product_attention``) so the
exported graphs show the textbook MatMul -> Softmax -> MatMul sequence.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["RMSNorm", "attend", "merge_heads", "randomize_norms", "split_heads"]


class RMSNorm(nn.Module):
    """LLaMA RMSNorm written out: ``x * rsqrt(mean(x^2) + eps) * weight``.

    Spelled manually (not ``nn.RMSNorm``) because that is what HF LLaMA/Qwen/
    Mistral code does, so the ONNX graph shows Pow/ReduceMean/Add/Sqrt/Div
    (or Rsqrt) rather than a single op.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, S, heads*D] -> [B, heads, S, D]`` via view + transpose (HF style)."""
    batch, seq, _ = x.shape
    return x.view(batch, seq, heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, heads, S, D] -> [B, S, heads*D]`` via transpose + reshape."""
    batch, heads, seq, dim = x.shape
    return x.transpose(1, 2).reshape(batch, seq, heads * dim)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Scaled dot-product attention, explicit: ``softmax(q k^T / sqrt(d) + mask) v``.

    ``mask`` broadcasts to ``[B, heads, S, S]`` and is either additive
    (float: 0 keep, large negative drop; BERT/LLaMA style) or boolean
    (True keep; applied with ``masked_fill``, GPT-2 style, i.e. a Where op).
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    elif mask is not None:
        scores = scores + mask
    return torch.matmul(torch.softmax(scores, dim=-1), v)


@torch.no_grad()
def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every LayerNorm / RMSNorm a non-trivial affine transform.

    Fresh norms have weight 1 and bias 0, which would let a pruner get away
    with dropping or misaligning norm channels. Matches on the class name
    too, so HF's ``LlamaRMSNorm`` and friends are covered.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        is_norm = isinstance(module, (nn.LayerNorm, nn.RMSNorm, RMSNorm)) or type(
            module
        ).__name__.endswith(("LayerNorm", "RMSNorm"))
        if not is_norm:
            continue
        weight = getattr(module, "weight", None)
        bias = getattr(module, "bias", None)
        if isinstance(weight, torch.Tensor):
            weight.copy_(torch.rand(weight.shape, generator=gen) + 0.5)
        if isinstance(bias, torch.Tensor):
            bias.copy_(torch.randn(bias.shape, generator=gen) * 0.2)
    return model
