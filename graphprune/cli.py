"""`graphprune` command line: a thin layer over the Python API.

Exit codes: 0 success, 1 the exact check failed (nothing written), 2 bad input or usage,
3 internal error (a bug: rerun with --verbose and report it).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from .context import Step
from .errors import GraphpruneError, InputError, one_line
from .version import __version__

COMPRESS_EXAMPLES = """\
examples:
  graphprune compress model.onnx --ratio 0.4 -o model.pruned.onnx
  graphprune compress model.onnx --criterion taylor --calib calib.npz --target-macs 0.5
  graphprune compress model.onnx --target-latency 0.6 --latency-cmd "trtexec --onnx={model}"
"""
APPLY_EXAMPLES = """\
examples:
  graphprune apply model.onnx plan.json -o model.pruned.onnx
  graphprune apply finetuned.onnx plan.json -o finetuned.pruned.onnx --report report.json
  graphprune apply model-dynamo.onnx plan-from-torchscript.json --html report.html
"""
SPARSIFY_EXAMPLES = """\
examples:
  graphprune sparsify model.onnx --sparsity 0.5 -o model.sparse.onnx
  graphprune sparsify model.onnx --pattern 2:4 --method sparsegpt --calib calib.npz
  graphprune sparsify pruned.onnx --method wanda --calib calib.npz \
      --base-plan plan.json --plan-out both.json
