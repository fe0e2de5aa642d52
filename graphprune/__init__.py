"""graphprune: a structured-pruning compiler for exported ONNX graphs.

    import graphprune
    pruned, report = graphprune.compress("model.onnx", ratio=0.4, criterion="l1")
    groups = graphprune.analyze("model.onnx").groups
"""

from __future__ import annotations

from .errors import GraphError, GraphpruneError, InputError, StageError, ValidationError
from .io import load, save_atomic
from .pipeline import AnalysisResult, analyze, apply_plan, compress
from .plan import Plan
from .report import Report

__version__ = "0.1.0"
__all__ = [
    "AnalysisResult", "GraphError", "GraphpruneError", "InputError", "Report", "StageError",
    "ValidationError", "Plan", "analyze", "apply_plan", "compress", "load", "save_atomic",
]
