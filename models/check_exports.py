"""Export every registered model with both exporters and check ONNX Runtime parity.

Run as ``python -m models.check_exports [NAME ...] [--family cnn|transformer]``.
For each model x exporter it exports to a temp dir, checks the file is
self-contained with the agreed input/output names and symbolic ``batch``
(and ``sequence``) axes, then runs (batch, sequence) = (1, 7) and (3, 11)
through onnxruntime (models without a sequence axis vary only the batch)
and compares against eager torch. Sizes other than the traced ones are the
point: they catch shapes the exporter baked in. Exit code is non-zero if
anything fails, so the script doubles as a smoke test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models import ModelSpec

__all__ = ["RUN_SIZES", "CheckResult", "check_model", "main"]

RUN_SIZES: tuple[dict[str, int], ...] = (
    {"batch": 1, "sequence": 7, "past": 3},
    {"batch": 3, "sequence": 11, "past": 9},
)
"""Dynamic-dim sizes each export is run at (names a model lacks are ignored)."""


@dataclass
class CheckResult:
    """Outcome of exporting one model with one exporter."""

    name: str
    exporter: str
    params: int
    export_s: float
    max_abs_diff: float
    ok: bool
    error: str = ""


def _check_interface(path: Path, spec: ModelSpec, exporter: str) -> str:
    """Return a problem description, or '' if names/dynamic axes/file layout are as agreed."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    if len(list(path.parent.iterdir())) != 1:
        return f"side files next to model: {sorted(p.name for p in path.parent.iterdir())}"
    inputs = [
        i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}
    ]
    if [i.name for i in inputs] != spec.input_names:
        return f"inputs are {[i.name for i in inputs]}, expected {spec.input_names}"
    outs = [o.name for o in proto.graph.output]
    if spec.outputs and outs != list(spec.outputs):
        return f"outputs are {outs}, expected {list(spec.outputs)}"
    if not spec.outputs and outs != ["output"] and outs != [f"output{i}" for i in range(len(outs))]:
        return f"outputs are {outs}"
    for vi, inp in zip(inputs, spec.inputs_for(exporter), strict=True):
        dims = vi.type.tensor_type.shape.dim
        for axis, dim_name in inp.dynamic_axes.items():
            if dims[axis].dim_param != dim_name:
                return f"{vi.name} axis {axis} is {dims[axis]!s:.40} not symbolic {dim_name!r}"
    known = set(spec.dynamic_dims(exporter))
    for vi in proto.graph.output:
        dims = list(vi.type.tensor_type.shape.dim)
        if "batch" in known and not dims[0].dim_param:
            return f"{vi.name} has static batch"
        for axis, dim in enumerate(dims):
            derived = dim.dim_param == f"{vi.name}_dim{axis}"  # e.g. past + sequence
            if not dim.HasField("dim_value") and dim.dim_param not in known and not derived:
                return f"{vi.name} axis {axis} has unexpected symbolic dim {dim.dim_param!r}"
    return ""


def check_model(
    name: str,
    exporter: str,
    workdir: Path,
    *,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    opset: int | None = None,
) -> CheckResult:
    """Export ``name`` with ``exporter`` into ``workdir`` and compare ORT to torch."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from models import get
    from models.cnn.common import count_params
    from models.export import export_onnx

    spec = get(name)
    model = spec.build()
    params = count_params(model)
    path = workdir / f"{name}.{exporter}" / f"{name}.onnx"
    result = CheckResult(name, exporter, params, float("nan"), float("nan"), False)
    try:
        start = time.perf_counter()
        export_onnx(
            model,
            spec.example_inputs(seed=0),
            path,
            exporter=exporter,
            opset=opset,
            inputs=spec.inputs_for(exporter),
            output_names=spec.outputs or None,
        )
        result.export_s = time.perf_counter() - start
        problem = _check_interface(path, spec, exporter)
        if problem:
            result.error = problem
            return result

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        worst, ok = 0.0, True
        dims = spec.dynamic_dims(exporter)
        for seed, all_sizes in enumerate(RUN_SIZES, start=1):
            sizes = {k: v for k, v in all_sizes.items() if k in dims}
            xs = spec.example_inputs(sizes, seed=seed)
            with torch.no_grad():
                ref = model(*xs)
            refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
            feed = {n: x.numpy() for n, x in zip(spec.input_names, xs, strict=True)}
            got = sess.run(None, feed)
            at = ", ".join(f"{k}={v}" for k, v in sizes.items())
            for r, g in zip(refs, got, strict=True):
                r_np = r.numpy()
                if r_np.shape != g.shape:
                    result.error = f"{at}: shape {g.shape} != torch {r_np.shape}"
                    return result
                diff = float(np.max(np.abs(r_np - g)))
                worst = max(worst, diff)
                ok &= bool(np.allclose(g, r_np, atol=atol, rtol=rtol))
        result.max_abs_diff, result.ok = worst, ok
        if not ok:
            result.error = f"mismatch beyond atol={atol} rtol={rtol}"
    except Exception as exc:  # noqa: BLE001 - report and carry on with other models
        result.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        traceback.print_exc()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check matrix and print a table; exit 1 if any case fails."""
    from models import names as model_names
    from models.export import EXPORTERS

    parser = argparse.ArgumentParser(
        prog="python -m models.check_exports", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("models", nargs="*", help="subset of model names (default: all)")
    parser.add_argument(
        "--family", choices=("cnn", "transformer"), help="only models of this family"
    )
    parser.add_argument(
        "--exporter", choices=EXPORTERS, action="append", help="repeatable; default: both"
    )
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--opset", type=int, default=None)
    parser.add_argument(
        "--keep", type=Path, default=None, help="write exports here instead of a temp dir"
    )
    args = parser.parse_args(argv)

    names = args.models or model_names(args.family)
    exporters = args.exporter or list(EXPORTERS)
    results: list[CheckResult] = []
    with tempfile.TemporaryDirectory(prefix="graphprune-check-") as tmp:
        workdir = args.keep or Path(tmp)
        for name in names:
            for exporter in exporters:
                res = check_model(
                    name, exporter, workdir, atol=args.atol, rtol=args.rtol, opset=args.opset
                )
                results.append(res)
                print(
                    f"{res.name:<20} {res.exporter:<11} {res.params:>8} {res.export_s:>8.2f} "
                    f"{res.max_abs_diff:>11.2e} {'ok' if res.ok else 'FAIL'} {res.error}",
                    flush=True,
                )

    header = (
        f"{'model':<20} {'exporter':<11} {'params':>8} {'export_s':>8} {'max_abs_diff':>12}  ok"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        print(
            f"{r.name:<20} {r.exporter:<11} {r.params:>8} {r.export_s:>8.2f} "
            f"{r.max_abs_diff:>12.2e}  {'yes' if r.ok else 'NO  ' + r.error}"
        )
    failed = [r for r in results if not r.ok]
    print(f"\n{len(results) - len(failed)}/{len(results)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
