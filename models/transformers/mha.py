"""Encoders built on torch's own attention modules (``nn.MultiheadAttention``).

These cover the packed ``in_proj_weight`` ([3E, E], one parameter rather
than a Linear per projection) and torch's internal head split
(``unflatten``/``transpose`` of the packed projection), which is what users
get when they build transformers from ``torch.nn`` instead of HF code.

Both modules disable torch's "fast path" while they run. In eval mode
under ``no_grad`` (exactly the export setting) ``MultiheadAttention`` and
``TransformerEncoderLayer`` would otherwise dispatch to the fused kernels
``_native_multi_head_attention`` / ``_transformer_encoder_layer_fwd``,
which have no ONNX lowering in the TorchScript exporter and would make the
eager reference take a different numerical path from the exported graph.
``enable_nested_tensor=False`` likewise keeps ``TransformerEncoder`` from
converting padded batches to nested tensors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["MHAEncoder", "TorchTransformerEncoder", "mha_encoder", "transformer_encoder"]


@contextlib.contextmanager
def _no_fastpath() -> Iterator[None]:
    """Temporarily turn off the fused MHA / encoder-layer kernels (restored on exit)."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


@torch.no_grad()
def _randomize_mha_biases(model: nn.Module) -> None:
    """Re-draw every ``MultiheadAttention``'s weights with non-zero biases.

    Torch initialises ``in_proj_bias`` and ``out_proj.bias`` to zero, which
    would hide a pruner that slices the packed q/k/v bias wrongly.
    """
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            module._reset_parameters()
            assert module.in_proj_bias is not None and module.out_proj.bias is not None
            module.in_proj_bias.normal_(0.0, 0.1)
            module.out_proj.bias.normal_(0.0, 0.1)


class MHAEncoderLayer(nn.Module):
    """Post-LN block: x + MHA(x); LN; x + FFN(x); LN."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(ffn, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn, _ = self.attn(x, x, x, need_weights=False)
        x = self.norm1(x + attn)
        return self.norm2(x + self.fc2(self.act(self.fc1(x))))


class MHAEncoder(nn.Module):
    """A stack of ``MHAEncoderLayer`` on float features ``[B, S, dim]`` (no embedding)."""

    def __init__(self, dim: int = 32, heads: int = 4, ffn: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MHAEncoderLayer(dim, heads, ffn) for _ in range(layers))
        _randomize_mha_biases(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _no_fastpath():
            for layer in self.layers:
                x = layer(x)
        return x


class TorchTransformerEncoder(nn.Module):
    """``nn.TransformerEncoder`` of ``nn.TransformerEncoderLayer`` (post-LN, GELU).

    ``TransformerEncoder`` deep-copies one layer, so every layer starts with
    the same weights; they are re-initialised here so a pruner that mixes
    up layers cannot pass by accident.
    """

    def __init__(self, dim: int = 32, heads: int = 4, ffn: int = 64, layers: int = 2) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            dim, heads, ffn, dropout=0.0, activation="gelu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        for module in self.encoder.modules():
            if isinstance(module, nn.Linear):  # includes MHA's out_proj
                module.reset_parameters()
        _randomize_mha_biases(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _no_fastpath():
            return self.encoder(x)


def mha_encoder() -> MHAEncoder:
    """Two post-LN ``nn.MultiheadAttention`` layers: dim 32, 4 heads, FFN 64."""
    return MHAEncoder()


def transformer_encoder() -> TorchTransformerEncoder:
    """Two ``nn.TransformerEncoderLayer``: dim 32, 4 heads, FFN 64, GELU, no dropout."""
    return TorchTransformerEncoder()
