"""Tiny Hugging Face ``transformers`` models built from configs (random weights).

Optional: needs ``pip install transformers``; nothing is downloaded. These
are the real HF modeling files, so the exported graphs carry whatever mask
construction, rotary and ``repeat_kv`` code the installed version uses,
which drifts between releases in ways the hand-written models do not. The
eager attention implementation is requested explicitly so attention lowers
to MatMul/Softmax rather than to whatever the SDPA lowering of the day is.

Each model is wrapped so ``forward`` takes positional tensors and returns a
plain tuple, which both exporters need (HF returns ``ModelOutput`` objects
and takes many optional keyword arguments).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["hf_bert", "hf_gpt2", "hf_llama"]

_TINY: dict[str, Any] = {
    "vocab_size": 100,
    "use_cache": False,
    "bos_token_id": 0,
    "eos_token_id": 0,
}


class _HFBert(nn.Module):
    """``BertModel`` -> (last_hidden_state, pooler_output)."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig(
            **_TINY,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=64,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        config._attn_implementation = "eager"
        self.model = BertModel(config)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return out.last_hidden_state, out.pooler_output


class _HFCausalLM(nn.Module):
    """A ``*ForCausalLM`` model -> logits, taking ``attention_mask`` as exports usually do.

    The mask input is not only for realism: without one, HF (5.x) scans
    ``position_ids`` for packed sequences with ``torch.diff``, which the
    TorchScript exporter cannot lower.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return out.logits


def hf_bert() -> nn.Module:
    """HF BERT: hidden 64, 4 heads, FFN 128, 2 layers, vocab 100."""
    return _HFBert()


def hf_gpt2() -> nn.Module:
    """HF GPT-2 LM head model: n_embd 64, 4 heads, 2 layers, vocab 100 (tied head)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        **_TINY,
        n_positions=64,
        n_embd=64,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    config._attn_implementation = "eager"
    return _HFCausalLM(GPT2LMHeadModel(config))


def hf_llama() -> nn.Module:
    """HF LLaMA: hidden 64, 4 query / 2 KV heads (head_dim 16), MLP 128, 2 layers."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **_TINY,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "eager"
    return _HFCausalLM(LlamaForCausalLM(config))
