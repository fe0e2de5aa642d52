"""Export every registered model with both exporters and check ONNX Runtime parity.

Run as ``python -m models.check_exports``. For each model x exporter it
exports to a temp dir, checks the file is self-contained with the agreed
input/output names and a symbolic batch axis, then runs batch 1 and batch 2
through onnxruntime and compares against eager torch. Exit code is non-zero
if anything fails, so the script doubles as a smoke test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CheckResult", "check_model", "main"]


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


def _check_interface(path: Path, dynamic_batch: bool) -> str:
    """Return a problem description, or '' if names/batch axis/file layout are as agreed."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    if len(list(path.parent.iterdir())) != 1:
        return f"side files next to model: {sorted(p.name for p in path.parent.iterdir())}"
    inputs = [
        i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}
    ]
    if [i.name for i in inputs] != ["input"]:
        return f"inputs are {[i.name for i in inputs]}"
    outs = [o.name for o in proto.graph.output]
    if outs != ["output"] and outs != [f"output{i}" for i in range(len(outs))]:
        return f"outputs are {outs}"
    if dynamic_batch:
        for vi in [*inputs, *proto.graph.output]:
            dim0 = vi.type.tensor_type.shape.dim[0]
            if dim0.HasField("dim_value"):
                return f"{vi.name} has static batch {dim0.dim_value}"
    for vi in proto.graph.output:
        dims = list(vi.type.tensor_type.shape.dim)[1:]
        if not all(d.HasField("dim_value") for d in dims):
            return f"{vi.name} has symbolic non-batch dims"
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
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(spec.input_shape, generator=gen)
    path = workdir / f"{name}.{exporter}" / f"{name}.onnx"
    result = CheckResult(name, exporter, params, float("nan"), float("nan"), False)
    try:
        start = time.perf_counter()
        export_onnx(model, example, path, exporter=exporter, opset=opset)
        result.export_s = time.perf_counter() - start
        problem = _check_interface(path, dynamic_batch=True)
        if problem:
            result.error = problem
            return result

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        worst, ok = 0.0, True
        for batch in (1, 2):
            x = torch.randn((batch, *spec.input_shape[1:]), generator=gen)
            with torch.no_grad():
                ref = model(x)
            refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
            got = sess.run(None, {"input": x.numpy()})
            for r, g in zip(refs, got, strict=True):
                r_np = r.numpy()
                if r_np.shape != g.shape:
                    result.error = f"batch {batch}: shape {g.shape} != torch {r_np.shape}"
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
    from models import CNN_MODELS
    from models.export import EXPORTERS

    parser = argparse.ArgumentParser(
        prog="python -m models.check_exports", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("models", nargs="*", help="subset of model names (default: all)")
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

    names = args.models or list(CNN_MODELS)
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
                    f"{res.name:<18} {res.exporter:<11} {res.params:>8} {res.export_s:>8.2f} "
                    f"{res.max_abs_diff:>11.2e} {'ok' if res.ok else 'FAIL'} {res.error}",
                    flush=True,
                )

    header = (
        f"{'model':<18} {'exporter':<11} {'params':>8} {'export_s':>8} {'max_abs_diff':>12}  ok"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        print(
            f"{r.name:<18} {r.exporter:<11} {r.params:>8} {r.export_s:>8.2f} "
            f"{r.max_abs_diff:>12.2e}  {'yes' if r.ok else 'NO  ' + r.error}"
        )
    failed = [r for r in results if not r.ok]
    print(f"\n{len(results) - len(failed)}/{len(results)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
