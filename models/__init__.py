"""Registry of small reference architectures used to exercise graphprune.

The models are tiny on purpose: they exist to cover the graph *patterns* a
structured-pruning pass must handle (residual adds, concat, grouped and
depthwise convs, SE gating, channel shuffle, flatten->linear, LayerNorm;
for transformers: attention heads through separate or fused QKV, masks,
rotary slicing, grouped-query ``repeat_kv``, SwiGLU, tied embeddings), not
to be accurate. Torch is imported lazily so that ``import models`` stays
cheap for code that only needs the names.

``CNN_MODELS`` take one float ``input`` with a dynamic ``batch`` axis.
``TRANSFORMER_MODELS`` describe their inputs with ``InputSpec`` (int64
``input_ids``/``attention_mask`` or float features) and have dynamic
``batch`` and, except ViT, ``sequence`` axes (KV-cache decoders also a ``past`` axis).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

__all__ = [
    "BATCH",
    "BENCH_MODELS",
    "CNN_MODELS",
    "SEQUENCE",
    "TRANSFORMER_MODELS",
    "InputSpec",
    "ModelSpec",
    "get",
    "names",
]


DType = Literal["float32", "int64"]
"""Input element types the reference models use (numpy/torch spelling)."""

BATCH = "batch"
SEQUENCE = "sequence"


@dataclass(frozen=True)
class InputSpec:
    """One graph input: name, example (trace) shape, dtype, value range, dynamic axes.

    ``shape`` is the size used for tracing/export; the axes named in
    ``dynamic_axes`` become symbolic ONNX dims, so they may take other sizes
    at run time. Integer inputs (token ids, masks) are drawn uniformly from
    ``[low, high)``; ``high`` must be set for them, since an id past the
    vocabulary would index out of range. Float inputs are standard normal.
    """

    name: str
    shape: tuple[int, ...]
    dtype: DType = "float32"
    low: int = 0
    high: int | None = None
    dynamic_axes: Mapping[int, str] = field(default_factory=lambda: {0: BATCH}, hash=False)

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "int64"):
            raise ValueError(f"{self.name}: unsupported dtype {self.dtype!r}")
        if self.dtype == "int64" and self.high is None:
            raise ValueError(f"{self.name}: integer inputs need an exclusive upper bound 'high'")
        bad = [a for a in self.dynamic_axes if not 0 <= a < len(self.shape)]
        if bad:
            raise ValueError(f"{self.name}: dynamic axes {bad} outside rank {len(self.shape)}")

    def sized(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The shape with each dynamic axis whose name is in ``sizes`` set to that size."""
        dims = list(self.shape)
        for axis, dim_name in self.dynamic_axes.items():
            if dim_name in sizes:
                dims[axis] = sizes[dim_name]
        return tuple(dims)

    def sample(
        self, sizes: Mapping[str, int] | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A random tensor of this input's dtype, resized along named dynamic axes."""
        import torch

        shape = self.sized(sizes or {})
        if self.dtype == "int64":
            assert self.high is not None  # enforced in __post_init__
            return torch.randint(self.low, self.high, shape, generator=generator)
        return torch.randn(shape, generator=generator)


@dataclass(frozen=True)
class ModelSpec:
    """How to build one reference model and what inputs it expects.

    Single-input float models (the CNNs) give only ``input_shape``; the
    input is then named ``input`` with a dynamic batch axis. Models with
    several or non-float inputs also give ``inputs``, and ``input_shape``
    is then the first input's shape (kept so older callers still work).
    ``static_dims`` lists, per exporter, dims that exporter cannot keep
    symbolic correctly, so they are exported static rather than wrong.
    """

    name: str
    build: Callable[[], torch.nn.Module]
    input_shape: tuple[int, ...]
    family: str
    inputs: tuple[InputSpec, ...] = ()
    static_dims: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    """exporter -> dim names that exporter must keep static (works around exporter bugs)."""
    outputs: tuple[str, ...] = ()
    """Graph output names (empty: ``output`` / ``output0..N``, see models.export)."""

    def __post_init__(self) -> None:
        if not self.inputs:
            object.__setattr__(self, "inputs", (InputSpec("input", tuple(self.input_shape)),))

    @property
    def input_names(self) -> list[str]:
        """Graph input names, in forward-argument order."""
        return [i.name for i in self.inputs]

    def inputs_for(self, exporter: str | None = None) -> tuple[InputSpec, ...]:
        """``inputs`` minus the dynamic axes ``static_dims`` pins for ``exporter``."""
        pinned = set(self.static_dims.get(exporter, ())) if exporter else set()
        if not pinned:
            return self.inputs
        return tuple(
            replace(i, dynamic_axes={a: d for a, d in i.dynamic_axes.items() if d not in pinned})
            for i in self.inputs
        )

    def dynamic_dims(self, exporter: str | None = None) -> list[str]:
        """Symbolic dim names across the inputs (e.g. ``batch``, ``sequence``), in order."""
        seen: dict[str, None] = {}
        for spec in self.inputs_for(exporter):
            seen.update(dict.fromkeys(spec.dynamic_axes.values()))
        return list(seen)

    def example_inputs(
        self, sizes: Mapping[str, int] | None = None, seed: int = 0
    ) -> tuple[torch.Tensor, ...]:
        """Seeded random inputs, one per ``inputs`` entry, e.g. ``sizes={"batch": 3}``."""
        import torch

        gen = torch.Generator().manual_seed(seed)
        return tuple(spec.sample(sizes, gen) for spec in self.inputs)


def _lazy_builder(name: str, module: str, factory: str) -> Callable[[], torch.nn.Module]:
    """Return a deterministic builder that imports its torch module on first call."""

    def build() -> torch.nn.Module:
        import torch

        from models.cnn.common import randomize_bn

        torch.manual_seed(0)
        mod = importlib.import_module(f"models.cnn.{module}")
        model: torch.nn.Module = getattr(mod, factory)()
        randomize_bn(model, seed=0)
        return model.eval()

    build.__name__ = f"build_{name}"
    build.__qualname__ = f"build_{name}"
    return build


# name -> (module, factory, input_shape)
_CNN_TABLE: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "resnet_basic": ("resnet", "resnet_basic", (1, 3, 32, 32)),
    "resnet_bottleneck": ("resnet", "resnet_bottleneck", (1, 3, 32, 32)),
    "vgg": ("vgg", "vgg", (1, 3, 32, 32)),
    "mobilenet_v2": ("mobilenet_v2", "mobilenet_v2", (1, 3, 32, 32)),
    "mobilenet_v3": ("mobilenet_v3", "mobilenet_v3", (1, 3, 32, 32)),
    "efficientnet": ("efficientnet", "efficientnet", (1, 3, 32, 32)),
    "densenet": ("densenet", "densenet", (1, 3, 32, 32)),
    "inception": ("inception", "inception", (1, 3, 32, 32)),
    "shufflenet_v2": ("shufflenet_v2", "shufflenet_v2", (1, 3, 32, 32)),
    "resnext": ("resnext", "resnext", (1, 3, 32, 32)),
    "regnet": ("regnet", "regnet", (1, 3, 32, 32)),
    "unet": ("unet", "unet", (1, 3, 64, 64)),
    "yolo_csp": ("yolo_csp", "yolo_csp", (1, 3, 64, 64)),
    "convnext": ("convnext", "convnext", (1, 3, 32, 32)),
}

