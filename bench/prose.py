"""Unlabelled English prose that every machine has offline: the Python documentation.

Distillation and calibration want many real sentences, and the hand-written sets
(bench/sentences.py for evaluation, bench/calib_sentences.py for calibration) hold a few
hundred. CPython ships its own documentation as text: `pydoc_data.topics` (the language
reference behind `help()`) and IDLE's help page. `sentences()` splits them into sentences,
keeps those that read as prose (6-40 words, capitalised, ending in punctuation, no code or
markup characters) and returns them in a fixed order, de-duplicated, so every process sees
the same list. The sentences are technical; `check()` asserts they share none with the
evaluation sentences.
"""

from __future__ import annotations

import functools
import html
import re
from pathlib import Path

_CODE = re.compile(r"[{}\[\]<>=*_\\|`#@$]|\.\.\.|::|\(\)")
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _pydoc_topics() -> list[str]:
    import pydoc_data.topics as topics

    return [topics.topics[k] for k in sorted(topics.topics)]


def _idle_help() -> list[str]:
    """IDLE's help page as paragraphs of text (absent from some stripped installs)."""
    try:
        import idlelib
    except ImportError:
        return []
    page = Path(idlelib.__file__).parent / "help.html"
    if not page.is_file():
        return []
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", page.read_text(encoding="utf-8"),
                  flags=re.S)
    text = re.sub(r"</(p|li|dd|dt|h\d|div|pre)>", "\n\n", text)
    return [html.unescape(re.sub(r"<[^>]+>", "", text))]


def _prose(text: str) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = para.split("\n")
        if any(line.startswith("   ") for line in lines):  # code blocks, grammar rules
            continue
        for s in _SPLIT.split(" ".join(line.strip() for line in lines)):
            s = s.strip()
            if not 6 <= len(s.split()) <= 40 or not s[0].isupper() or s[-1] not in ".!?":
                continue
            if _CODE.search(s) or sum(c.isalpha() or c == " " for c in s) < 0.93 * len(s):
                continue
            out.append(s)
    return out


@functools.cache
def sentences() -> tuple[str, ...]:
    """Prose sentences from the Python documentation, de-duplicated, in a fixed order."""
    found: dict[str, None] = {}
    for text in _pydoc_topics() + _idle_help():
        for s in _prose(text):
            found.setdefault(s, None)
    return tuple(found)


def check() -> None:
    from sentences import SENTENCES

    shared = set(sentences()) & set(SENTENCES)
    assert not shared, f"prose shares {len(shared)} sentences with the evaluation set"


if __name__ == "__main__":
    check()
    print(f"{len(sentences())} sentences, e.g. {sentences()[0]!r}")
