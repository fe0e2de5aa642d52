"""Byte-level text for the trained decoder: the Python standard library's own sources.

Every machine that runs Python has these files, so the corpus needs no download and no
tokenizer (a token is a byte: vocabulary 256). The split is fixed by file, not by position,
so no evaluation text is ever seen in training:

- files are the stdlib's ``*.py`` under ``sysconfig.get_paths()["stdlib"]``, minus
  third-party code (``site-packages``, ``dist-packages``) and test suites (any directory
  named ``test``, ``tests`` or ``idle_test``: large, partly deliberately malformed, and
  missing from stripped distributions), sorted by their relative POSIX path;
- the file at sorted index ``i`` is EVAL when ``i % 10 == 0``, else TRAIN;
- the CALIBRATION slice is the train files with ``i % 10 == 5``: the benchmarks calibrate
  on it (data the model was trained on, as the field calibrates on its training corpus),
  never on evaluation text.

Each slice is its files' bytes concatenated in sorted order. Windows are ``context + 1``
bytes (inputs ``w[:-1]``, targets ``w[1:]``), taken at evenly spaced offsets, so the same
corpus and count always give the same windows, without a random generator.

The stdlib differs between Python versions and distributions; ``Corpus.digest`` hashes every
file's path and bytes with its slice, and the trained decoder's cache key holds it.
"""

from __future__ import annotations

import hashlib
import math
import platform
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CONTEXT",
    "EVAL_WINDOWS",
    "SKIP_DIRS",
    "VOCAB",
    "Corpus",
    "batches",
    "bits",
    "calibration_npz",
    "calibration_windows",
    "corpus_files",
    "eval_windows",
    "load_corpus",
    "nll_of_logits",
    "slice_of",
    "spaced_windows",
    "unigram_nll",
]

VOCAB = 256
CONTEXT = 128
EVAL_WINDOWS = 64
SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test"})
"""Directories whose files are not part of the corpus (third-party code, test suites)."""


