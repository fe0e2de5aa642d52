"""Tiny BERT encoder with separate Q/K/V projections and an additive padding mask.

Structure follows the original BERT / HF ``BertModel`` eager path: word +
position + token-type embeddings, post-LN blocks, and a tanh pooler on the
[CLS] token, so the graph has two outputs that share the encoder. The int64
``attention_mask`` is turned into ``(1 - mask) * -1e4`` and added to the
scores, the pattern most exported BERTs carry.
"""

from __future__ import annotations

import torch
from torch import nn

from models.transformers.common import attend, merge_heads, split_heads

__all__ = ["Bert", "BertLayer", "bert"]


class BertEmbeddings(nn.Module):
    """Sum of word, position and token-type embeddings, then LayerNorm.

    Position ids and the all-zero token types are buffers sliced to the
    sequence length, as in HF, so they lower to Slice on a constant.
    """

    def __init__(self, vocab: int, hidden: int, max_positions: int, type_vocab: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.register_buffer(
            "position_ids", torch.arange(max_positions).unsqueeze(0), persistent=False
        )
        self.register_buffer(
            "token_type_ids", torch.zeros(1, max_positions, dtype=torch.long), persistent=False
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        batch, seq = input_ids.shape
        position_ids = self.position_ids[:, :seq]
        token_type_ids = self.token_type_ids[:, :seq].expand(batch, seq)
        x = (
            self.word_embeddings(input_ids)
            + self.token_type_embeddings(token_type_ids)
            + self.position_embeddings(position_ids)
        )
        return self.LayerNorm(x)


class BertLayer(nn.Module):
    """Post-LN block: attention -> add & norm -> FFN (GELU) -> add & norm."""

    def __init__(self, hidden: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, ffn)
        self.act = nn.GELU()
        self.output = nn.Linear(ffn, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = split_heads(self.query(x), self.heads)
        k = split_heads(self.key(x), self.heads)
        v = split_heads(self.value(x), self.heads)
        ctx = merge_heads(attend(q, k, v, mask))
        x = self.attn_norm(x + self.attn_out(ctx))
        return self.out_norm(x + self.output(self.act(self.intermediate(x))))


class Bert(nn.Module):
    """Embeddings -> N post-LN layers; returns (last hidden state, pooled [CLS])."""

    def __init__(
        self,
        vocab: int = 100,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 4,
        ffn: int = 128,
        max_positions: int = 64,
        type_vocab: int = 2,
    ) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(vocab, hidden, max_positions, type_vocab)
        self.layers = nn.ModuleList(BertLayer(hidden, heads, ffn) for _ in range(layers))
        self.pooler = nn.Linear(hidden, hidden)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embeddings(input_ids)
        # [B, S] int64 -> [B, 1, 1, S] additive float mask, BERT's classic -1e4 form.
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, mask)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return x, pooled


def bert() -> Bert:
    """BERT: hidden 64, 4 heads, FFN 128, 2 layers, vocab 100, 64 positions."""
    return Bert()
