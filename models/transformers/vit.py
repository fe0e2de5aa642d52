"""Tiny pre-LN Vision Transformer with a fused QKV projection (timm layout).

The single ``qkv`` Linear produces ``3 * hidden`` features that are
reshaped to ``[B, N, 3, heads, head_dim]``, permuted and unbound, so one
weight matrix carries all three projections interleaved per head: pruning a
head has to cut three strided row blocks of it. The patch embedding is a
strided Conv2d followed by flatten/transpose, then a learned [CLS] token is
concatenated and position embeddings are added.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ViT", "ViTBlock", "vit"]


class FusedAttention(nn.Module):
    """Self-attention with one qkv Linear, reshape/permute/unbind, then proj."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = hidden // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(batch, tokens, channels)
        return self.proj(x)


class ViTBlock(nn.Module):
    """Pre-LN: x + attn(LN(x)); x + MLP(LN(x)) with GELU."""

    def __init__(self, hidden: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, eps=1e-6)
        self.attn = FusedAttention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-6)
        self.fc1 = nn.Linear(hidden, mlp)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """Patchify -> [CLS] + positions -> pre-LN blocks -> LN -> Linear head on [CLS]."""

    def __init__(
        self,
        image: int = 32,
        patch: int = 8,
        in_ch: int = 3,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 4,
        mlp: int = 128,
        classes: int = 10,
    ) -> None:
        super().__init__()
        tokens = (image // patch) ** 2 + 1
        self.patch_embed = nn.Conv2d(in_ch, hidden, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, hidden) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(hidden, heads, mlp) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, C]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def vit() -> ViT:
    """ViT: 32x32 images, 8x8 patches (16 + 1 tokens), hidden 64, 4 heads, 2 layers."""
    return ViT()
