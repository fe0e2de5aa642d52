"""Op rules, one small function per op type, grouped by family. Importing registers them."""

from . import attention, conv, elementwise, indexing, linear, norm, shape, spatial  # noqa: F401
from .registry import lookup, rule, supported_ops

__all__ = ["lookup", "rule", "supported_ops"]
