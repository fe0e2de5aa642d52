"""Errors the user sees as one line, each with its documented exit code.

The command line's exit codes (README, "Exit codes"): 0 success; 1 `ValidationError`, the
exact check failed and nothing was written; 2 `InputError` (and `GraphError`), bad input or
usage; 3 `InternalError` (a stage failed for no reason in the input) and any other exception,
an internal error; 130 interrupted. Messages are single lines
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


class InternalError(GraphpruneError):
    """An exception no input explains (a graphprune bug), raised again by the stage runner
    naming the stage it happened in (exit 3); `cause` is the original exception."""

    exit_code = 3

    def __init__(self, stage: str, cause: BaseException, detail: str = "") -> None:
        self.stage, self.detail, self.cause = stage, detail, cause
        where = f"stage '{stage}'" + (f" ({detail})" if detail else "")
        super().__init__(f"internal error in {where}: {type(cause).__name__}: "
                         f"{one_line(cause)}")


def one_line(exc: BaseException | str, limit: int | None = None) -> str:
    """A message on one line (onnxruntime and numpy spread theirs over several), cut at
    `limit` characters when given; an empty message gives the exception's type name."""
    text = " ".join(str(exc).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text or (type(exc).__name__ if isinstance(exc, BaseException) else "")
