"""graphprune in a torch training loop (needs the `torch` extra: `pip install graphprune[torch]`).

    from graphprune.torch import Pruner
    pruner = Pruner(model, example_inputs, target_macs=0.4, criterion="taylor",
                    schedule="cubic", steps=10, every=50, optimizer=optimizer)
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        pruner.accumulate()          # gradient criteria gather their statistics
        optimizer.step(); optimizer.zero_grad()
        pruner.step()                # prunes when the schedule says so (masks)
    dense, report = pruner.export("model.onnx")   # the rewrite, proven exact

The module is analysed through its ONNX export with the same analysis, scoring and selection
as `graphprune compress`; see `Pruner` for the mask contract.
"""

from __future__ import annotations

from .distill import Distiller, distill_loss
from .export import export_module
from .pruner import GroupInfo, Pruner
from .schedule import SCHEDULES, Schedule
from .shrink import CannotShrink
from .units import GRADIENT_CRITERIA

__all__ = ["GRADIENT_CRITERIA", "SCHEDULES", "CannotShrink", "Distiller", "GroupInfo",
           "Pruner", "Schedule", "distill_loss", "export_module"]
