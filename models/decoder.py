"""A trained byte-level LLaMA decoder, so pruning can be measured in perplexity.

The model is ``models.transformers.llama.Llama`` (RMSNorm, RoPE, SwiGLU, grouped-query
attention, causal mask, untied ``lm_head``) with a 256-byte vocabulary, trained on the
Python standard library's sources (``models.decoder_data``). Training is deterministic from
a seed: a fixed number of AdamW steps with a cosine schedule, batches drawn by a seeded
``torch.Generator``, a fixed torch thread count and deterministic algorithms. The result is
cached outside the repository, in ``$GRAPHPRUNE_CACHE`` (default ``~/.cache/graphprune``)
under ``decoder-<key>/`` (``model.pt`` + ``meta.json``); the key hashes the model and
training settings, the corpus digest (which changes with the Python version), the torch
version and the model sources, so anything that would train a different model trains anew.

Perplexity is per byte, ``exp(mean nll)`` over every target of a fixed list of held-out
windows, computed the same way (float64 log-softmax in numpy) from torch's logits and from
onnxruntime's, so the two differ only by the logits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models import BATCH, SEQUENCE, InputSpec
from models.decoder_data import (
    CONTEXT,
    VOCAB,
    Corpus,
    batches,
    bits,
    eval_windows,
    load_corpus,
    nll_of_logits,
    unigram_nll,
)

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort
    import torch

    from models.transformers.llama import Llama

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "DecoderConfig",
    "Perplexity",
    "TrainConfig",
    "build",
    "cache_dir",
    "cache_key",
    "cache_root",
    "count_params",
    "export",
    "export_default",
    "exported",
    "input_spec",
    "load_or_train",
    "perplexity",
    "perplexity_onnx",
    "perplexity_torch",
    "session",
    "train",
]

INPUT_NAME = "input_ids"
OUTPUT_NAME = "logits"
TRAIN_VERSION = 1
"""Bump when the training procedure changes in a way the settings do not show."""
TRACE_SHAPE = (2, 7)
"""Batch and sequence of the export trace: neither 0/1 (torch.export would specialise them)
nor any other dim of the model (head_dim 32, hidden 256, ...)."""
_SOURCES = ("models/transformers/llama.py", "models/transformers/common.py")
"""The model's code; the training code's changes are tracked by ``TRAIN_VERSION``."""
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class DecoderConfig:
    """Shape of the decoder (vocabulary: bytes)."""

    hidden: int = 256
    layers: int = 4
    heads: int = 8
    kv_heads: int = 2
    head_dim: int = 32
    intermediate: int = 688
    context: int = CONTEXT
    vocab: int = VOCAB


@dataclass(frozen=True)
class TrainConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr``, fixed step count.

    One torch thread by default: the result then does not depend on the machine's core count,
    and on a shared machine the CPU time is not inflated by threads spinning at barriers.
    """

    steps: int = 600
    batch: int = 32
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 30
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 1
    log_every: int = 50


@dataclass
class Perplexity:
    """Mean negative log-likelihood over ``tokens`` predicted bytes, and what follows from it."""

    nll: float
    tokens: int
    ppl: float = field(init=False)
    bits_per_byte: float = field(init=False)

    def __post_init__(self) -> None:
        self.ppl = math.exp(self.nll)
        self.bits_per_byte = bits(self.nll)

    def as_dict(self) -> dict:
        return {"nll": self.nll, "ppl": self.ppl, "bits_per_byte": self.bits_per_byte,
                "tokens": self.tokens}


# -- model ----------------------------------------------------------------------------------------
def build(config: DecoderConfig = DecoderConfig(), seed: int = 0) -> Llama:
    """An untrained decoder of ``config`` with seeded initial weights."""
    import torch

    from models.transformers.llama import Llama

    torch.manual_seed(seed)
    return Llama(vocab=config.vocab, hidden=config.hidden, layers=config.layers,
                 heads=config.heads, kv_heads=config.kv_heads, head_dim=config.head_dim,
                 intermediate=config.intermediate)


def count_params(model: torch.nn.Module) -> int:
    """Parameters of a torch module (the lm_head is untied, so it counts on its own)."""
    return sum(p.numel() for p in model.parameters())


# -- training -------------------------------------------------------------------------------------
@contextlib.contextmanager
def _deterministic(threads: int) -> Iterator[None]:
    """Fixed intra-op thread count and deterministic kernels, restored afterwards."""
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of ``step`` (0-based): linear warm-up, then cosine to ``min_lr_ratio``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _loss(model: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
    import torch

    logits = model(windows[:, :-1])
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             windows[:, 1:].reshape(-1))