"""
ANALYZE_EXAMPLES = """\
examples:
  graphprune analyze model.onnx
  graphprune analyze model.onnx --scope channels,heads,ffn,hidden --ratio 0.5 --round-to 8
  graphprune analyze decoder.onnx --allow-io-change --protect 'lm_head' --all --wide
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="graphprune",
        description="Structured pruning for ONNX graphs, proven exact with onnxruntime.",
        epilog="Run `graphprune COMMAND --help` for a command's options and examples.")
    p.add_argument("--version", action="version", version=f"graphprune {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, examples: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                              epilog=examples,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    c = command("compress", "prune a model and write a smaller dense ONNX file, proven "
                "equal to the original with the removed units masked", COMPRESS_EXAMPLES)
    c.add_argument("model", help="input .onnx file (never modified)")
    c.add_argument("-o", "--output", help="output path (default: <model>.pruned.onnx)")
    _selection_flags(c)
    c.add_argument("--criterion", default="l1",
                   help="l1 | l2 | bn-scale | fpgm | lamp | random (weights), activation | apoz "
                        "| wanda | obd | taylor (calibration data) (default l1)")
    c.add_argument("--aggregate", default="sum", metavar="HOW",
                   help="combine a unit's member scores: sum | mean | max (default sum)")
    c.add_argument("--normalize", default=None, metavar="HOW",
                   help="normalise scores within each group: none | mean | max | sum | standard "
                        "(default: mean; none for lamp and random)")
    c.add_argument("--allocation", default="uniform", metavar="KIND",
                   help="uniform (same ratio per group) | global (one ranking over all groups) "
                        "| sensitivity (measured output error per removed cost) (default uniform)")
    c.add_argument("--sensitivity-trials", choices=("plain", "compensated"), default=None,
                   help="sensitivity allocation: measure each trial with the removed units "
                        "zeroed (plain) or with their mean contribution moved into the biases "
                        "of the layers that read them, as --recover bias does (compensated: "
                        "one more pass over the calibration data); default compensated when "
                        "recovery runs, plain otherwise")
    c.add_argument("--fragile-check", default="auto", choices=("auto", "on", "off"),
                   help="uniform allocation: measure each group alone at its ratio and keep "
                        "whole those whose removal alone gives 2x the median group's output "
                        "error (auto: with --calib; on: on generated inputs too) (default auto)")
    c.add_argument("--max-group-ratio", type=float, default=0.9, metavar="R",
                   help="at most this fraction of a group is removed under global/sensitivity "
                        "allocation and targets (default 0.9)")
    c.add_argument("--target-macs", type=float, metavar="F",
                   help="search for the plan keeping this fraction of the MACs (replaces --ratio)")
    c.add_argument("--target-params", type=float, metavar="F",
                   help="search for the plan keeping this fraction of the parameters")
    c.add_argument("--target-latency", type=float, metavar="F",
                   help="search for the plan keeping this fraction of the onnxruntime latency "
                        "measured on this machine (median of repeated runs)")
    c.add_argument("--latency-cmd", metavar="CMD",
                   help="measure latency with this command instead of onnxruntime here: "
                        "{model} is replaced by a candidate's path, and the time is the last "
                        "number it prints (e.g. \"trtexec --onnx={model}\"); only ratios count")
    c.add_argument("--latency-regex", metavar="REGEX",
                   help="with --latency-cmd: read the time from the last output line matching "
                        "this (its first group, if any), e.g. 'mean = ([0-9.]+) ms'")
    c.add_argument("--calib", metavar="NPZ",
                   help="calibration inputs: one array per graph input, samples on axis 0 "
                        "(default: generated inputs); without --inputs, the last samples are "
                        "held back from scoring for the exact check")
    c.add_argument("--calib-samples", type=int, default=32, metavar="N",
                   help="calibration samples to use (default 32)")
    _recover_flags(c)
    c.add_argument("--refit-order", choices=("sequential", "independent"),
                   default="sequential",
                   help="refit layers front to back, each from the model refit so far "
                        "(sequential, default), or all from the original's statistics in one "
                        "pass (independent: faster, less accurate)")
    c.add_argument("--recover-budget", type=int, default=512, metavar="MB",
                   help="memory for one layer's input statistics; a layer over it gets bias "
                        "compensation instead of a refit (default 512)")
    c.add_argument("--plan-out", metavar="JSON", help="save the plan here (apply it with "
                   "`graphprune apply`)")
    c.add_argument("--block-criterion", default="influence", metavar="HOW",
                   help="scores residual blocks (scope blocks): influence (1 - cosine of a "
                        "block's input and output, ShortGPT) | sensitivity (output error with "
                        "the block alone removed) (default influence)")
    _validation_flags(c)
    _report_flags(c)
    _common(c)

    ap = command("apply", "apply a saved plan (compress --plan-out) to its model, a "
                 "fine-tuned copy of it or another export of the same module", APPLY_EXAMPLES)
    ap.add_argument("model", help="input .onnx file (never modified)")
    ap.add_argument("plan", help="plan JSON written by `compress --plan-out`")
    ap.add_argument("-o", "--output", help="output path (default: <model>.pruned.onnx)")
    _validation_flags(ap)
    ap.add_argument("--calib", metavar="NPZ",
                    help="calibration inputs of a plan that reads data: to re-run its recovery "
                         "(--recover) or its sparsity method (wanda, sparsegpt)")
    ap.add_argument("--calib-samples", type=int, metavar="N",
                    help="calibration samples (default: the plan's, else 32)")
    _recover_flags(ap, apply=True)
    _report_flags(ap, io=False)
    _common(ap)

    _sparsify_parser(command)

    a = command("analyze", "print the coupled groups, why units stay, and what compress "
                "with the same options would remove", ANALYZE_EXAMPLES)
    a.add_argument("model", help="input .onnx file (never modified)")
    _selection_flags(a)
    a.add_argument("--all", action="store_true", help="list every group, not only the first 40")
    _io_flag(a)
    _common(a)
    return p


def _recover_flags(p: argparse.ArgumentParser, apply: bool = False) -> None:
    p.add_argument("--recover", choices=("none", "bias", "refit"), default=None,
                   help=("replace the plan's recovery (none: apply without it)" if apply else
                         "repair the layers that read removed units from calibration data: "
                         "bias (move the removed inputs' mean into the bias) or refit "
                         "(least-squares refit of the kept weights and bias); default refit "
                         "with --calib, none without"))
    p.add_argument("--holdout", type=float, default=0.25, metavar="SHARE",
                   help="share of the calibration samples held back from recovery to "
                        "measure its fidelity (default 0.25)")


