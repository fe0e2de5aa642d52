"""Errors the user sees as one line, each with its documented exit code.

The command line's exit codes (README, "Exit codes"): 0 success; 1 `ValidationError`, the
exact check failed and nothing was written; 2 `InputError` (and `GraphError`), bad input or
usage; 3 `StageError` (a stage failed unexpectedly, named) and any other exception, an internal
error; 130 interrupted. Messages are single lines (the CLI also collapses any line breaks a
quoted library message brings along).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


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


class StageError(GraphpruneError):
    """An unexpected failure inside a stage of a run (exit 3, an internal error): the message
    names the stage and quotes the cause, which stays chained (`--verbose` shows it)."""

    exit_code = 3


STAGE_TEXT = 400
"""Characters of the cause's message a StageError quotes (the rest: `--verbose`)."""


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Name the stage `name` in any unexpected failure inside the block ("calibration
    statistics failed: …"), so a failure is not blamed on another stage or on the input.
    GraphpruneErrors pass unchanged: they already say what went wrong, and an inner stage's
    name is the more precise one."""
    try:
        yield
    except GraphpruneError:
        raise
    except Exception as exc:
        raise StageError(f"{name} failed: {type(exc).__name__}: "
                         f"{one_line(exc, STAGE_TEXT)}") from exc


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (onnx's checker and shape inference add lines of
    context after it), or the exception's type name when the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def one_line(exc: BaseException | str, limit: int | None = None) -> str:
    """A message on one line (onnxruntime and numpy spread theirs over several), cut at
    `limit` characters when given; an empty message gives the exception's type name."""
    text = " ".join(str(exc).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text or (type(exc).__name__ if isinstance(exc, BaseException) else "")
