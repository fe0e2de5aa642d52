"""A real text recogniser measured on real rendered text: PP-OCRv4's recogniser, character accuracy.

The model is the one rapidocr_onnxruntime 1.3.24 ships in its wheel
(`ch_PP-OCRv4_rec_infer.onnx`, SVTR-LCNet, paddle2onnx, opset 12; input `x` [batch, 3, 48,
width], output [batch, width/8, 6625] CTC probabilities), fetched as bench_thirdparty.py does
(`pip download --no-deps` into $GRAPHPRUNE_BENCH_CACHE, nothing installed). Its character
dictionary is the model's own metadata (`character`, one character per line), as rapidocr
reads it: index 0 is the CTC blank, the last index the space.

Text lines: the English sentences of `sentences.py`, cut at word boundaries into lines of
`LINE_CHARS` characters at most, rendered black on white with Pillow (`pip install pillow`) in
fonts found on the machine (DejaVu / Liberation TrueType files; no download at run time) at
`FONT_PX` pixels, then prepared as rapidocr prepares them: resized to height 48 keeping the
aspect ratio, scaled to [-1, 1], padded with zeros on the right to `WIDTH`. Line k goes to
**calibration** when k % 4 == 1, to **evaluation** otherwise, so the two never share a line
(`split`). Labels are the rendered strings.

Decoding is CTC greedy decoding (argmax per time step, repeats merged, blanks dropped), as
rapidocr's CTCLabelDecode does. Character accuracy is 1 − Σ edit distance / Σ label length over
the evaluation lines (the usual OCR measure; it can go below 0 when a model emits garbage, and
is clipped at 0); line accuracy is the share of lines read exactly.

    python bench/ocr.py            # the original's accuracy on both splits, and timings

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sentences  # noqa: E402

PACKAGE, VERSION = "rapidocr_onnxruntime", "1.3.24"
MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"
HEIGHT, WIDTH = 48, 320
LINE_CHARS = 18
FONT_PX = 30
FONT_FILES = ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "LiberationSerif-Regular.ttf",
              "DejaVuSerif.ttf")
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts",
             "C:/Windows/Fonts")


def model_path() -> Path:
    """The recogniser's ONNX file (fetched from its wheel once, cached)."""
    import bench_thirdparty
    return bench_thirdparty.extract(PACKAGE, VERSION, MEMBER)


def characters(model: onnx.ModelProto | str | Path) -> list[str]:
    """The CTC alphabet: blank, the model's dictionary (its `character` metadata), space."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if "character" not in meta:
        raise RuntimeError("the recogniser has no 'character' metadata (its dictionary)")
    return ["<blank>", *meta["character"].splitlines(), " "]


# -- text lines ---------------------------------------------------------------------------------
def all_lines(max_chars: int = LINE_CHARS) -> list[str]:
    """Every sentence of sentences.py cut at word boundaries into lines of ≤ max_chars."""
    out = []
    for s in sentences.SENTENCES:
        line = ""
        for word in s.split():
            if len(word) > max_chars:
                continue
            if line and len(line) + 1 + len(word) > max_chars:
                out.append(line)
                line = ""
            line = f"{line} {word}" if line else word
        if line:
            out.append(line)
    return out


def split(lines: list[str], part: str) -> list[str]:
    """`calib` (line k with k % 4 == 1) or `eval` (the others): disjoint by construction."""
    if part not in ("calib", "eval"):
        raise ValueError(part)
    return [x for k, x in enumerate(lines) if (k % 4 == 1) == (part == "calib")]


def fonts() -> list[Path]:
    """TrueType fonts of FONT_FILES found on this machine (at least one, else an error)."""
    found = []
    for name in FONT_FILES:
        for d in FONT_DIRS:
            hits = sorted(Path(d).rglob(name)) if Path(d).is_dir() else []
            if hits:
                found.append(hits[0])
                break
    if not found:
        raise RuntimeError(f"none of the fonts {', '.join(FONT_FILES)} is installed "
                           f"(looked under {', '.join(FONT_DIRS)})")
    return found


def render(text: str, font_file: Path, px: int = FONT_PX) -> np.ndarray:
    """The line as an RGB uint8 image [h, w, 3], black on white, a few pixels of margin."""
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.truetype(str(font_file), px)
    left, top, right, bottom = font.getbbox(text)
    pad = px // 4
    img = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), "white")
    ImageDraw.Draw(img).text((pad - left, pad - top), text, font=font, fill="black")
    return np.asarray(img)


def prepare(img: np.ndarray) -> np.ndarray:
    """rapidocr's preprocessing at a fixed width: [3, HEIGHT, WIDTH] float32 in [-1, 1]."""
    from PIL import Image
    h, w = img.shape[:2]
    rw = min(WIDTH, int(np.ceil(HEIGHT * w / h)))
    small = np.asarray(Image.fromarray(img).resize((rw, HEIGHT), Image.BILINEAR), np.float32)
    out = np.zeros((3, HEIGHT, WIDTH), np.float32)
    out[:, :, :rw] = small.transpose(2, 0, 1) / 255.0 * 2.0 - 1.0
    return out


