"""`graphprune` command line: a thin layer over the Python API.

Exit codes: 0 success, 1 the exact check failed (nothing written), 2 bad input or usage,
3 internal error (a bug: rerun with --verbose and report it).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import sys
import traceback
from pathlib import Path

from .errors import GraphpruneError, InputError, one_line
from .version import __version__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="graphprune",
        description="Structured pruning for ONNX graphs, proven exact with onnxruntime.")
    p.add_argument("--version", action="version", version=f"graphprune {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="prune a model and write a smaller dense ONNX file")
    c.add_argument("model", help="input .onnx file (never modified)")
    c.add_argument("-o", "--output", help="output path (default: <model>.pruned.onnx)")
    c.add_argument("--ratio", type=float, default=0.4,
                   help="fraction of each prunable group's units to remove (default 0.4)")
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
    c.add_argument("--calib", metavar="NPZ",
                   help="calibration inputs: one array per graph input, samples on axis 0 "
                        "(default: generated inputs)")
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
    c.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="keep unit counts at multiples of N where a group is large enough")
    c.add_argument("--rounding", choices=("down", "up"), default="down",
                   help="ratio of n units (a group's; all candidates' under global or "
                        "sensitivity allocation): down removes floor(ratio*n), never more than "
                        "asked (default); up removes ceil(ratio*n), as Torch-Pruning")
    c.add_argument("--protect", metavar="REGEX", help="keep groups touching matching node names")
    c.add_argument("--input-shape", action="append", default=[], metavar="NAME:1x3x224x224",
                   help="concrete shape for a dynamic input during validation (repeatable)")
    c.add_argument("--scope", default="channels,heads,ffn", metavar="KINDS",
                   help="unit kinds to prune, comma-separated: channels, heads, ffn, hidden "
                        "(hidden = residual width through LayerNorm/RMSNorm: inexact, opt-in; "
                        "default channels,heads,ffn)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--report", metavar="JSON", help="write the report as JSON here")
    _html_flag(c)
    _io_flag(c)
    _common(c)

    ap = sub.add_parser("apply", help="apply a saved plan (--plan-out) to its model")
    ap.add_argument("model", help="input .onnx file (never modified)")
    ap.add_argument("plan", help="plan JSON written by `compress --plan-out`")
    ap.add_argument("-o", "--output", help="output path (default: <model>.pruned.onnx)")
    ap.add_argument("--input-shape", action="append", default=[], metavar="NAME:1x3x224x224",
                    help="concrete shape for a dynamic input during validation (repeatable)")
    ap.add_argument("--calib", metavar="NPZ",
                    help="calibration inputs to re-run the plan's recovery on (a plan that "
                         "recovers weights needs them)")
    ap.add_argument("--calib-samples", type=int, default=32, metavar="N",
                    help="calibration samples to use (default 32)")
    _recover_flags(ap, apply=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", metavar="JSON", help="write the report as JSON here")
    _html_flag(ap)
    _common(ap)

    a = sub.add_parser("analyze", help="print the coupled groups and what blocks pruning")
    a.add_argument("model")
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


def _html_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--html", metavar="HTML",
                   help="write the report as one self-contained HTML page here (summary, "
                        "widths per group, sensitivity curves, groups and why they froze)")


def _io_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-io-change", action="store_true",
                   help="let graph inputs and outputs that carry state (a KV cache's past and "
                        "present key/values) shrink along static unit axes (heads); the "
                        "report lists the new shapes")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON to stdout")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")


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


def _options(args: argparse.Namespace):
    """The run's options, made (and validated) once from the flags."""
    from .passes.options import Options

    return Options(
        ratio=args.ratio, criterion=args.criterion, aggregate=args.aggregate,
        normalize=args.normalize, allocation=args.allocation,
        max_group_ratio=args.max_group_ratio, round_to=args.round_to, rounding=args.rounding,
        protect=args.protect, scope=args.scope, seed=args.seed,
        allow_io_change=args.allow_io_change, target_macs=args.target_macs,
        target_params=args.target_params, target_latency=args.target_latency,
        calib=args.calib, calib_samples=args.calib_samples,
        input_sizes=_input_sizes(args.input_shape), recover=args.recover,
        refit_order=args.refit_order, recover_budget_mb=args.recover_budget,
        holdout=args.holdout)


