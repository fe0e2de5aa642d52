"""Terminal tables and paragraphs that fit a width without cutting anything.

A table's columns are either fixed (numbers, kinds: as wide as their widest cell) or flexible
(names, reasons: they share what the fixed columns leave). A cell longer than its column
wraps onto continuation lines of its row: names break after a separator (`.`, `/`, `_`,
`-`, `:`), text between words, and a piece longer than the column is split where it must.
On a narrow terminal a text column that would be too narrow to read moves under its row,
as an indented paragraph.
Every character of every cell is printed; `width=None` prints each cell on one line (the
CLI's `--wide`). New rows and columns wrap the same way: nothing here knows what a table
holds.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_WIDTH = 100
"""Width when neither COLUMNS nor a terminal says (output to a file or a pipe)."""
GAP = 2
MIN_FLEX = 12
MIN_TEXT = 28
"""A text column (words) narrower than this moves under its row, indented by BELOW."""
BELOW = 4
_NAME_BREAKS = (re.compile(r"(?<=[./])"), re.compile(r"(?<=[_:\-])"))
"""Where a name may break: after a path separator, else after a word separator."""


def terminal_width() -> int:
    """COLUMNS, else the terminal's width, else DEFAULT_WIDTH."""
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


@dataclass(frozen=True)
class Column:
    title: str
    align: str = "<"
    """"<" left, ">" right."""
    flex: bool = False
    """Shares the free width and wraps (names, reasons); else as wide as its widest cell."""
    words: bool = False
    """Wrap between words (reasons); else after name separators (names)."""


def wrap_name(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width`, broken after separators where possible (after
    `.` or `/` first, then `_`, `-` or `:`, then anywhere)."""
    lines: list[str] = []
    line = ""
    for piece in _pieces(text, width, 0):
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
    return [*lines, line] if line or not lines else lines


def _pieces(text: str, width: int, level: int) -> list[str]:
    """`text` split at the separators of `level` and finer, into pieces of at most
    `width` (split anywhere when no separator is left)."""
    if len(text) <= width:
        return [text]
    if level == len(_NAME_BREAKS):
        return [text[k:k + width] for k in range(0, len(text), width)]
    parts = [p for p in _NAME_BREAKS[level].split(text) if p]
    if len(parts) == 1:
        return _pieces(text, width, level + 1)
    return [q for p in parts for q in _pieces(p, width, level + 1)]


def wrap_words(text: str, width: int, indent: str = "") -> list[str]:
    """`text` in lines of at most `width` broken between words (long words split, never
    dropped); continuation lines start with `indent`."""
    return textwrap.wrap(text, width, subsequent_indent=indent, break_long_words=True,
                         break_on_hyphens=False) or [""]


def paragraph(text: str, width: int | None, indent: str = "  ") -> list[str]:
    """A line of free text (a note, a verdict) wrapped to `width`; None: one line."""
    if width is None or len(text) <= width:
        return [text]
    return wrap_words(text, max(width, MIN_FLEX), indent)


def _widths(columns: Sequence[Column], rows: list[list[str]], width: int | None,
            indent: int) -> list[int]:
    natural = [max([len(c.title), *(len(r[k]) for r in rows)]) for k, c in enumerate(columns)]
    if width is None:
        return natural
    flex = [k for k, c in enumerate(columns) if c.flex]
    fixed = sum(natural[k] for k, c in enumerate(columns) if not c.flex)
    free = width - indent - fixed - GAP * (len(columns) - 1)
    out = list(natural)
    # flexible columns: the narrowest needs first, each at least MIN_FLEX
    for n, k in enumerate(sorted(flex, key=lambda k: natural[k])):
        share = max(MIN_FLEX, free // (len(flex) - n))
        out[k] = min(natural[k], share)
        free -= out[k]
    return out


def render(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None,
           indent: int = 0) -> list[str]:
    """The table's lines: a title row, then each row (wrapped cells continue below it)."""
    cells = [[str(x) for x in r] for r in rows]
    below = _below(columns, cells, width, indent)
    side = [c for k, c in enumerate(columns) if k != below]
    side_cells = [[x for k, x in enumerate(r) if k != below] for r in cells]
    widths = _widths(side, side_cells, width, indent)
    pad = " " * indent
    out = _row(side, widths, [c.title for c in side], pad)
    for r, row in zip(cells, side_cells, strict=True):
        out += _row(side, widths, row, pad)
        if below is not None and width is not None and r[below] not in ("", "-"):
            out += [pad + " " * BELOW + x
                    for x in wrap_words(r[below], max(MIN_FLEX, width - indent - BELOW))]
    return out


def _row(columns: Sequence[Column], widths: list[int], cells: list[str], pad: str) -> list[str]:
    wrapped = []
    for c, w, text in zip(columns, widths, cells, strict=True):
        if len(text) <= w:
            wrapped.append([text])
        else:
            wrapped.append(wrap_words(text, w) if c.words else wrap_name(text, w))
    return [(pad + (" " * GAP).join(format(x[i] if i < len(x) else "", f"{c.align}{w}")
                                    for c, w, x in zip(columns, widths, wrapped, strict=True))
             ).rstrip() for i in range(max(len(x) for x in wrapped))]


def _below(columns: Sequence[Column], cells: list[list[str]], width: int | None,
           indent: int) -> int | None:
    """The last text column, when it would get less than MIN_TEXT and needs more."""
    if width is None or len(columns) < 2 or not columns[-1].words:
        return None
    k = len(columns) - 1
    w = _widths(columns, cells, width, indent)[k]
    need = max([len(columns[k].title), *(len(r[k]) for r in cells)])
    return k if w < min(MIN_TEXT, need) else None