def _sparsify_parser(command) -> None:
    s = command("sparsify", "zero weights in place (unstructured or N:M such as 2:4): same "
                "graph, names and shapes", SPARSIFY_EXAMPLES)
    s.add_argument("model", help="input .onnx file (never modified)")
    s.add_argument("-o", "--output", help="output path (default: <model>.sparse.onnx)")
    s.add_argument("--sparsity", type=float, metavar="S",
                   help="fraction of each layer's weights to zero (default 0.5; implied by "
                        "an N:M pattern)")
    s.add_argument("--pattern", default="unstructured",
                   help="unstructured | 2:4 | N:M: at most N non-zeros in every M consecutive "
                        "weights along the input channels (default unstructured)")
    s.add_argument("--method", default="magnitude",
                   help="magnitude | wanda | sparsegpt (default magnitude)")
    s.add_argument("--scope", default="linear,conv", metavar="KINDS",
                   help="layer kinds: linear (MatMul, Gemm), conv, head (final layers: "
                        "classifier, LM head) (default linear,conv)")
    s.add_argument("--protect", metavar="REGEX",
                   help="leave dense the layers whose node or weight name matches")
    s.add_argument("--calib", metavar="NPZ",
                   help="calibration inputs for wanda and sparsegpt: one array per graph "
                        "input, samples on axis 0 (default: generated inputs)")
    s.add_argument("--calib-samples", type=int, default=32, metavar="N",
                   help="calibration samples to use (default 32)")
    s.add_argument("--holdout", type=float, default=0.25, metavar="SHARE",
                   help="share of the calibration samples held back from the method to "
                        "measure fidelity on (default 0.25)")
    s.add_argument("--sequential", action=argparse.BooleanOptionalAction, default=True,
                   help="wanda, sparsegpt: take each layer's statistics from the model "
                        "already sparsified upstream (default) or all from the dense model")
    s.add_argument("--plan-out", metavar="JSON",
                   help="save the plan (replay it with `graphprune apply`)")
    s.add_argument("--base-plan", metavar="JSON",
                   help="the plan that made MODEL from its original (`compress --plan-out`): "
                        "--plan-out then holds both, for `graphprune apply ORIGINAL`")
    s.add_argument("--input-shape", action="append", default=[], metavar="NAME:1x3x224x224",
                   help="concrete shape for a dynamic input (repeatable)")
    s.add_argument("--seed", type=int, default=0,
                   help="seed of generated calibration inputs (default 0)")
    _report_flags(s, io=False)
    _common(s)


def _selection_flags(p: argparse.ArgumentParser) -> None:
    """What decides how many units each group keeps: compress's, previewed by analyze."""
    p.add_argument("--ratio", type=float, default=0.4,
                   help="fraction of each prunable group's units to remove (default 0.4)")
    p.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="keep unit counts at multiples of N where a group is large enough")
    p.add_argument("--rounding", choices=("down", "up"), default="down",
                   help="ratio of n units (a group's; all candidates' under global or "
                        "sensitivity allocation): down removes floor(ratio*n), never more than "
                        "asked (default); up removes ceil(ratio*n), as Torch-Pruning")
    p.add_argument("--protect", metavar="REGEX",
                   help="keep every group whose name (as analyze prints it) or one of whose "
                        "nodes' names matches")
    p.add_argument("--scope", default="channels,heads,ffn", metavar="KINDS",
                   help="unit kinds to prune, comma-separated: channels, heads, ffn, hidden, "
                        "blocks (hidden = residual width through LayerNorm/RMSNorm: inexact, "
                        "opt-in; blocks = whole residual branches: opt-in; analyze lists them; "
                        "default channels,heads,ffn)")


def _validation_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:1x3x224x224",
                   help="concrete shape for a dynamic input during validation (repeatable; "
                        "default: shapes the model runs on, found by trying)")
    _inputs_flag(p)
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the generated validation and calibration inputs and of "
                        "random scores (default 0)")


def _report_flags(p: argparse.ArgumentParser, io: bool = True) -> None:
    p.add_argument("--report", metavar="JSON", help="write the report as JSON here")
    p.add_argument("--html", metavar="HTML",
                   help="write the report as one self-contained HTML page here (summary, "
                        "widths per group, sensitivity curves, groups and why they froze)")
    if io:
        _io_flag(p)


def _io_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-io-change", action="store_true",
                   help="let graph inputs and outputs that carry state (a KV cache's past and "
                        "present key/values) shrink along static unit axes (heads); the "
                        "report lists the new shapes")