def _progress(args: argparse.Namespace):
    """Progress lines on stderr, unless the output is JSON or quiet."""
    return None if args.quiet or args.json else (lambda m: print(f"… {m}", file=sys.stderr))


def cmd_compress(args: argparse.Namespace) -> int:
    from .io import check_writable, load_checked, save_atomic, write_text_atomic
    from .pipeline import compress

    options = _options(args)
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


def cmd_apply(args: argparse.Namespace) -> int:
    from .io import load_checked, save_atomic
    from .pipeline import apply_plan
    from .plan import Plan

    src = Path(args.model)
    out = Path(args.output) if args.output else src.with_suffix(".pruned.onnx")
    plan = Plan.load(args.plan)
    model, external = load_checked(src, out, keep=(args.plan,), report=args.report,
                                   html=args.html, map_external=True)
    spill = _spill(out) if external else None
    try:
        pruned, report = apply_plan(model, plan, seed=args.seed,
                                    input_sizes=_input_sizes(args.input_shape),
                                    progress=_progress(args), spill=spill, calib=args.calib,
                                    calib_samples=args.calib_samples, holdout=args.holdout,
                                    recover=args.recover)
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
    elif not args.quiet:
        print(report.render())
        if explain_nothing and not report.groups.get("pruned"):
            print(_nothing_pruned(report))
        print(f"wrote {out}")
    return 0


def _spill(out: Path):
    """For an input with external data: a temporary file beside the output that takes the
    rewritten weights as they are made (removed when the run ends)."""
    from .passes.rewrite import Spill

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

    result = analyze(args.model, allow_io_change=args.allow_io_change).to_dict()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if args.quiet:
        return 0
    groups = result["groups"]
    shown = groups if args.all else groups[:40]
    print(f"{'group':<44}{'units':>6}{'prunable':>9}  frozen because")
    for g in shown:
        why = "; ".join(g["frozen_reasons"][:2]) or "-"
        print(f"{g['name'][:44]:<44}{g['units']:>6}{g['prunable']:>9}  {why[:90]}")
    if len(shown) < len(groups):
        print(f"... {len(groups) - len(shown)} more groups (--all)")
    s = result["summary"]
    print(f"{s['total']} groups, {s['prunable']} prunable; "
          f"{s['prunable_units']} of {s['units']} units prunable")
    if result["blockers"]:
        print("blockers (ops without a rule): "
              + ", ".join(f"{k} ×{v}" for k, v in sorted(result["blockers"].items())))
    return 0


@functools.cache
def _freeze_imports() -> None:
    """What the imports made lives until the process ends: taken out of the collector's view
    once, full collections during a run need not walk it (a few % of a small model's run)."""
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    _freeze_imports()
    args = _parser().parse_args(argv)
    handler = {"compress": cmd_compress, "apply": cmd_apply,
               "analyze": cmd_analyze}[args.command]
    try:
        return handler(args)
    except GraphpruneError as exc:
        if args.verbose:
            traceback.print_exc()
        if exc.exit_code == 3:  # a stage failed unexpectedly (StageError names it): a bug
            print(f"graphprune: internal error: {one_line(exc)} (rerun with --verbose and "
                  "report it)", file=sys.stderr)
        else:
            print(f"graphprune: error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("graphprune: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, exit 3
        if args.verbose:
            traceback.print_exc()
        print(f"graphprune: internal error: {type(exc).__name__}: {one_line(exc)} "
              "(rerun with --verbose and report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