@dataclass
class TextSet:
    """Prepared images and their labels."""

    x: np.ndarray  # [n, 3, HEIGHT, WIDTH]
    labels: list[str]


def text_set(part: str, limit: int | None = None) -> TextSet:
    """The `part` lines (at most `limit`), line k rendered in font k % len(fonts())."""
    lines = split(all_lines(), part)[:limit]
    faces = fonts()
    x = np.stack([prepare(render(t, faces[k % len(faces)])) for k, t in enumerate(lines)])
    return TextSet(x, lines)


# -- decoding and accuracy ----------------------------------------------------------------------
def decode(probs: np.ndarray, chars: list[str]) -> list[str]:
    """CTC greedy decoding of [batch, time, classes]: argmax, repeats merged, blanks out;
    spaces at the ends dropped (the margin around a line reads as space)."""
    out = []
    for row in probs.argmax(axis=-1):
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        out.append("".join(chars[i] for i in row[keep] if i != 0 and i < len(chars)).strip())
    return out


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_accuracy(preds: list[str], labels: list[str]) -> float:
    edits = sum(edit_distance(p, t) for p, t in zip(preds, labels, strict=True))
    return max(0.0, 1.0 - edits / max(1, sum(len(t) for t in labels)))


def line_accuracy(preds: list[str], labels: list[str]) -> float:
    return float(np.mean([p == t for p, t in zip(preds, labels, strict=True)]))


def session(model: onnx.ModelProto | str | Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def read(model: onnx.ModelProto | str | Path, data: TextSet, chars: list[str],
         batch: int = 32) -> list[str]:
    """The model's reading of every line of `data`."""
    sess = session(model)
    name = sess.get_inputs()[0].name
    out: list[str] = []
    for i in range(0, len(data.x), batch):
        out += decode(sess.run(None, {name: data.x[i:i + batch]})[0], chars)
    return out


def evaluate(model: onnx.ModelProto | str | Path, data: TextSet,
             chars: list[str]) -> dict[str, float]:
    preds = read(model, data, chars)
    return {"char_acc": char_accuracy(preds, data.labels),
            "line_acc": line_accuracy(preds, data.labels)}


def main() -> None:
    path = model_path()
    chars = characters(path)
    print(f"model {path} ({len(chars)} classes); fonts: "
          f"{', '.join(f.name for f in fonts())}")
    for part in ("calib", "eval"):
        t = time.perf_counter()
        data = text_set(part)
        made = time.perf_counter() - t
        t = time.perf_counter()
        preds = read(path, data, chars)
        took = time.perf_counter() - t
        print(f"{part}: {len(data.labels)} lines, {sum(map(len, data.labels))} characters; "
              f"char acc {char_accuracy(preds, data.labels):.4f}, line acc "
              f"{line_accuracy(preds, data.labels):.4f} (render {made:.1f} s, read {took:.1f} s)")
        for p, t in list(zip(preds, data.labels, strict=True))[:4]:
            print(f"   {t!r} -> {p!r}")


if __name__ == "__main__":
    main()
