"""How large is the float noise the exact check allows for, next to correct and wrong rewrites?

    python bench/bench_noise_floor.py [--quick] [--model NAME ...] [--ratios 0.2 0.4]
                                      [--json out.json]

(NAME: a zoo model, resnet50, text_detector, text_recognizer or text_recognizer@WIDTH.)

For each model and ratio: compress (criterion l1), and on the exact check's own inputs
compare the pruned model (the candidate) with the masked original (the reference), and
evaluate both noise sources of passes/noise.py whether the check needed them or not. Per
output and run it prints the candidate's error, whether the static tolerance alone passes, the
noise floor each source measures, and err / floor (K, the noise multiple, must stay above
this on correct rewrites). Then a wrong rewrite of the same model: one column of a pruned
sink weight taken from its removed neighbour (an off-by-one in the kept indices), judged with
the same floors: its error over the scale and over the allowance (must stay above 1).
Also the seconds the two noise sources cost (the check's extra time when the fallback
triggers). Models: the two float-noise regression models (models/cnn/float_noise.py, torch's
dynamo export) and the zoo (TorchScript export, dynamic batch: two runs). Prints numbers;
asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

QUICK = ["text_detector", "text_recognizer", "resnet_basic", "mobilenet_v2", "bert"]
ZOO_CNN = ["resnet_basic", "mobilenet_v2", "vgg", "unet", "yolo_csp", "convnext",
           "efficientnet", "densenet"]
ZOO_TRANSFORMERS = ["bert", "gpt2", "vit", "llama"]


def export(name: str, folder: Path) -> Path:
    """The model's ONNX file: the float-noise models through torch's default (dynamo) export,
    with its external data; the zoo's through models.export (cached)."""
    if name.startswith("text_"):
        import functools

        import torch

        from models.cnn import float_noise as fn
        base, _, width = name.partition("@")  # text_recognizer@96: 96 channels wide
        build, shape = ((fn.text_detector, fn.DETECTOR_INPUT) if base == "text_detector"
                        else (fn.text_recognizer, fn.RECOGNIZER_INPUT))
        if width:
            build = functools.partial(build, width=int(width))
        path = folder / f"{name}.onnx"
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(build(), (torch.randn(*shape),), str(path), dynamo=True)
        return path
    return common.export_cached(name, "torchscript")


def capture():
    """Spy on validation.outcome: the check's outputs, inputs and noise sources."""
    from graphprune.passes import validation
    seen: dict = {}
    real = validation.outcome

    def spy(batches, names, ref_outs, cand_outs, io_, feeds=None, noise=()):
        seen.update(batches=batches, names=names, ref=ref_outs, cand=cand_outs, io=io_,
                    feeds=feeds, noise=list(noise))
        return real(batches, names, ref_outs, cand_outs, io_, feeds, noise)

    validation.outcome = spy
    return seen


def off_by_one(original, pruned) -> dict[str, tuple]:
    """Wrong rewrites of `pruned`, made on the first weight sliced on exactly one axis whose
    kept slices all match the original's: "shift" takes every kept slice from the original's
    next index (kept indices off by one, as a wrong slice bound gives); "one" does that for
    the one slice where it changes the weight most (a single column off). {kind: (model,
    what)}; empty when no weight fits."""
    import onnx
    from onnx import numpy_helper
    orig = {t.name: t for t in original.graph.initializer}
    for t in pruned.graph.initializer:
        o = orig.get(t.name)
        if o is None or t.data_type != onnx.TensorProto.FLOAT or len(t.dims) < 2:
            continue
        diff = [a for a, (x, y) in enumerate(zip(o.dims, t.dims, strict=True)) if x != y]
        if len(diff) != 1:
            continue
        axis = diff[0]
        w, p = numpy_helper.to_array(o), numpy_helper.to_array(t)
        kept = []
        for j in range(p.shape[axis]):
            col = np.take(p, j, axis)
            kept.append(next((i for i in range(w.shape[axis])
                              if np.array_equal(np.take(w, i, axis), col)), None))
        if None in kept or kept[-1] + 1 >= w.shape[axis]:
            continue
        shifted = np.take(w, [i + 1 for i in kept], axis)
        change = np.abs(shifted - p).sum(axis=tuple(a for a in range(p.ndim) if a != axis))
        j = int(np.argmax(change))
        one = p.copy()
        index = [slice(None)] * p.ndim
        index[axis] = j
        one[tuple(index)] = np.take(shifted, j, axis)
        out = {}
        for kind, value, what in (("shift", shifted, f"{t.name}: axis {axis} kept+1"),
                                  ("one", one, f"{t.name}: axis {axis} slice {j} <- "
                                               f"{kept[j] + 1}")):
            bad = onnx.ModelProto()
            bad.CopyFrom(pruned)
            for u in bad.graph.initializer:
                if u.name == t.name:
                    u.CopyFrom(numpy_helper.from_array(value.astype(p.dtype), t.name))
            out[kind] = (bad, what)
        return out
    return {}