def _inputs_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inputs", metavar="NPZ",
                   help="real inputs for the exact check: one array per graph input, samples "
                        "on axis 0 (a scalar or a state: its value); a single-input model "
                        "takes a single-array .npz (arr_0)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON to stdout")
    p.add_argument("--wide", action="store_true",
                   help="print tables with every name and reason on one line, whatever the "
                        "terminal's width (default: wrapped to COLUMNS or the terminal)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show tracebacks and underlying causes of errors")


def _input_sizes(specs: list[str]) -> dict[str, list[int]]:
    sizes = {}
    for spec in specs:
        name, _, dims = spec.rpartition(":")
        try:
            sizes[name] = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            raise InputError(f"--input-shape '{spec}': expected NAME:DxDxD") from None
        if not name:
            raise InputError(f"--input-shape '{spec}': expected NAME:DxDxD")
    return sizes


def _options(args: argparse.Namespace, **extra):
    """The run's options, made (and validated) once from the flags."""
    from .passes.options import Options

    return Options(
        ratio=args.ratio, round_to=args.round_to, rounding=args.rounding, protect=args.protect,
        scope=args.scope, allow_io_change=args.allow_io_change, **extra)


def _compress_options(args: argparse.Namespace):
    return _options(
        args, criterion=args.criterion, aggregate=args.aggregate, normalize=args.normalize,
        allocation=args.allocation, max_group_ratio=args.max_group_ratio, seed=args.seed,
        target_macs=args.target_macs, target_params=args.target_params,
        target_latency=args.target_latency, calib=args.calib,
        calib_samples=args.calib_samples, input_sizes=_input_sizes(args.input_shape),
        inputs=args.inputs, latency=_latency(args), block_criterion=args.block_criterion,
        fragile_check=args.fragile_check, recover=args.recover, refit_order=args.refit_order,
        recover_budget_mb=args.recover_budget, holdout=args.holdout,
        sensitivity_trials=args.sensitivity_trials)


def _latency(args: argparse.Namespace):
    """--latency-cmd as the latency measure (None: onnxruntime on this machine)."""
    if args.latency_cmd is None:
        if args.latency_regex is not None:
            raise InputError("--latency-regex needs --latency-cmd")
        return None
    from .passes.latency import CommandLatency

    return CommandLatency(args.latency_cmd, args.latency_regex)


class _Progress:
    """Progress on stderr: lines as "… line"; the counted steps of long stages as a bar with
    the count and the time left, redrawn in place, only when stderr is a terminal."""

    REDRAW_S = 0.1

    def __init__(self, stream, tty: bool) -> None:
        self.stream, self.tty = stream, tty
        self.drawn = False
        self.last = 0.0
        self.started: dict[str, tuple[float, int]] = {}

    def __call__(self, message: str) -> None:
        if isinstance(message, Step):
            if self.tty:
                self._bar(message)
            return
        self.clear()
        print(f"… {message}", file=self.stream, flush=True)

    def _bar(self, step: Step) -> None:
        now = time.monotonic()
        t0, d0 = self.started.setdefault(step.stage, (now, step.done))
        if step.done >= step.total:
            self.started.pop(step.stage, None)
            self.clear()
            return
        if self.drawn and now - self.last < self.REDRAW_S:
            return
        left = ""
        if step.done > d0:
            left = f", {_clock((now - t0) / (step.done - d0) * (step.total - step.done))} left"
        text = f"{step.stage} {step.done}/{step.total} {step.unit}".rstrip() + left
        width = shutil.get_terminal_size((80, 24)).columns - 1
        cells = max(10, min(30, width - len(text) - 3))
        full = round(cells * step.done / max(1, step.total))
        line = f"[{'#' * full}{'.' * (cells - full)}] {text}"
        self.stream.write("\r" + line[:width] + "\033[K")
        self.stream.flush()
        self.drawn, self.last = True, now

    def clear(self) -> None:
        if self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.drawn = False