def train(config: DecoderConfig, cfg: TrainConfig, stream: np.ndarray,
          progress: Callable[[int, float], None] | None = None) -> tuple[Llama, dict]:
    """Train a fresh decoder on random windows of ``stream`` (uint8 bytes).

    Returns the model (eval mode) and a log: the loss every ``log_every`` steps (mean over
    those steps), the final train loss (mean over the last ``log_every`` steps), wall and
    CPU seconds. ``progress(step, loss)`` is called at each logged step.
    """
    import torch

    with _deterministic(cfg.threads):
        model = build(config, cfg.seed)
        model.train()
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=cfg.betas)
        data = torch.from_numpy(np.ascontiguousarray(stream)).long()
        span = torch.arange(config.context + 1)
        gen = torch.Generator().manual_seed(cfg.seed)
        losses: list[float] = []
        curve: list[tuple[int, float]] = []
        wall, cpu = time.perf_counter(), time.process_time()
        for step in range(cfg.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            starts = torch.randint(0, data.numel() - config.context - 1, (cfg.batch,),
                                   generator=gen)
            loss = _loss(model, data[starts[:, None] + span])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            losses.append(loss.item())
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                recent = float(np.mean(losses[-cfg.log_every:]))
                curve.append((step + 1, recent))
                if progress is not None:
                    progress(step + 1, recent)
        log = {
            "curve": curve,
            "first_loss": losses[0],
            "final_train_loss": float(np.mean(losses[-cfg.log_every:])),
            "wall_s": time.perf_counter() - wall,
            "cpu_s": time.process_time() - cpu,
        }
    return model.eval(), log


# -- perplexity -----------------------------------------------------------------------------------
def perplexity_torch(model: torch.nn.Module, windows: np.ndarray, batch: int = 16) -> Perplexity:
    """Per-byte perplexity of a torch decoder on ``windows`` ([N, S+1] bytes)."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for part in batches(np.asarray(windows, dtype=np.int64), batch):
                logits = model(torch.from_numpy(part[:, :-1])).numpy()
                nll, n = nll_of_logits(logits, part[:, 1:])
                total, count = total + nll, count + n
    finally:
        model.train(was_training)
    return Perplexity(total / count, count)


def perplexity(model: Any, windows: np.ndarray, batch: int = 16) -> Perplexity:
    """Per-byte perplexity of a torch module, or of an ONNX model (path, ModelProto, session)."""
    if hasattr(model, "state_dict"):
        return perplexity_torch(model, windows, batch)
    return perplexity_onnx(model, windows, batch)


def session(model: str | os.PathLike | onnx.ModelProto | bytes,
            threads: int = 2) -> ort.InferenceSession:
    """An onnxruntime CPU session with a fixed thread count (external data is found next to
    a path; a ModelProto must carry its weights)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = os.fspath(model)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def perplexity_onnx(model: Any, windows: np.ndarray, batch: int = 16) -> Perplexity:
    """Per-byte perplexity of an ONNX decoder (path, ModelProto or InferenceSession).

    The graph takes one int64 input of ``[batch, sequence]`` bytes and returns logits
    ``[batch, sequence, 256]`` first. A static batch dim sets the batch size (the window
    count must be a multiple of it); a static sequence dim must equal the windows' inputs.
    """
    sess = model if hasattr(model, "get_inputs") else session(model)
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"expected a decoder with one input, got {[i.name for i in inputs]}")
    name, shape = inputs[0].name, inputs[0].shape
    windows = np.asarray(windows, dtype=np.int64)
    if len(shape) != 2:
        raise ValueError(f"input {name!r} has shape {shape}, expected [batch, sequence]")
    if isinstance(shape[1], int) and shape[1] != windows.shape[1] - 1:
        raise ValueError(f"input {name!r} has static sequence {shape[1]}, windows give "
                         f"{windows.shape[1] - 1}")
    if isinstance(shape[0], int):
        if len(windows) % shape[0]:
            raise ValueError(f"{len(windows)} windows do not fill batches of {shape[0]}")
        batch = shape[0]
    total, count = 0.0, 0
    for part in batches(windows, batch):
        logits = sess.run(None, {name: part[:, :-1]})[0]
        nll, n = nll_of_logits(logits, part[:, 1:])
        total, count = total + nll, count + n
    return Perplexity(total / count, count)


# -- export ---------------------------------------------------------------------------------------
def input_spec() -> InputSpec:
    """The graph input: int64 bytes ``[batch, sequence]``, both dims dynamic."""
    return InputSpec(INPUT_NAME, TRACE_SHAPE, "int64", 0, VOCAB, {0: BATCH, 1: SEQUENCE})


def export(model: torch.nn.Module, path: str | Path, exporter: str) -> Path:
    """Export through ``models.export`` (self-contained file, dims named batch/sequence,
    output ``logits``) with ``exporter`` ``"torchscript"`` or ``"dynamo"``."""
    import torch

    from models.export import export_onnx

    spec = input_spec()
    example = spec.sample(generator=torch.Generator().manual_seed(0))
    return export_onnx(model, (example,), path, exporter=exporter, inputs=[spec],
                       output_names=[OUTPUT_NAME])


