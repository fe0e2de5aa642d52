"""Errors the user sees as one line, each with its documented exit code."""

from __future__ import annotations


class GraphpruneError(Exception):
    """Base class: a message fit for one line of terminal output."""

    exit_code = 2


class InputError(GraphpruneError):
    """Bad input file, bad option or unusable path (exit 2)."""

    exit_code = 2


class GraphError(InputError):
    """The graph itself is malformed or unsupported (exit 2)."""


class ValidationError(GraphpruneError):
    """The rewrite failed its exact check; nothing was written (exit 1)."""

    exit_code = 1
