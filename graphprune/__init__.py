"""graphprune: a structured-pruning compiler for exported ONNX graphs.

    import graphprune
    pruned, report = graphprune.compress("model.onnx", ratio=0.4, criterion="l1")
    pruned, report = graphprune.compress("model.onnx", options=graphprune.Options(ratio=0.4))
    groups = graphprune.analyze("model.onnx").groups
    sparse, report = graphprune.sparsify("model.onnx", pattern="2:4", method="sparsegpt")
"""

from __future__ import annotations

from .errors import GraphError, GraphpruneError, InputError, StageError, ValidationError
from .io import load, save_atomic
from .passes.options import Options
from .pipeline import AnalysisResult, analyze, apply_plan, compress, sparsify
from .plan import Plan
from .report import Report
from .version import __version__

__all__ = [
    "AnalysisResult", "GraphError", "GraphpruneError", "InputError", "Options", "Plan",
    "Report", "StageError", "ValidationError", "__version__", "analyze", "apply_plan",
    "compress", "load", "save_atomic", "sparsify",
]