CNN_MODELS: dict[str, ModelSpec] = {
    name: ModelSpec(
        name=name,
        build=_lazy_builder(name, module, factory),
        input_shape=shape,
        family="cnn",
    )
    for name, (module, factory, shape) in _CNN_TABLE.items()
}

BENCH_MODELS: dict[str, ModelSpec] = {
    "resnet50": ModelSpec(
        "resnet50", _lazy_builder("resnet50", "resnet", "resnet50"), (1, 3, 224, 224), "cnn"
    ),
}
"""Full-size models for benchmarks only (too slow to export in every test run)."""


def _transformer_builder(name: str, module: str, factory: str) -> Callable[[], torch.nn.Module]:
    """Deterministic builder for ``models.transformers.<module>.<factory>``.

    Norm layers get random affine params (as the CNNs' BN layers do) so that
    a pruner which drops or misaligns a LayerNorm/RMSNorm channel shows up
    as a numeric mismatch instead of hiding behind weight 1 / bias 0.
    """

    def build() -> torch.nn.Module:
        import torch

        from models.transformers.common import randomize_norms

        torch.manual_seed(0)
        mod = importlib.import_module(f"models.transformers.{module}")
        model: torch.nn.Module = getattr(mod, factory)()
        randomize_norms(model, seed=0)
        return model.eval()

    build.__name__ = f"build_{name}"
    build.__qualname__ = f"build_{name}"
    return build


TRACE_BATCH, TRACE_SEQUENCE = 2, 7
"""Example sizes for tracing: neither is 0/1 (torch.export would specialise those), and 7
is no other dim of any model (head_dim 8/16, hidden 32/64, vocab 100, positions 64)."""
VOCAB = 100


def _text_inputs(mask: bool) -> tuple[InputSpec, ...]:
    """``input_ids`` (and optionally a 0/1 ``attention_mask``), dynamic batch and sequence."""
    axes = {0: BATCH, 1: SEQUENCE}
    shape = (TRACE_BATCH, TRACE_SEQUENCE)
    ids = InputSpec("input_ids", shape, "int64", 0, VOCAB, axes)
    if not mask:
        return (ids,)
    return ids, InputSpec("attention_mask", shape, "int64", 0, 2, axes)