def stdlib_root() -> Path:
    """The directory of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_files(root: str | Path | None = None) -> list[str]:
    """Relative POSIX paths of the corpus files under ``root`` (default: the stdlib), sorted."""
    base = Path(root) if root is not None else stdlib_root()
    found = []
    for path in base.rglob("*.py"):
        rel = path.relative_to(base)
        if SKIP_DIRS.isdisjoint(rel.parts[:-1]) and path.is_file():
            found.append(rel.as_posix())
    return sorted(found)


def slice_of(index: int) -> str:
    """``"eval"``, ``"calib"`` (a part of train) or ``"train"`` for the file at sorted ``index``."""
    if index % 10 == 0:
        return "eval"
    return "calib" if index % 10 == 5 else "train"


@dataclass(frozen=True)
class Corpus:
    """The three byte streams, which files make them, and a digest of it all."""

    root: str
    train_files: tuple[str, ...]
    eval_files: tuple[str, ...]
    calib_files: tuple[str, ...]
    train: np.ndarray
    """uint8, every train file (the calibration files included)."""
    eval: np.ndarray
    calib: np.ndarray
    digest: str
    python: str

    def describe(self) -> dict:
        """Sizes and provenance, for metadata and reports."""
        return {
            "root": self.root,
            "python": self.python,
            "digest": self.digest,
            "files": {"train": len(self.train_files), "eval": len(self.eval_files),
                      "calib": len(self.calib_files)},
            "bytes": {"train": int(self.train.size), "eval": int(self.eval.size),
                      "calib": int(self.calib.size)},
        }


def load_corpus(root: str | Path | None = None) -> Corpus:
    """Read and split the corpus under ``root`` (default: this interpreter's stdlib).

    Raises ``ValueError`` when there are too few files to make all three slices.
    """
    base = Path(root) if root is not None else stdlib_root()
    files = corpus_files(base)
    if len(files) < 10:
        raise ValueError(f"{base}: {len(files)} .py files, need at least 10 for the split")
    digest = hashlib.sha256()
    parts: dict[str, list[bytes]] = {"train": [], "eval": [], "calib": []}
    names: dict[str, list[str]] = {"train": [], "eval": [], "calib": []}
    for i, rel in enumerate(files):
        data = (base / rel).read_bytes()
        kind = slice_of(i)
        digest.update(f"{kind}\0{rel}\0{len(data)}\0".encode())
        digest.update(data)
        names[kind].append(rel)
        parts[kind].append(data)
        if kind == "calib":  # calibration files are train files too
            names["train"].append(rel)
            parts["train"].append(data)

    def stream(kind: str) -> np.ndarray:
        return np.frombuffer(b"".join(parts[kind]), dtype=np.uint8).copy()

    return Corpus(
        root=str(base),
        train_files=tuple(names["train"]),
        eval_files=tuple(names["eval"]),
        calib_files=tuple(names["calib"]),
        train=stream("train"),
        eval=stream("eval"),
        calib=stream("calib"),
        digest=digest.hexdigest()[:16],
        python=platform.python_version(),
    )


def spaced_windows(stream: np.ndarray, count: int, length: int) -> np.ndarray:
    """``count`` windows of ``length`` bytes at evenly spaced offsets, as int64 ``[count, length]``.

    Offsets run from the start to the last full window, so the windows cover the whole stream
    and do not overlap while ``count * length`` fits in it.
    """
    if count < 1 or length < 2:
        raise ValueError(f"need count >= 1 and length >= 2, got {count} and {length}")
    if stream.size < length:
        raise ValueError(f"stream of {stream.size} bytes is shorter than one window ({length})")
    last = stream.size - length
    offsets = [0] if count == 1 else [round(k * last / (count - 1)) for k in range(count)]
    return np.stack([stream[o:o + length] for o in offsets]).astype(np.int64)


def eval_windows(corpus: Corpus, count: int = EVAL_WINDOWS, context: int = CONTEXT) -> np.ndarray:
    """The held-out evaluation windows: ``[count, context + 1]`` bytes of the eval files."""
    return spaced_windows(corpus.eval, count, context + 1)


def calibration_windows(corpus: Corpus, count: int, context: int = CONTEXT) -> np.ndarray:
    """Model inputs for calibration: ``[count, context]`` bytes of the calibration files."""
    return spaced_windows(corpus.calib, count, context)


def unigram_nll(train: np.ndarray, windows: np.ndarray) -> float:
    """Mean negative log-likelihood (nats per byte) of the windows' targets under byte frequencies.

    Frequencies come from ``train`` with add-one smoothing (no byte gets probability 0); the
    targets are ``windows[:, 1:]``, the positions a decoder predicts.
    """
    counts = np.bincount(train, minlength=VOCAB).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[np.asarray(windows)[:, 1:]].mean())


def bits(nll: float) -> float:
    """Nats per byte as bits per byte."""
    return nll / math.log(2)


def nll_of_logits(logits: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
    """Sum of ``-log softmax(logits)[target]`` in float64, and the number of positions."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    logz = np.log(np.exp(x).sum(axis=-1))
    picked = np.take_along_axis(x, np.asarray(targets)[..., None], axis=-1)[..., 0]
    return float((logz - picked).sum()), int(picked.size)


def batches(windows: np.ndarray, size: int) -> Sequence[np.ndarray]:
    """``windows`` cut into consecutive batches of at most ``size`` rows."""
    return [windows[i:i + size] for i in range(0, len(windows), size)]


def calibration_npz(path: str | Path, samples: int, corpus: Corpus | None = None, *,
                    context: int = CONTEXT, input_name: str = "input_ids") -> Path:
    """Write ``samples`` calibration inputs (``[samples, context]`` int64 bytes of the
    calibration files, never evaluation text) to ``path`` as ``{input_name: array}``, the
    ``--calib`` format of graphprune (one array per graph input, samples on axis 0)."""
    corpus = corpus or load_corpus()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez(fh, **{input_name: calibration_windows(corpus, samples, context)})
    return path
