"""Errors the user sees as one line, each with its documented exit code.

The command line's exit codes (README, "Exit codes"): 0 success; 1 `ValidationError`, the
exact check failed and nothing was written; 2 `InputError` (and `GraphError`), bad input or
usage; 3 any other exception, an internal error; 130 interrupted. Messages are single lines
(the CLI also collapses any line breaks a quoted library message brings along).
"""

from __future__ import annotations


class GraphpruneError(Exception):
    """Base class: a message fit for one line of terminal output."""

    exit_code = 2

    def __str__(self) -> str:
        # a quoted tensor or node name may itself hold a line break: show it escaped
        return super().__str__().replace("\r", "\\r").replace("\n", "\\n")


class InputError(GraphpruneError):
    """Bad input file, bad option or unusable path (exit 2)."""

    exit_code = 2


class GraphError(InputError):
    """The graph itself is malformed or unsupported (exit 2)."""


class ValidationError(GraphpruneError):
    """The rewrite failed its exact check; nothing was written (exit 1)."""

    exit_code = 1
