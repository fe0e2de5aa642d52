"""graphprune side by side with Torch-Pruning and onnxsim's ONNX pruning, on the same models.

    pip install torch-pruning 'onnxsim>=0.8' scikit-learn    # the peers and the digits data
    python bench/bench_peers.py [--quick] [--model NAME ...] [--ratios 0.4,0.5]
                                [--no-digits] [--json out.json]

Same architectures and weights (models/: the 14 CNNs and bert, vit, gpt2, llama, seeded), same
criterion (L1 magnitude), same ratio, each tool as its documentation says to drive it:

- graphprune: `graphprune.compress(original.onnx, ratio=R, criterion="l1")` (default scope:
  channels, heads, FFN; the time includes its exact check in onnxruntime). For transformers a
  second row adds `scope="channels,heads,ffn,hidden"` (the residual stream, inexact), which is
  what Torch-Pruning prunes there by default. A row `graphprune rounding=up` rounds each
  group's removal up (⌈R·n⌉, Torch-Pruning's convention) instead of down (the default).
- Torch-Pruning: `MetaPruner(model, example, MagnitudeImportance(p=1), global_pruning=False,
  pruning_ratio=R, ignored_layers=<the layers whose outputs reach a model output>)` on the
  torch module, then the pruned module exported with the same TorchScript exporter as the
  original. For attention models it gets `num_heads` for the Q/K/V projections,
  `prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=R` (its BERT/ViT recipe), and
  the modules' head counts are updated afterwards as that recipe does.
- onnxsim (0.8.x): `onnxsim.apply_structured_pruning(original.onnx, sparsity=R,
  importance_norm="l1", global_sparsity=False)` then `onnxsim.apply_attention_head_pruning(...,
  sparsity=R, importance_norm="l1")` (the latter only matches fused attention ops).

Every tool's output is measured the same way: parameters = float initializer elements of the
ONNX file, MACs = graphprune.metrics.count_macs at batch 1, both as after/before against the one
original export. "valid" = onnx.checker full check and a run in onnxruntime. "= masked" compares
the pruned model with the masked original (the original with the removed positions zeroed):
graphprune's own exact check; for the peers the bench builds the masked original by matching
the pruned weights back to the original's (bench/common.py: masked_equivalent) and compares
outputs (torch for Torch-Pruning, onnxruntime for onnxsim), max error relative to the output's
largest magnitude, equal when <= 1e-4. The same bench-built check is also run on graphprune's
output as a harness cross-check. Time = wall seconds of the pruning call alone.

Then one-shot quality on a trained model: a 4-conv CNN trained on scikit-learn's bundled 8x8
digits (bench/bench_criteria_digits.py's model, data split and training loop, imported;
seeded, 30 epochs), pruned at 0.1, 0.2, 0.3 and 0.5 by each tool with no fine-tuning; test
accuracy of each result. Each model runs in its own subprocess, so a peer that crashes the
interpreter costs one row, not the run. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

ROOT = common.ROOT
TRANSFORMERS = ("bert", "vit", "gpt2", "llama")
QUICK_MODELS = ("resnet_basic", "mobilenet_v2", "densenet", "bert")
EQ_TOL = 1e-4
MARK = "@@RESULT "


# -- small utilities ----------------------------------------------------------------------------
GP_UP = "graphprune rounding=up"
"""graphprune with `rounding="up"` (⌈R·n⌉ per group, Torch-Pruning's own rounding)."""


def one_line(exc: BaseException, limit: int = 110) -> str:
    msg = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {msg[0] if msg else ''}"
    return text if len(text) <= limit else text[:limit - 1] + "…"


@contextlib.contextmanager
def quiet():
    """Silence a peer's prints, progress bars and warnings."""
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf), \
            contextlib.redirect_stderr(buf):
        warnings.simplefilter("ignore")
        yield


class ToolTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Interrupt a tool call that runs past `seconds` (SIGALRM; Python-level loops only)."""
    import signal

    def fire(_sig, _frm):
        raise ToolTimeout(f"no result after {seconds:.0f} s (stopped)")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def spec_feeds(spec: Any, batch: int, seed: int) -> tuple[tuple, dict[str, np.ndarray]]:
    """Seeded torch inputs of a registered model and the same values as ONNX feeds."""
    ex = spec.example_inputs({"batch": batch}, seed=seed)
    return ex, {n: t.numpy() for n, t in zip(spec.input_names, ex, strict=True)}


def run_onnx(model: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return common.ort_session(model, threads=1).run(None, feeds)


def validity(model: Any, feeds: dict[str, np.ndarray]) -> tuple[str, list[np.ndarray] | None]:
    import onnx

    checker = ""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # noqa: BLE001
        checker = f"checker: {one_line(exc, 70)}"
    try:
        outs = run_onnx(model, feeds)
    except Exception as exc:  # noqa: BLE001
        return f"no: {checker + '; ' if checker else ''}onnxruntime: {one_line(exc, 70)}", None
    if checker:
        return f"no: {checker} (runs in onnxruntime)", outs
    return "yes", outs


def eq_cell(err: float | None, note: str = "") -> str:
    if err is None:
        return note or "n/a"
    word = "yes" if err <= EQ_TOL else "NO"
    return f"{word} ({err:.1e})"


def measure(orig: Any, pruned: Any, feeds1: dict[str, np.ndarray]) -> dict[str, float]:
    p0, p1 = common.count_float_params(orig), common.count_float_params(pruned)
    m0, m1 = common.count_macs(orig, feeds1), common.count_macs(pruned, feeds1)
    return {"params_before": p0, "params_after": p1, "params_ratio": p1 / p0 if p0 else 1.0,
            "macs_before": m0, "macs_after": m1, "macs_ratio": m1 / m0 if m0 else 1.0}


def onnx_masked_err(orig: Any, pruned: Any, feeds: dict[str, np.ndarray],
                    pruned_outs: list[np.ndarray]) -> tuple[float | None, str]:
    """Bench-built masked original of an ONNX pruning, compared in onnxruntime."""
    try:
        arrays, n = common.masked_equivalent(common.onnx_weights(orig), common.onnx_weights(pruned))
    except common.MaskError as exc:
        return None, f"n/a ({one_line(exc, 60)})"
    if n == 0:
        return None, "n/a (nothing removed)"
    masked = common.with_weights(orig, arrays)
    return common.max_rel_err(run_onnx(masked, feeds), pruned_outs), ""


# -- the tools -----------------------------------------------------------------------------------
def prune_graphprune(path: Path, ratio: float, scope: str | None = None,
                     rounding: str = "down") -> tuple[Any, dict]:
    import graphprune

    kw: dict[str, Any] = {"scope": scope} if scope else {}
    kw["rounding"] = rounding
    t = time.perf_counter()
    pruned, rep = graphprune.compress(str(path), ratio=ratio, criterion="l1", **kw)
    secs = time.perf_counter() - t
    ec = rep.exact_check
    info = {"seconds": secs, "exact_passed": bool(ec.get("passed")),
            "exact_err": float(ec.get("max_abs_err", float("nan")))}
    if getattr(rep, "fidelity", None):
        info["fidelity"] = {k: v for k, v in rep.fidelity.items() if isinstance(v, (int, float))}
    return pruned, info


def prune_onnxsim(path: Path, ratio: float, simplify: bool = False) -> tuple[Any, dict]:
    """onnxsim's structured pruning then its attention-head pruning; with `simplify`, its
    graph simplifier runs first (info["base"] is then the simplified model, the masked check's
    reference)."""
    import onnx
    import onnxsim

    model = onnx.load(str(path))
    with quiet():
        t = time.perf_counter()
        if simplify:
            model, ok = onnxsim.simplify(model)
            if not ok:
                raise RuntimeError("onnxsim.simplify could not validate its output")
            base = copy.deepcopy(model)
        out = onnxsim.apply_structured_pruning(model, sparsity=ratio, importance_norm="l1",
                                               global_sparsity=False)
        t_struct = time.perf_counter() - t
        try:
            out = onnxsim.apply_attention_head_pruning(out, sparsity=ratio,
                                                       importance_norm="l1")
            head_note = ""
        except Exception as exc:  # noqa: BLE001
            head_note = f"head pruning: {one_line(exc, 60)}"
        secs = time.perf_counter() - t
    info = {"seconds": secs, "seconds_structured": t_struct, "note": head_note}
    if simplify:
        info["base"] = base
    return out, info


def output_layers(model: Any, example: tuple) -> list[Any]:
    """Conv/Linear/Embedding modules whose outputs reach a model output through parameter-free
    ops only (found by walking the autograd graph back from the outputs): the classifier,
    detection heads, the layers writing a returned hidden state. Torch-Pruning must not prune
    their output channels, or the model's output shapes change."""
    import torch
    from torch import nn

    kinds = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding)
    by_fn: dict[Any, nn.Module] = {}
    hooks = []

    def hook(mod, _inp, out):
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            by_fn[out.grad_fn] = mod

    for m in model.modules():
        if isinstance(m, kinds):
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.enable_grad():
            outs = model(*example)
    finally:
        for h in hooks:
            h.remove()
    flat = [outs] if isinstance(outs, torch.Tensor) else list(outs)
    found: list[nn.Module] = []
    seen = set()
    stack = [t.grad_fn for t in flat if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if fn in by_fn:
            if by_fn[fn] not in found:
                found.append(by_fn[fn])
            continue
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return found


def attention_heads(model: Any) -> dict[Any, int]:
    """Torch-Pruning's num_heads: each Q/K/V (or fused QKV) projection -> its head count."""
    from torch import nn

    names_q = {"query", "q_proj", "q"}
    names_kv = {"key", "value", "k_proj", "v_proj", "k", "v"}
    names_fused = {"c_attn", "qkv", "in_proj"}
    heads: dict[Any, int] = {}
    for mod in model.modules():
        h = getattr(mod, "heads", None) or getattr(mod, "num_heads", None)
        if not isinstance(h, int):
            continue
        kv = getattr(mod, "kv_heads", None) or h
        for name, child in mod.named_children():
            if not isinstance(child, nn.Linear):
                continue
            if name in names_q or name in names_fused:
                heads[child] = h
            elif name in names_kv:
                heads[child] = kv
    return heads


def fix_head_counts(model: Any, before: dict[Any, int], dims: dict[Any, int]) -> None:
    """After head pruning, store each attention module's new head counts (the recipe's
    `m.num_heads = pruner.num_heads[m.qkv]` step)."""
    for mod in model.modules():
        for name, child in mod.named_children():
            if child not in before:
                continue
            fused = 3 if name in ("c_attn", "qkv", "in_proj") else 1
            n = child.out_features // (fused * dims[child])
            if name in ("key", "k_proj", "k") and hasattr(mod, "kv_heads"):
                mod.kv_heads = n
            elif name in ("query", "q_proj", "q", "c_attn", "qkv", "in_proj"):
                if hasattr(mod, "heads"):
                    mod.heads = n
                if hasattr(mod, "num_heads"):
                    mod.num_heads = n


def jitter_duplicates(model: Any, seed: int = 0) -> int:
    """Make the values of every float parameter/buffer that has repeated values distinct:
    x * (1 + s * (p - 0.5)), p a random permutation of k/n, s = max(1e-3, 4e-7 * n) so that
    neighbouring factors stay float32-distinct (zeros get 1e-6 * (p - 0.5)). Returns how many
    tensors changed. Used only for the equality check, when equal values (a layer-scale gamma
    filled with one constant) hide which positions a peer removed."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    changed = 0
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            n = t.numel()
            if not t.is_floating_point() or n < 2 or torch.unique(t).numel() == n:
                continue
            p = (torch.randperm(n, generator=gen).to(t.dtype) / n - 0.5).reshape(t.shape)
            t.copy_(torch.where(t == 0, 1e-6 * p, t * (1 + max(1e-3, 4e-7 * n) * p)))
            changed += 1
    return changed


def prune_torch_pruning(spec: Any, ratio: float, jitter: bool = False) -> tuple[Any, Any, dict]:
    """Returns (pruned torch module, untouched original module, info)."""
    import torch
    import torch_pruning as tp

    model = spec.build()
    if jitter:
        jitter_duplicates(model)
    original = copy.deepcopy(model)
    example = spec.example_inputs(seed=0)
    ignored = output_layers(model, example)
    heads = attention_heads(model)
    fused = {child for mod in model.modules() for n, child in mod.named_children()
             if n in ("c_attn", "qkv", "in_proj")}
    dims = {m: m.out_features // ((3 if m in fused else 1) * h) for m, h in heads.items()}
    ignored_names = [n for n, m in model.named_modules() if any(m is x for x in ignored)]
    kw: dict[str, Any] = {}
    if heads:
        kw = {"num_heads": heads, "prune_num_heads": True, "prune_head_dims": False,
              "head_pruning_ratio": ratio}
    with quiet():
        t = time.perf_counter()
        imp = tp.importance.MagnitudeImportance(p=1)
        pruner = tp.pruner.MetaPruner(model, example, importance=imp, global_pruning=False,
                                      pruning_ratio=ratio, ignored_layers=ignored, **kw)
        pruner.step()
        secs = time.perf_counter() - t
    if heads:
        fix_head_counts(model, heads, dims)
    model.eval()
    with torch.no_grad():
        model(*example)  # raises here when the pruned module no longer runs
    return model, original, {"seconds": secs, "ignored": ignored_names}


def torch_masked_err(original: Any, pruned: Any, example: tuple) -> tuple[float | None, str]:
    import torch

    sd0 = {k: v.detach().numpy() for k, v in original.state_dict().items()
           if v.is_floating_point()}
    sd1 = {k: v.detach().numpy() for k, v in pruned.state_dict().items()
           if v.is_floating_point()}
    try:
        arrays, n = common.masked_equivalent(sd0, sd1)
    except common.MaskError as exc:
        return None, f"n/a ({one_line(exc, 60)})"
    if n == 0:
        return None, "n/a (nothing removed)"
    masked = copy.deepcopy(original)
    masked.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()}, strict=False)
    with torch.no_grad():
        a = masked(*example)
        b = pruned(*example)
    flat = lambda o: [o] if isinstance(o, torch.Tensor) else list(o)  # noqa: E731
    return common.max_rel_err([x.numpy() for x in flat(a)], [x.numpy() for x in flat(b)]), ""


# -- one model, all tools (runs in a worker subprocess) ------------------------------------------
def worker(name: str, ratios: list[float], tool_timeout: float = 60) -> list[dict]:
    import onnx
    import torch

    from models import get
    from models.export import export_onnx

    torch.set_num_threads(1)
    spec = get(name)
    src = common.export_cached(name)
    orig = onnx.load(str(src))
    _, feeds1 = spec_feeds(spec, 1, 0)
    ex2, feeds2 = spec_feeds(spec, 2, 1)
    rows = []
    tools = [("graphprune", None), (GP_UP, None), ("Torch-Pruning", None), ("onnxsim", None)]
    if os.environ.get("BENCH_ONNXSIM_SIMPLIFY"):
        tools.append(("onnxsim +simplify", None))
    if name in TRANSFORMERS:
        tools.insert(1, ("graphprune +hidden", "channels,heads,ffn,hidden"))
    for ratio in ratios:
        for tool, scope in tools:
            row: dict[str, Any] = {"model": name, "ratio": ratio, "tool": tool}
            try:
                if tool.startswith("graphprune"):
                    with time_limit(tool_timeout):
                        pruned, info = prune_graphprune(src, ratio, scope,
                                                        "up" if tool == GP_UP else "down")
                    row.update(info)
                    row["valid"], outs = validity(pruned, feeds2)
                    if outs is not None:
                        err, note = onnx_masked_err(orig, pruned, feeds2, outs)
                        row["bench_masked"] = eq_cell(err, note)
                        if scope and err is not None and err > EQ_TOL:
                            row["bench_masked"] = (f"{err:.1e} from the masked original "
                                                   "(hidden units: inexact by design)")
                    row["equal"] = (("exact part " if scope else "")
                                    + eq_cell(row["exact_err"] if row["exact_passed"] else 1.0))
                    if not row["exact_passed"]:
                        row["equal"] = "NO (exact check failed)"
                elif tool.startswith("onnxsim"):
                    with time_limit(tool_timeout):
                        pruned, info = prune_onnxsim(src, ratio, simplify="simplify" in tool)
                    base = info.pop("base", orig)
                    row.update(info)
                    row["valid"], outs = validity(pruned, feeds2)
                    row["equal"] = "n/a"
                    if outs is not None:
                        err, note = onnx_masked_err(base, pruned, feeds2, outs)
                        row["equal"] = eq_cell(err, note)
                else:
                    with time_limit(tool_timeout):
                        model, original, info = prune_torch_pruning(spec, ratio)
                    row.update(info)
                    err, note = torch_masked_err(original, model, ex2)
                    row["equal"] = eq_cell(err, note)
                    if err is None and note.startswith("n/a (MaskError"):
                        # equal values hide the removed positions: check the same pruning
                        # recipe on a copy whose repeated values are made distinct
                        with time_limit(tool_timeout):
                            jm, jo, _ = prune_torch_pruning(spec, ratio, jitter=True)
                        jerr, jnote = torch_masked_err(jo, jm, ex2)
                        row["equal"] = (eq_cell(jerr, jnote) + " on a copy with repeated "
                                        "weight values jittered")
                    with tempfile.TemporaryDirectory() as tmp:
                        out = Path(tmp) / "tp.onnx"
                        t = time.perf_counter()
                        export_onnx(model, spec.example_inputs(seed=0), out,
                                    exporter="torchscript", inputs=spec.inputs_for("torchscript"))
                        row["export_seconds"] = time.perf_counter() - t
                        pruned = onnx.load(str(out))
                    row["valid"], outs = validity(pruned, feeds2)
                    if outs is not None:
                        with torch.no_grad():
                            ref = model(*ex2)
                        ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
                        row["export_err"] = common.max_rel_err([r.numpy() for r in ref], outs)
                row.update(measure(orig, pruned, feeds1))
            except Exception as exc:  # noqa: BLE001
                row["error"] = one_line(exc)
                if os.environ.get("BENCH_VERBOSE"):
                    traceback.print_exc()
            rows.append(row)
    return rows


# -- digits: one-shot quality on a trained model ------------------------------------------
def digits(ratios: list[float], epochs: int) -> list[dict]:
    """The CNN and data of bench/bench_criteria_digits.py (reused, not copied), trained with
    its `train`, then pruned by each tool; test accuracy in onnxruntime."""
    import bench_criteria_digits as bcd
    import onnx
    import torch
    import torch_pruning as tp

    from models.export import export_onnx

    torch.set_num_threads(1)  # tiny tensors: on a busy 2-CPU machine one thread is much faster
    x_tr, y_tr, x_te, y_te = bcd.load_data()
    t = time.perf_counter()
    model = bcd.train(bcd.build(False), x_tr, y_tr, epochs)
    train_s = time.perf_counter() - t
    ex = (torch.from_numpy(x_tr[:1]),)

    def acc_torch(m: Any) -> float:
        with torch.no_grad():
            return float((m(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean())

    rows = [{"tool": "original", "ratio": 0.0, "acc": acc_torch(model), "params_ratio": 1.0,
             "macs_ratio": 1.0, "train_seconds": train_s, "epochs": epochs,
             "test_images": len(x_te)}]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "digits.onnx"
        export_onnx(model, ex[0], src)
        orig = onnx.load(str(src))
        feeds1 = {"input": x_te[:1]}
        rows[0]["acc_onnx"] = bcd.accuracy(orig, x_te, y_te)
        for ratio in ratios:
            for tool in ("graphprune", "Torch-Pruning", "onnxsim"):
                row: dict[str, Any] = {"tool": tool, "ratio": ratio}
                try:
                    if tool == "graphprune":
                        pruned, info = prune_graphprune(src, ratio)
                        row["seconds"] = info["seconds"]
                    elif tool == "onnxsim":
                        pruned, info = prune_onnxsim(src, ratio)
                        row["seconds"] = info["seconds"]
                    else:
                        m = copy.deepcopy(model)
                        with quiet():
                            t = time.perf_counter()
                            pruner = tp.pruner.MetaPruner(
                                m, ex, importance=tp.importance.MagnitudeImportance(p=1),
                                global_pruning=False, pruning_ratio=ratio,
                                ignored_layers=output_layers(m, ex))
                            pruner.step()
                            row["seconds"] = time.perf_counter() - t
                        m.eval()
                        row["acc_torch"] = acc_torch(m)
                        out = Path(tmp) / f"tp{ratio}.onnx"
                        export_onnx(m, ex[0], out)
                        pruned = onnx.load(str(out))
                    row["acc"] = bcd.accuracy(pruned, x_te, y_te)
                    row.update(measure(orig, pruned, feeds1))
                except Exception as exc:  # noqa: BLE001
                    row["error"] = one_line(exc)
                rows.append(row)
    return rows


# -- driver ---------------------------------------------------------------------------------
def run_worker(args: list[str], timeout: float) -> tuple[list[dict] | None, str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):]), ""
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return None, f"worker exit {proc.returncode}: {tail[:100]}"


def fmt_ratio(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else "-"


def peers_table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        if "error" in r:
            out.append([r["model"], r["ratio"], r["tool"], "-", "-", "-", "-",
                        f"{r.get('seconds', float('nan')):.2f}" if "seconds" in r else "-",
                        f"fails: {r['error']}"])
            continue
        note = []
        if r.get("note"):
            note.append(r["note"])
        if r.get("export_err") is not None and r["export_err"] > EQ_TOL:
            note.append(f"ONNX export differs from its torch output by {r['export_err']:.1e}")
        if r["tool"].startswith("graphprune") and r.get("bench_masked"):
            note.append(f"bench check {r['bench_masked']}")
        if "fidelity" in r:
            f = r["fidelity"]
            cos = next((v for k, v in f.items() if "cos" in k), None)
            if cos is not None:
                note.append(f"full-plan cosine {cos:.4f}")
        if r["params_ratio"] == 1.0 and r["macs_ratio"] == 1.0:
            note.append("nothing pruned")
        out.append([r["model"], r["ratio"], r["tool"], fmt_ratio(r["params_ratio"]),
                    fmt_ratio(r["macs_ratio"]), r.get("valid", "-"), r.get("equal", "-"),
                    f"{r['seconds']:.2f}", "; ".join(note)])
    return common.table(["model", "ratio", "tool", "params after/before", "MACs after/before",
                         "valid", "= masked", "time s", "notes"], out)


def digits_table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        if "error" in r:
            out.append([r["ratio"], r["tool"], "-", "-", "-", "-", f"fails: {r['error']}"])
            continue
        acc = f"{100 * r['acc']:.2f}%"
        note = ""
        if r["tool"] == "original":
            note = (f"trained {r['epochs']} epochs in {r['train_seconds']:.0f} s; ONNX "
                    f"{100 * r['acc_onnx']:.2f}%; {r['test_images']} test images")
        elif "acc_torch" in r:
            note = f"torch module {100 * r['acc_torch']:.2f}%"
        out.append([r["ratio"], r["tool"], acc, fmt_ratio(r["params_ratio"]),
                    fmt_ratio(r["macs_ratio"]),
                    f"{r['seconds']:.2f}" if "seconds" in r else "-", note])
    return common.table(["ratio", "tool", "test accuracy", "params after/before",
                         "MACs after/before", "time s", "notes"], out)


def summary(rows: list[dict]) -> list[str]:
    """Per (model, ratio): which tools handled it, and graphprune's reduction against theirs."""
    lines = []
    by: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by.setdefault((r["model"], r["ratio"]), {})[r["tool"]] = r

    def ok(r: dict | None) -> bool:
        return bool(r) and "error" not in r and r.get("valid") == "yes" and \
            r["params_ratio"] < 1.0

    present = {r["tool"] for r in rows}
    for peer in [p for p in ("Torch-Pruning", "onnxsim", "onnxsim +simplify") if p in present]:
        handled = [k for k, v in by.items() if ok(v.get(peer))]
        exact = [k for k in handled if str(by[k][peer].get("equal", "")).startswith("yes")]
        lines.append(f"{peer}: produced a valid smaller model for {len(handled)}/{len(by)} "
                     f"model-ratio pairs ({len(exact)} equal to their masked original)")
        for gp in [g for g in ("graphprune", GP_UP) if g in present]:
            gp_too = [k for k in handled if ok(by[k].get(gp))]
            bigger = [k for k in gp_too
                      if by[k][gp]["params_ratio"] <= by[k][peer]["params_ratio"] + 1e-9]
            lines.append(f"  {gp} handled {len(gp_too)} of those, with an equal or larger "
                         f"parameter reduction on {len(bigger)}")
            worse = sorted(set(gp_too) - set(bigger))
            if worse:
                lines.append(f"    fewer parameters removed than {peer} on: " + ", ".join(
                    f"{m}@{r} ({by[(m, r)][gp]['params_ratio']:.3f} vs "
                    f"{by[(m, r)][peer]['params_ratio']:.3f})" for m, r in worse))
    gp_ok = [k for k, v in by.items() if ok(v.get("graphprune"))]
    lines.append(f"graphprune: valid smaller model for {len(gp_ok)}/{len(by)} model-ratio pairs")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"models {', '.join(QUICK_MODELS)}, ratio 0.4, digits 15 epochs at 0.3")
    ap.add_argument("--model", action="append", help="only these models (repeatable)")
    ap.add_argument("--ratios", default=None, help="comma-separated (default 0.4,0.5)")
    ap.add_argument("--digit-ratios", default="0.1,0.2,0.3,0.5")
    ap.add_argument("--digits-only", action="store_true", help="only the digits part")
    ap.add_argument("--epochs", type=int, default=None, help="digits epochs (default 30)")
    ap.add_argument("--no-digits", action="store_true")
    ap.add_argument("--timeout", type=float, default=900, help="per-model worker limit, s")
    ap.add_argument("--tool-timeout", type=float, default=60,
                    help="limit for one tool's pruning call, s (default 60)")
    ap.add_argument("--onnxsim-simplify", action="store_true",
                    help="add a row running onnxsim.simplify before onnxsim's pruning")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--digits-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    ratios = [float(x) for x in (args.ratios or ("0.4" if args.quick else "0.4,0.5")).split(",")]
    if args.quick and args.digit_ratios == "0.1,0.2,0.3,0.5":
        args.digit_ratios = "0.3"
    d_ratios = [float(x) for x in args.digit_ratios.split(",")]
    epochs = args.epochs or (15 if args.quick else 30)
    if args.onnxsim_simplify:
        os.environ["BENCH_ONNXSIM_SIMPLIFY"] = "1"
    if args.worker:
        print(MARK + json.dumps(worker(args.worker, ratios, args.tool_timeout)), flush=True)
        return
    if args.digits_worker:
        print(MARK + json.dumps(digits(d_ratios, epochs)), flush=True)
        return

    from models import CNN_MODELS

    names = args.model or (list(QUICK_MODELS) if args.quick
                           else [*CNN_MODELS, *TRANSFORMERS])
    if args.digits_only:
        names = []
    print(common.machine())
    from importlib.metadata import version

    print(f"graphprune (this tree), torch-pruning {version('torch-pruning')}, onnxsim "
          f"{version('onnxsim')}; ratios {ratios}; criterion L1\n")
    t0 = time.perf_counter()
    rows: list[dict] = []
    for name in names:
        t = time.perf_counter()
        got, err = run_worker(["--worker", name, "--ratios", ",".join(map(str, ratios)),
                               "--tool-timeout", str(args.tool_timeout)], args.timeout)
        if got is None:
            got = [{"model": name, "ratio": r, "tool": "(all)", "error": err} for r in ratios]
        rows.extend(got)
        print(f"  {name}: {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    if rows:
        print(peers_table(rows))
        print()
        for line in summary(rows):
            print(line)
    drows: list[dict] = []
    if not args.no_digits:
        got, err = run_worker(["--digits-worker", "--digit-ratios", args.digit_ratios,
                               "--epochs", str(epochs)], args.timeout)
        drows = got or [{"tool": "(all)", "ratio": 0.0, "error": err}]
        print("\nOne-shot pruning of a CNN trained on scikit-learn digits (no fine-tuning):\n")
        print(digits_table(drows))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"peers": rows, "digits": drows}, indent=1))


if __name__ == "__main__":
    main()
