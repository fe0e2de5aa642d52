"""Registry of small reference architectures used to exercise graphprune.

The models are tiny on purpose: they exist to cover the graph *patterns* a
structured-pruning pass must handle (residual adds, concat, grouped and
depthwise convs, SE gating, channel shuffle, flatten->linear, LayerNorm),
not to be accurate. Torch is imported lazily so that ``import models`` stays
cheap for code that only needs the names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["BENCH_MODELS", "CNN_MODELS", "ModelSpec", "get", "names"]


@dataclass(frozen=True)
class ModelSpec:
    """How to build one reference model and what input it expects."""

    name: str
    build: Callable[[], torch.nn.Module]
    input_shape: tuple[int, ...]
    family: str


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
    "resnet50": ModelSpec("resnet50", _lazy_builder("resnet50", "resnet", "resnet50"),
                          (1, 3, 224, 224), "cnn"),
}
"""Full-size models for benchmarks only (too slow to export in every test run)."""


def get(name: str) -> ModelSpec:
    """Look up a model spec by name, listing the valid names on a miss."""
    try:
        return CNN_MODELS[name] if name in CNN_MODELS else BENCH_MODELS[name]
    except KeyError:
        known = ", ".join(sorted([*CNN_MODELS, *BENCH_MODELS]))
        raise KeyError(f"unknown model {name!r}; known models: {known}") from None


def names() -> list[str]:
    """All registered model names, in registration order."""
    return list(CNN_MODELS)
