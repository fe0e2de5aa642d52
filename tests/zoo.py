"""Exported reference models, each exported once per test session.

`exported(name, exporter, opset)` builds `models.CNN_MODELS[name]` (or a transformer of
`models.TRANSFORMER_MODELS`, with its own dynamic axes), exports it with the torch exporter
asked for (dynamic batch axis named ``batch``) and returns the path of the ``.onnx`` file.
Exports are cached on disk in a temporary directory for the life of the process: a
dynamo export costs seconds, and several test files ask for the same models. The files are
shared, so tests must copy a file before handing it to anything that might write beside it.

Also here: small helpers the end-to-end, API and CLI tests share (running a model in
onnxruntime, hashing a file, the bundled example model).
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `models/` is a top-level package of the repository
    sys.path.insert(0, str(ROOT))

import models  # noqa: E402
from models.export import EXPORTERS, export_spec  # noqa: E402

EXAMPLE = ROOT / "models" / "examples" / "resnet_small.onnx"
"""The bundled example model (resnet_basic, TorchScript, dynamic batch)."""

MODEL_NAMES: list[str] = list(models.CNN_MODELS)
FEED_SEED = 4321
"""Not the tool's validation seed (0): independent checks use other inputs."""

_cache: dict[tuple[str, str, int | None], Path] = {}
_dir: Path | None = None


def _cache_dir() -> Path:
    global _dir
    if _dir is None:
        _dir = Path(tempfile.mkdtemp(prefix="graphprune-zoo-"))
        atexit.register(shutil.rmtree, _dir, ignore_errors=True)
    return _dir


def exported(name: str, exporter: str, opset: int | None = None) -> Path:
    """Path of `name` exported with `exporter` at `opset` (the exporter's default if None).

    Exported on first request, then served from the session's cache. The file is shared:
    read it, or copy it before writing anything beside it.
    """
    if name not in models.CNN_MODELS and name not in models.TRANSFORMER_MODELS:
        raise KeyError(f"unknown model {name!r}; known: "
                       f"{', '.join([*MODEL_NAMES, *models.TRANSFORMER_MODELS])}")
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; known: {', '.join(EXPORTERS)}")
    key = (name, exporter, opset)
    if key not in _cache:
        path = _cache_dir() / f"{name}-{exporter}-{opset or 'default'}.onnx"
        export_spec(name, path, exporter, opset=opset, dynamic_batch=True)
        _cache[key] = path
    return _cache[key]


def input_shape(name: str, batch: int = 1) -> tuple[int, ...]:
    """The registered input shape of model `name` with its batch axis set to `batch`."""
    return (batch, *models.CNN_MODELS[name].input_shape[1:])


# -- running models ----------------------------------------------------------------------------
def session(model: onnx.ModelProto | str | Path, optimize: bool = True) -> ort.InferenceSession:
    """A CPU session. `optimize=True` keeps onnxruntime's default graph optimisations, which
    the tool itself never uses, so a run here is independent of its own validation."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def random_input(shape: tuple[int, ...], seed: int = FEED_SEED) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def run(model: onnx.ModelProto | str | Path, x: np.ndarray,
        optimize: bool = True) -> list[np.ndarray]:
    """Outputs of a single-input model on `x`."""
    sess = session(model, optimize)
    (inp,) = sess.get_inputs()
    return sess.run(None, {inp.name: x})


def new_nodes(original: onnx.ModelProto, pruned: onnx.ModelProto) -> dict[str, int]:
    """Nodes of `pruned` the original lacks, by op type (a rewrite may remove nodes that went
    dead, e.g. a shape computation replaced by a constant, but should add only what changes
    a value)."""
    old = {(n.name, n.op_type) for n in original.graph.node}
    added: dict[str, int] = {}
    for n in pruned.graph.node:
        if (n.name, n.op_type) not in old:
            added[n.op_type] = added.get(n.op_type, 0) + 1
    return added


# -- files -------------------------------------------------------------------------------------
def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def copy_example(dest_dir: Path, name: str = "model.onnx") -> Path:
    """A private copy of the bundled example (tests never touch the committed file)."""
    dest = dest_dir / name
    shutil.copyfile(EXAMPLE, dest)
    return dest
