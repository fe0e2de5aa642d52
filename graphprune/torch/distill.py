"""Recovery without labels: the dense original teaches the pruned module on unlabelled data.

`distill_loss(student, teacher, kind)` compares two outputs:
  - `kl`: Hinton et al. 2015, KL(softmax(t/T) ‖ softmax(s/T))·T² over the last axis (logits),
    averaged over every other position (tokens, samples);
  - `mse`: mean squared error (embeddings, hidden states);
  - `cosine`: 1 − cosine similarity along the last axis, averaged (sentence embeddings,
    whose direction is what a retrieval system compares).
`Distiller(teacher)` keeps a frozen copy of the teacher (take it before pruning) and gives
the loss of a student output on the same inputs: `loss = distiller(student_out, *inputs)`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention
from torch import nn

from graphprune.errors import InputError

KINDS = ("kl", "mse", "cosine")


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "kl", *,
                 temperature: float = 2.0) -> torch.Tensor:
    """The distillation loss of `student` against `teacher` (same shape; see the module)."""
    if kind not in KINDS:
        raise InputError(f"unknown distillation kind '{kind}' (choose from {', '.join(KINDS)})")
    if student.shape != teacher.shape:
        raise InputError(f"student output {tuple(student.shape)} and teacher output "
                         f"{tuple(teacher.shape)} differ in shape")
    teacher = teacher.detach()
    if kind == "mse":
        return F.mse_loss(student, teacher)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    if temperature <= 0:
        raise InputError(f"temperature must be positive, got {temperature}")
    n = student.shape[-1]
    s = F.log_softmax(student.reshape(-1, n) / temperature, dim=-1)
    t = F.log_softmax(teacher.reshape(-1, n) / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2


class Distiller:
    """A frozen teacher and the loss of a student against it.

    `teacher` is deep-copied (`copy=False`: used as is; it must then not be pruned) and put
    in eval mode without gradients. `select` picks the tensor to compare from an output (both
    the student's and the teacher's; e.g. `lambda out: out[0]` or a pooling function)."""

    def __init__(self, teacher: nn.Module, *, kind: str = "kl", temperature: float = 2.0,
                 select: Callable[[Any], torch.Tensor] | None = None, copy: bool = True) -> None:
        if kind not in KINDS:
            raise InputError(f"unknown distillation kind '{kind}' (choose from "
                             f"{', '.join(KINDS)})")
        self.teacher = _frozen(teacher) if copy else teacher.eval()
        self.kind, self.temperature = kind, temperature
        self.select = select or _first_tensor

    def targets(self, *inputs: Any) -> torch.Tensor:
        """The teacher's selected output on `inputs` (no gradients)."""
        with torch.no_grad():
            return self.select(self.teacher(*inputs))

    def __call__(self, student_out: Any, *inputs: Any) -> torch.Tensor:
        """The loss of the student's output against the teacher's on the same `inputs`."""
        return distill_loss(self.select(student_out), self.targets(*inputs), self.kind,
                            temperature=self.temperature)


def _frozen(module: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(module).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _first_tensor(out: Any) -> torch.Tensor:
    """The output itself, or the first tensor of a tuple, list, dict or ModelOutput."""
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, dict) else out
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
    raise InputError(f"no tensor in the model output ({type(out).__name__}); pass select=")