def measure(name: str, path: Path, ratio: float, seen: dict) -> list[dict]:
    import onnx
    from graphprune.passes import validation

    import graphprune
    model = onnx.load(str(path))
    pruned, _ = graphprune.compress(model, ratio, criterion="l1")
    floors, seconds = {}, {}
    for source in seen["noise"]:
        t0 = time.perf_counter()
        floors[source.label] = source.evaluate(seen["feeds"])
        seconds[source.label] = time.perf_counter() - t0
    wrong = {}
    for kind, (bad, what) in off_by_one(model, pruned).items():
        sess = validation.session(bad, data=bad.SerializeToString())
        wrong[kind] = (what, [sess.run(None, validation.shrink_feeds(f, seen["io"]))
                              for f in seen["feeds"]])
    rows = []
    io_ = seen["io"] or {}
    for r, batch in enumerate(seen["batches"]):
        for k, out in enumerate(seen["names"]):
            ref = validation.kept(seen["ref"][r][k], io_.get(out))
            cand = seen["cand"][r][k]
            by = {label: validation.noise_floor(ref, validation.kept(alt[r][k], io_.get(out)))
                  for label, alt in floors.items()}
            floor = max(by.values())
            static = validation.compare([ref], [cand], [out])[0]
            judged = validation.compare([ref], [cand], [out], [floor])[0]
            row = {"model": name, "ratio": ratio, "batch": batch, "output": out,
                   "scale": static.scale, "err": static.max_abs_err, "static": static.passed,
                   "passed": judged.passed, **{f"floor {k}": v for k, v in by.items()},
                   "err/floor": static.max_abs_err / floor if floor else None,
                   "allowed": judged.allowed, "seconds": seconds,
                   "bytes": path.stat().st_size + sum(p.stat().st_size for p in
                                                      path.parent.glob(path.name + ".data"))}
            for kind, (what, outs) in wrong.items():
                bad = validation.compare([ref], [outs[r][k]], [out], [floor])[0]
                row[f"wrong {kind}"] = {"what": what, "err": bad.max_abs_err,
                                        "static": bad.static, "passed": bad.passed,
                                        "over_allowed": bad.max_abs_err
                                        / max(judged.allowed, 1e-30)}
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"models {', '.join(QUICK)}")
    ap.add_argument("--model", action="append", help="a model (repeatable); default: all")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.4])
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    names = args.model or (QUICK if args.quick else
                           ["text_detector", "text_recognizer", *ZOO_CNN, *ZOO_TRANSFORMERS])
    seen = capture()
    rows = []
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = export(name, Path(tmp))
            for ratio in args.ratios:
                rows.extend(measure(name, path, ratio, seen))
    def wrong(r: dict, kind: str, what: str) -> str:
        w = r.get(f"wrong {kind}")
        if w is None:
            return "-"
        if what == "err":
            return f"{w['err'] / max(r['scale'], 1e-30):.1e}"
        return ("PASS" if w["passed"] else "fail") + ("" if w["static"] else "*")

    print(common.table(
        ["model", "ratio", "batch", "output", "scale", "err", "static", "floor opt",
         "floor split", "err/floor", "passed", "shift err/scale", "shift", "one err/scale",
         "one"],
        [[r["model"], r["ratio"], r["batch"], r["output"][:16], f"{r['scale']:.2e}",
          f"{r['err']:.2e}", "pass" if r["static"] else "FAIL",
          f"{r['floor onnxruntime optimised']:.2e}", f"{r['floor split sums']:.2e}",
          "-" if r["err/floor"] is None else f"{r['err/floor']:.2f}",
          "pass" if r["passed"] else "FAIL", wrong(r, "shift", "err"),
          wrong(r, "shift", "verdict"), wrong(r, "one", "err"), wrong(r, "one", "verdict")]
         for r in rows]))
    print("(wrong rewrites: fail = caught; * = the static tolerance alone catches it too)")
    ratios = [r["err/floor"] for r in rows if r["err/floor"] is not None]
    static_fails = [r for r in rows if not r["static"]]
    print(f"\n{len(rows)} outputs×runs; static tolerance failed on {len(static_fails)} "
          f"(all correct rewrites), of which the noise floor passed "
          f"{sum(r['passed'] for r in static_fails)}")
    if ratios:
        print(f"err/floor over outputs with a non-zero floor: max {max(ratios):.2f}, "
              f"median {float(np.median(ratios)):.2f} (n={len(ratios)})")
    fails = [r["err/floor"] for r in static_fails if r["err/floor"] is not None]
    if fails:
        print(f"err/floor where the static tolerance failed: max {max(fails):.2f}, "
              f"median {float(np.median(fails)):.2f} (n={len(fails)})")
    for kind in ("shift", "one"):
        ws = [(r, r[f"wrong {kind}"]) for r in rows if f"wrong {kind}" in r]
        static_caught = [(r, w) for r, w in ws if not w["static"]]
        if ws:
            print(f"wrong rewrites ({kind}): {len(ws)} outputs×runs; the static tolerance "
                  f"catches {len(static_caught)}, the check with the noise floor "
                  f"{sum(not w['passed'] for _, w in ws)}; of those the static tolerance "
                  f"catches, the noise floor passes {sum(w['passed'] for _, w in static_caught)}"
                  + (f"; min err/allowed among them "
                     f"{min(w['over_allowed'] for _, w in static_caught):.1f}"
                     if static_caught else ""))
    for name in names:
        secs = [r["seconds"] for r in rows if r["model"] == name]
        if secs:
            b = next(r["bytes"] for r in rows if r["model"] == name)
            print(f"noise sources on {name} ({b / 1e6:.1f} MB): " + ", ".join(
                f"{k} {max(s[k] for s in secs):.2f} s" for k in secs[0]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
