"""Op rules, one small function per op type, grouped by family. Importing registers them
(with their traits) in graphprune.ops; graphprune imports this package."""

from . import attention, conv, elementwise, indexing, linear, norm, shape, spatial  # noqa: F401