def export_default(model: torch.nn.Module, path: str | Path) -> Path:
    """Export as a user would: ``torch.onnx.export(..., dynamo=True)`` with its defaults
    (weights in ``<path>.data`` beside the graph), naming the input and output and marking
    batch and sequence dynamic."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randint(0, VOCAB, TRACE_SHAPE, generator=torch.Generator().manual_seed(0))
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    was_training = model.training
    model.eval()
    try:
        from models.export import _quiet

        with _quiet():
            torch.onnx.export(model, (example,), str(path), dynamo=True,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes=({0: batch, 1: seq},))
    finally:
        model.train(was_training)
    return path


# -- cache ----------------------------------------------------------------------------------------
def cache_root() -> Path:
    """``$GRAPHPRUNE_CACHE`` or ``~/.cache/graphprune``."""
    base = os.environ.get("GRAPHPRUNE_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "graphprune"


def _sources_digest() -> str:
    h = hashlib.sha256()
    for rel in _SOURCES:
        h.update(rel.encode())
        h.update((ROOT / rel).read_bytes())
    return h.hexdigest()[:12]


def cache_key(config: DecoderConfig, cfg: TrainConfig, corpus: Corpus) -> str:
    """Hash of everything that decides the trained weights."""
    import torch

    payload = json.dumps({"config": asdict(config), "train": asdict(cfg),
                          "data": corpus.digest, "torch": torch.__version__,
                          "sources": _sources_digest(), "version": TRAIN_VERSION},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cache_dir(config: DecoderConfig, cfg: TrainConfig, corpus: Corpus) -> Path:
    """Where the decoder of these settings lives (it may not exist yet)."""
    return cache_root() / f"decoder-{cache_key(config, cfg, corpus)}"


def load_or_train(config: DecoderConfig = DecoderConfig(), cfg: TrainConfig = TrainConfig(), *,
                  corpus: Corpus | None = None,
                  progress: Callable[[int, float], None] | None = None,
                  ) -> tuple[Llama, dict, Path]:
    """The trained decoder from the cache, training and caching it first when missing.

    Returns the model (eval mode), its metadata (settings, data, training log, eval
    perplexity against the unigram baseline) and the cache directory. The directory is
    written under a temporary name and renamed, so a crash never leaves half a cache.
    """
    import torch

    corpus = corpus or load_corpus()
    where = cache_dir(config, cfg, corpus)
    meta_path, weights = where / "meta.json", where / "model.pt"
    if meta_path.is_file() and weights.is_file():
        model = build(config, cfg.seed)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return model.eval(), json.loads(meta_path.read_text()), where
    model, log = train(config, cfg, corpus.train, progress)
    windows = eval_windows(corpus, context=config.context)
    ppl = perplexity_torch(model, windows)
    uni = unigram_nll(corpus.train, windows)
    meta = {
        "key": where.name.removeprefix("decoder-"),
        "config": asdict(config),
        "train": asdict(cfg),
        "data": corpus.describe(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "params": count_params(model),
        "steps": cfg.steps,
        "tokens_seen": cfg.steps * cfg.batch * config.context,
        "log": log,
        "eval": {"windows": int(len(windows)), **ppl.as_dict()},
        "unigram": {"nll": uni, "ppl": math.exp(uni), "bits_per_byte": bits(uni)},
    }
    meta = json.loads(json.dumps(meta))  # as it will read back (lists, not tuples)
    tmp = where.with_name(f"{where.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model.state_dict(), tmp / "model.pt")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    if where.exists() and not (meta_path.is_file() and weights.is_file()):
        shutil.rmtree(where)  # an incomplete entry (files deleted by hand): replace it
    try:
        os.replace(tmp, where)
    except OSError:  # another process cached it first: keep theirs (same settings, same key)
        shutil.rmtree(tmp, ignore_errors=True)
    return model, meta, where


def exported(model: torch.nn.Module, where: Path, kind: str) -> Path:
    """The cached export of kind ``torchscript``, ``dynamo`` or ``default`` in ``where``,
    exported first when missing (``default``: ``default/decoder.onnx`` + its ``.data``)."""
    if kind == "default":
        path = where / "default" / "decoder.onnx"
    elif kind in ("torchscript", "dynamo"):
        path = where / f"decoder-{kind}.onnx"
    else:
        raise ValueError(f"export kind must be torchscript, dynamo or default, got {kind!r}")
    if path.is_file():
        return path
    tmp_dir = where / f"tmp{os.getpid()}-{kind}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    out = tmp_dir / path.name
    if kind == "default":
        export_default(model, out)
    else:
        export(model, out, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    for produced in sorted(tmp_dir.iterdir()):
        os.replace(produced, path.parent / produced.name)
    shutil.rmtree(tmp_dir, ignore_errors=True)
    return path