def _feature_inputs(dim: int) -> tuple[InputSpec, ...]:
    """One float ``input`` of ``[batch, sequence, dim]`` features (embedding-free models)."""
    shape = (TRACE_BATCH, TRACE_SEQUENCE, dim)
    return (InputSpec("input", shape, dynamic_axes={0: BATCH, 1: SEQUENCE}),)


PAST = "past"
TRACE_PAST = 5
"""Past (KV-cache) length used for tracing: not 0/1 and no other dim of the models."""


def _kv_inputs(layers: int, kv_heads: int, head_dim: int) -> tuple[InputSpec, ...]:
    """``input_ids`` and ``past.{i}.key``/``past.{i}.value`` of [batch, kv_heads, past, D]."""
    shape = (TRACE_BATCH, kv_heads, TRACE_PAST, head_dim)
    axes = {0: BATCH, 2: PAST}
    past = tuple(InputSpec(f"past.{i}.{kv}", shape, dynamic_axes=axes)
                 for i in range(layers) for kv in ("key", "value"))
    return (*_text_inputs(mask=False), *past)


def _kv_outputs(layers: int) -> tuple[str, ...]:
    return ("logits", *(f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")))


_TORCHSCRIPT_STATIC_SEQUENCE: dict[str, tuple[str, ...]] = {"torchscript": (SEQUENCE,)}
"""For ``nn.MultiheadAttention``: under the TorchScript exporter, torch's own
``multi_head_attention_forward`` reads ``k.shape[0]`` after an ``unflatten``
whose shape the exporter cannot infer, so it bakes the traced sequence
length into a Reshape (pytorch/pytorch#122321, #143107); the model then
fails at any other length. The dynamo export is fully dynamic."""


# name -> (module, factory, inputs)
_TRANSFORMER_TABLE: dict[str, tuple[str, str, tuple[InputSpec, ...]]] = {
    "bert": ("bert", "bert", _text_inputs(mask=True)),
    "vit": ("vit", "vit", (InputSpec("input", (TRACE_BATCH, 3, 32, 32)),)),
    "gpt2": ("gpt2", "gpt2", _text_inputs(mask=False)),
    "llama": ("llama", "llama", _text_inputs(mask=False)),
    "mha_encoder": ("mha", "mha_encoder", _feature_inputs(32)),
    "transformer_encoder": ("mha", "transformer_encoder", _feature_inputs(32)),
    "kv_llama": ("kv_decoder", "kv_gqa", _kv_inputs(2, 2, 16)),
    "kv_mha": ("kv_decoder", "kv_mha", _kv_inputs(2, 4, 16)),
}
_OUTPUTS: dict[str, tuple[str, ...]] = {"kv_llama": _kv_outputs(2), "kv_mha": _kv_outputs(2)}
"""Models with named outputs (KV-cache decoders: ``logits`` and ``present.{i}.key/value``)."""
if importlib.util.find_spec("transformers") is not None:  # optional: pip install transformers
    _TRANSFORMER_TABLE |= {
        "hf_bert": ("hf", "hf_bert", _text_inputs(mask=True)),
        "hf_gpt2": ("hf", "hf_gpt2", _text_inputs(mask=True)),
        "hf_llama": ("hf", "hf_llama", _text_inputs(mask=True)),
    }

TRANSFORMER_MODELS: dict[str, ModelSpec] = {
    name: ModelSpec(
        name=name,
        build=_transformer_builder(name, module, factory),
        input_shape=inputs[0].shape,
        family="transformer",
        inputs=inputs,
        static_dims=_TORCHSCRIPT_STATIC_SEQUENCE if module == "mha" else {},
        outputs=_OUTPUTS.get(name, ()),
    )
    for name, (module, factory, inputs) in _TRANSFORMER_TABLE.items()
}
"""Tiny attention models (BERT, ViT, GPT-2, LLaMA, nn.MultiheadAttention, KV-cache decoders
``kv_llama`` (GQA) and ``kv_mha`` with past/present key-values as inputs/outputs); ``hf_*`` entries
only when the optional ``transformers`` package is importable."""


def get(name: str) -> ModelSpec:
    """Look up a model spec by name, listing the valid names on a miss."""
    for table in (CNN_MODELS, TRANSFORMER_MODELS, BENCH_MODELS):
        if name in table:
            return table[name]
    known = ", ".join(sorted([*CNN_MODELS, *TRANSFORMER_MODELS, *BENCH_MODELS]))
    raise KeyError(f"unknown model {name!r}; known models: {known}")


def names(family: str | None = None) -> list[str]:
    """Registered model names (benchmarks excluded), in registration order.

    ``family`` ("cnn" or "transformer") restricts the list to one family.
    """
    specs = [*CNN_MODELS.values(), *TRANSFORMER_MODELS.values()]
    return [s.name for s in specs if family is None or s.family == family]
