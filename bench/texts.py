"""Unlabelled text for calibration and distillation, by source, never the evaluation text.

Sources (each module's `check()` asserts it shares no sentence with bench/sentences.py, the
evaluation sentences): `calib` bench/calib_sentences.py (150 everyday sentences), `everyday`
bench/everyday_sentences.py (889), `prose` bench/prose.py (~950 sentences of the Python
documentation, another register: it calibrates MiniLM worse than everyday text).
"""

from __future__ import annotations

SOURCES = ("calib", "everyday", "prose")


def unlabelled(kinds: list[str] | tuple[str, ...]) -> list[str]:
    """The sentences of `kinds`, in that order, each source checked against the evaluation
    set first."""
    import calib_sentences
    import everyday_sentences
    import prose

    sources = {"calib": (calib_sentences.check, lambda: calib_sentences.CALIB_SENTENCES),
               "everyday": (everyday_sentences.check,
                            lambda: everyday_sentences.EVERYDAY_SENTENCES),
               "prose": (prose.check, prose.sentences)}
    texts: list[str] = []
    for kind in kinds:
        check, sentences = sources[kind]
        check()
        texts += sentences()
    return texts