def _clock(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour on."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def _progress(args: argparse.Namespace) -> _Progress | None:
    """Progress on stderr, unless the output is JSON or quiet (one per run: an error clears
    its bar)."""
    if args.quiet or args.json:
        return None
    if getattr(args, "progress", None) is None:
        args.progress = _Progress(sys.stderr, sys.stderr.isatty())
    return args.progress


def _clear_progress(args: argparse.Namespace) -> None:
    if getattr(args, "progress", None) is not None:
        args.progress.clear()


def _width(args: argparse.Namespace) -> int | None:
    """Tables' width: None (every line whole) with --wide, else the terminal's."""
    return None if args.wide else 0


def cmd_compress(args: argparse.Namespace) -> int:
    from .io import check_writable, load_checked, save_atomic, write_text_atomic
    from .pipeline import compress

    options = _compress_options(args)
    src = Path(args.model)
    out = Path(args.output) if args.output else src.with_suffix(".pruned.onnx")
    model, external = load_checked(src, out, report=args.report, plan=args.plan_out,
                                   html=args.html, map_external=True)
    if args.plan_out:
        check_writable(args.plan_out, "plan")
    spill = _spill(out) if external else None
    try:
        pruned, report = compress(model, options=options, progress=_progress(args),
                                  spill=spill)
        wrote_external = save_atomic(pruned, out, external=external or None)
    finally:
        if spill is not None:
            spill.close()
    if args.plan_out:
        write_text_atomic(args.plan_out, report.plan.to_json())
    return _finish(args, report, src, out, external, wrote_external, explain_nothing=True)


def cmd_sparsify(args: argparse.Namespace) -> int:
    from .io import check_writable, load_checked, save_atomic, write_text_atomic
    from .passes.options import Options
    from .pipeline import sparsify
    from .plan import Plan

    options = Options(sparsity=args.sparsity, pattern=args.pattern, method=args.method,
                      sparse_scope=args.scope, protect=args.protect, calib=args.calib,
                      calib_samples=args.calib_samples, holdout=args.holdout,
                      sequential=args.sequential, seed=args.seed,
                      input_sizes=_input_sizes(args.input_shape))
    src = Path(args.model)
    out = Path(args.output) if args.output else src.with_suffix(".sparse.onnx")
    base = Plan.load(args.base_plan) if args.base_plan else None
    keep = tuple(p for p in (args.calib, args.base_plan) if p)
    model, external = load_checked(src, out, keep=keep, report=args.report,
                                   plan=args.plan_out, html=args.html, map_external=True)
    if args.plan_out:
        check_writable(args.plan_out, "plan")
    spill = _spill(out) if external else None
    try:
        sparse, report = sparsify(model, options=options, base_plan=base,
                                  progress=_progress(args), spill=spill)
        wrote_external = save_atomic(sparse, out, external=external or None)
    finally:
        if spill is not None:
            spill.close()
    if args.plan_out:
        write_text_atomic(args.plan_out, report.plan.to_json())
    return _finish(args, report, src, out, external, wrote_external, explain_nothing=False)


def cmd_apply(args: argparse.Namespace) -> int:
    from .io import load_checked, save_atomic
    from .pipeline import apply_plan
    from .plan import Plan

    src = Path(args.model)
    out = Path(args.output) if args.output else src.with_suffix(".pruned.onnx")
    plan = Plan.load(args.plan)
    keep = tuple(p for p in (args.plan, args.calib) if p)
    model, external = load_checked(src, out, keep=keep, report=args.report, html=args.html,
                                   map_external=True)
    spill = _spill(out) if external else None
    try:
        pruned, report = apply_plan(model, plan, seed=args.seed,
                                    input_sizes=_input_sizes(args.input_shape),
                                    progress=_progress(args), spill=spill, inputs=args.inputs,
                                    calib=args.calib, calib_samples=args.calib_samples,
                                    holdout=args.holdout, recover=args.recover)
        wrote_external = save_atomic(pruned, out, external=external or None)
    finally:
        if spill is not None:
            spill.close()
    return _finish(args, report, src, out, external, wrote_external, explain_nothing=False)


def _finish(args: argparse.Namespace, report, src: Path, out: Path, external: bool,
            wrote_external: bool, *, explain_nothing: bool) -> int:
    """What compress and apply do once the model is written: sizes, report, summary."""
    from .io import file_size, write_text_atomic

    report.bytes_before = file_size(src, external)
    report.bytes_after = file_size(out, wrote_external)
    if args.report:
        write_text_atomic(args.report, report.to_json())
    if args.html:
        write_text_atomic(args.html, report.to_html(title=f"{src.name} → {out.name}"))
    if args.json:
        print(report.to_json())
        for w in report.warnings:  # the table shows them; JSON readers may not
            print(f"graphprune: warning: {w}", file=sys.stderr)
    elif not args.quiet:
        print(report.render(width=_width(args)))
        if explain_nothing and not report.groups.get("pruned"):
            print(_nothing_pruned(report))
        print(f"wrote {out}")
    return 0


def _spill(out: Path):
    """For an input with external data: a temporary file beside the output that takes the
    rewritten weights as they are made (removed when the run ends)."""
    from .external import Spill

    try:
        return Spill(out.absolute().parent)
    except OSError as exc:
        raise InputError(f"cannot write in {out.absolute().parent}: {exc.strerror or exc}"
                         ) from exc


def _nothing_pruned(report) -> str:
    """The note for a run that removed nothing: its output is the input model, unchanged."""
    if any(d.units_before > d.frozen for d in report.group_details):
        why = f"--ratio {report.ratio:g} removes no unit of any group"
    else:
        why = "no unit can be removed (all are frozen: `graphprune analyze` says why)"
    return f"nothing pruned: {why}; the output is the input model, unchanged"


def cmd_analyze(args: argparse.Namespace) -> int:
    from .pipeline import analyze

    result = analyze(args.model, options=_options(args))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not args.quiet:
        print(result.render(width=_width(args), limit=None if args.all else 40))
        found = result.to_dict()
        if "blocks" in found:
            _print_blocks(found["blocks"], found["joins"], args.all, _width(args))
    return 0


def _print_blocks(blocks: list[dict], joins: list[dict], everything: bool,
                  width: int | None) -> None:
    """analyze --scope blocks: every residual block, removable or why not; the joins (a
    table like the others: names and reasons wrap, nothing is cut)."""
    from .table import Column, paragraph, render, terminal_width

    width = terminal_width() if width == 0 else width
    ok = sum(1 for b in blocks if b["removable"])
    print(f"\nresidual blocks: {len(blocks)} found, {ok} removable")
    shown = blocks if everything else blocks[:40]
    rows = [(f"#{b['index']}", b["label"], str(b["params"]),
             "; ".join(b["reasons"]) or "removable") for b in shown]
    columns = (Column("block"), Column("label", flex=True), Column("params", ">"),
               Column("removable, or why not", flex=True, words=True))
    if rows:
        print("\n".join(render(columns, rows, width, indent=2)))
    if len(shown) < len(blocks):
        print(f"  ... {len(blocks) - len(shown)} more (--all)")
    for j in joins:
        print("\n".join(paragraph(f"  not a block: Add '{j['add']}': {j['reason']}", width)))


@functools.cache
def _freeze_imports() -> None:
    """What the imports made lives until the process ends: taken out of the collector's view
    once, full collections during a run need not walk it (a few % of a small model's run)."""
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    _freeze_imports()
    args = _parser().parse_args(argv)
    handler = {"compress": cmd_compress, "apply": cmd_apply, "sparsify": cmd_sparsify,
               "analyze": cmd_analyze}[args.command]
    try:
        return handler(args)
    except GraphpruneError as exc:
        _clear_progress(args)
        if args.verbose:
            traceback.print_exc()
        if exc.exit_code == 3:  # a stage failed unexpectedly (StageError names it): a bug
            print(f"graphprune: internal error: {one_line(exc)} (rerun with --verbose and "
                  "report it)", file=sys.stderr)
        else:
            print(f"graphprune: error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        _clear_progress(args)
        print("graphprune: interrupted; nothing was written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped reading (`| head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, exit 3
        _clear_progress(args)
        if args.verbose:
            traceback.print_exc()
        print(f"graphprune: internal error: {type(exc).__name__}: {one_line(exc)} "
              "(rerun with --verbose and report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
