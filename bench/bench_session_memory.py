"""Memory of the onnxruntime sessions graphprune builds for a model with external data.

    python bench/bench_session_memory.py [--mb 100] [--dir /tmp]

Writes a ~`--mb` MB float32 model (three 3x3 convolutions, then a chain of MatMul+Add+Relu
layers) with external data (`net.onnx` + `net.onnx.data`, as torch's default exporter
writes it), then, each in a fresh process, builds one kind of session on it and runs it once:

- `ort-file`:   onnxruntime loading the file itself (optimisations on): the baseline;
- `optimised`:  `validation.session(model, optimize=True)` on the memory-mapped model (what
                calibration statistics, Taylor probes, the sensitivity scan and latency use);
- `diagnosis`:  `validation.session(model, read_files=True)` (the input diagnosis);
- `proof`:      `validation.session(model)` (the exact check's: arrays shared, no copy);
- `inline`:     an optimised session from the bytes of an inlined copy (`external.inline`),
                the cost of serialising the weights instead;
- `ext-init`:   every weight handed over with add_external_initializers (the alternative to
                letting onnxruntime read the mapped tensors from their file).

Each child prints its peak RSS (VmHWM), anonymous RSS (RssAnon: memory it owns, not the
page cache of the mapped file) after the run, and the seconds to build the session. The
model's own weights are the `--mb` column's worth; anything above one copy is a copy too
many. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

MODES = ("ort-file", "optimised", "diagnosis", "proof", "inline", "ext-init")


def write_model(path: Path, mb: int) -> None:
    """Convolutions then MatMul layers, about `mb` MB of float32 weights, external data."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from graphprune.io import save_atomic

    rng = np.random.default_rng(0)
    inits, nodes = [], []
    x = "x"
    for k, (cin, cout) in enumerate([(3, 256), (256, 256), (256, 256)]):
        w = (rng.standard_normal((cout, cin, 3, 3)) * 0.05).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"conv{k}.weight"))
        nodes.append(helper.make_node("Conv", [x, f"conv{k}.weight"], [f"c{k}"], pads=[1] * 4))
        nodes.append(helper.make_node("Relu", [f"c{k}"], [f"r{k}"]))
        x = f"r{k}"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    x, width = "flat", 256
    hidden = 2048
    left = mb * 1_000_000 - sum(t.ByteSize() for t in inits)
    layers = max(1, round(left / (hidden * hidden * 4)) + 1)  # the first is 256 wide
    for k in range(layers):
        w = (rng.standard_normal((width, hidden)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"fc{k}.weight"))
        inits.append(numpy_helper.from_array(np.zeros(hidden, np.float32), f"fc{k}.bias"))
        nodes += [helper.make_node("MatMul", [x, f"fc{k}.weight"], [f"m{k}"]),
                  helper.make_node("Add", [f"m{k}", f"fc{k}.bias"], [f"a{k}"]),
                  helper.make_node("Relu", [f"a{k}"], [f"h{k}"])]
        x, width = f"h{k}", hidden
    graph = helper.make_graph(
        nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    save_atomic(model, path, external=True)
    onnx.checker.check_model(str(path))


def child(mode: str, path: str) -> None:
    """Build one session on `path` (in this fresh process), run it once, print numbers."""
    import onnxruntime as ort
    from graphprune.passes import validation

    from graphprune.external import inline, split
    from graphprune.io import load

    model = None if mode == "ort-file" else load(path, external_data="map")
    t = time.perf_counter()
    if mode == "ort-file":
        sess = common.ort_session(Path(path), threads=0)
    elif mode == "optimised":
        sess = validation.session(model, optimize=True)
    elif mode == "diagnosis":
        sess = validation.session(model, read_files=True)
    elif mode == "proof":
        sess = validation.session(model)
    elif mode == "inline":
        sess = common.ort_session(inline(model).SerializeToString(), threads=0)
    else:  # ext-init
        parts = split(model)
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.add_external_initializers(
            list(parts.weights),
            [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v))
             for v in parts.weights.values()])
        sess = ort.InferenceSession(parts.graph.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
    built = time.perf_counter() - t
    sess.run(None, {"x": np.ones((1, 3, 8, 8), np.float32)})
    anon = (common.status_kib("RssAnon") or 0) / 1024
    print(f"{(common.status_kib('VmHWM') or 0) / 1024:.0f} {anon:.0f} {built:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100, help="weights of the model, in MB")
    ap.add_argument("--dir", default=None, help="where to write the model (a temp folder)")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "net.onnx"
        write_model(path, args.mb)
        data = path.with_name("net.onnx.data").stat().st_size / 2**20
        base = subprocess.run([sys.executable, "-c", "import numpy, onnx, onnxruntime; "
                               "import graphprune.passes.validation; print(open("
                               "'/proc/self/status').read().split('VmHWM:')[1].split()[0])"],
                              capture_output=True, text=True, check=True)
        print(f"model: {data:.0f} MiB of external data; a process with the imports alone "
              f"peaks at {int(base.stdout) / 1024:.0f} MiB")
        rows = []
        for mode in MODES:
            r = subprocess.run([sys.executable, __file__, "--child", mode, str(path)],
                               capture_output=True, text=True, check=True)
            peak, anon, built = r.stdout.split()
            rows.append([mode, peak, anon, built])
        print(common.table(["session", "peak RSS MiB", "anon RSS MiB", "build s"], rows))


if __name__ == "__main__":
    main()
