"""How graphprune's time and memory grow with model size, on synthetic LLaMA decoders.

    python bench/bench_scale.py [--sizes tiny,small,medium] [--big] [--dir /tmp]
                                [--profile medium] [--timeout 1200] [--json results.json]

For each size (bench/make_synthetic_llama.py: tiny ~11M, small ~100M, medium ~290M
parameters; with --big also 1b, 1.03B parameters, 4.1 GB fp32) the model is written with
external data to a temporary directory, then each of these runs in a fresh subprocess:

- copy:     `shutil.copy` of the .onnx and its .data file (the baseline: the project's target
            is `compress` of the 1B model within 3x of this);
- analyze:  `graphprune analyze MODEL --quiet` through the CLI's `main`;
- compress: `graphprune compress MODEL --ratio 0.4 --report R.json --input-shape ...`
            (batch 1 x sequence 8 for the validation), through the CLI's `main`.

Each child reports its wall time (from process start, imports included) and its peak RSS
(VmHWM from /proc/self/status at exit); the parent also samples the child's RSS every 50 ms
(the memory timeline) and kills a child that passes --rss-limit or --timeout. In the compress
child, graphprune's stage functions are wrapped (no library code changes) to time them and
to place them on the memory timeline: load, shape inference and analysis, scoring, rewrite,
serialize, checker, the two onnxruntime sessions, the exact check, MAC counting, save.

`--profile SIZE` then runs that size's compress once more under cProfile (top functions),
and under tracemalloc (Python-visible allocations: numpy, bytes; protobuf's C++/upb arena and
onnxruntime's allocations do not show there, so RSS minus tracemalloc is their share), and
prints `python -X importtime` for the CLI's imports.

All reads hit the page cache (the model was just written; `sync` runs before each step), so
the copy is a memory-to-memory copy plus writeback: a fair, strict baseline for a tool that
must read and write the same bytes. Prints numbers; asserts nothing. Targets the project
tracks are printed beside them (1B: compress <= 3x copy, peak RSS < 1.5 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import common  # noqa: E402
import make_synthetic_llama as msl  # noqa: E402

TARGET_RATIO = 3.0
TARGET_RSS_MB = 1500.0
DEFAULT_SIZES = ("tiny", "small", "medium")


# == child side ===============================================================================
def _status_kib(field: str) -> int:
    return common.status_kib(field) or 0


class _Phases:
    """Wraps module-level functions to record (name, start, end, RSS) per call."""

    def __init__(self, trace_python: bool = False, events: str | None = None) -> None:
        self.records: list[dict] = []
        self.depth = 0
        self.trace_python = trace_python
        # one JSON line per stage start and end, flushed at once: a child killed for its
        # memory or time still shows which stages finished and where it was
        self.events = open(events, "a", encoding="utf-8") if events else None  # noqa: SIM115

    def event(self, rec: dict) -> None:
        if self.events is not None:
            self.events.write(json.dumps(rec) + "\n")
            self.events.flush()

    def wrap(self, module, attr: str, label: str | None = None) -> None:
        fn = getattr(module, attr)
        name = label or attr
        phases = self

        def wrapped(*args, **kwargs):
            rec = {"name": name, "depth": phases.depth, "t0": time.time(),
                   "rss0": _status_kib("VmRSS") / 1024}
            if phases.trace_python:
                import tracemalloc

                rec["py0"] = tracemalloc.get_traced_memory()[0] / 2**20
            phases.event({"ev": "start", **rec})
            phases.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                phases.depth -= 1
                rec.update(t1=time.time(), rss1=_status_kib("VmRSS") / 1024,
                           hwm1=_status_kib("VmHWM") / 1024)
                if phases.trace_python:
                    import tracemalloc

                    cur, peak = tracemalloc.get_traced_memory()
                    rec.update(py1=cur / 2**20, py_peak=peak / 2**20)
                phases.records.append(rec)
                phases.event({"ev": "end", **rec})

        wrapped.__wrapped__ = fn
        setattr(module, attr, wrapped)


def _instrument(phases: _Phases) -> None:
    from graphprune.passes import rewrite, scoring, stages, targets, validation

    import graphprune.io as gio
    from graphprune import external, pipeline

    for mod, attr, label in [
        (gio, "load_checked", "load (parse + external data)"),
        (gio, "save_atomic", "save_atomic"),
        (gio, "file_size", "file_size"),
        (pipeline, "load", "load"),
        (stages, "Graph", "Graph (index + shape inference)"),
        (stages, "analyze_graph", "analyze_graph"),
        (scoring, "score_units", "score_units"),
        (targets, "select", "select"),
        (rewrite, "prune_model", "rewrite.prune_model"),
        (rewrite, "mask_overrides", "rewrite.mask_overrides"),
        (rewrite, "masked_model", "rewrite.masked_model"),
        (external, "serialize", "external.serialize"),
        (validation, "structural_check", "onnx.checker (full_check)"),
        (validation, "session", "ort session"),
        (validation, "exact_check", "exact_check (2 runs x 2 sessions)"),
        (pipeline, "count_params", "count_params"),
        (pipeline, "count_macs", "count_macs"),
        (pipeline, "make_plan", "make_plan"),
    ]:
        phases.wrap(mod, attr, label)


def child(args: argparse.Namespace) -> int:
    t_start = time.time()
    out: dict = {"step": args.step, "t_start": t_start}
    phases = _Phases(trace_python=args.tracemalloc, events=args.events)
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(1)
    if args.step == "copy":
        src = Path(args.model)
        dst = Path(args.out)
        t = time.time()
        for s in (src, src.with_name(src.name + ".data")):
            shutil.copy(s, dst.with_name(dst.name + s.name[len(src.name):]))
        out["work_s"] = time.time() - t
        rc = 0
    else:
        from graphprune import cli

        out["import_s"] = time.time() - t_start
        out["rss_after_import_mb"] = _status_kib("VmRSS") / 1024
        if args.step == "compress":
            _instrument(phases)
            argv = ["compress", args.model, "-o", args.out, "--ratio", str(args.ratio),
                    "--quiet", "--report", args.report, *(f"--input-shape={s}"
                                                          for s in args.input_shape)]
        else:
            argv = ["analyze", args.model, "--quiet"]
        profiler = None
        if args.cprofile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        t = time.time()
        rc = cli.main(argv)
        out["work_s"] = time.time() - t
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.cprofile)
    out.update(rc=rc, wall_s=time.time() - t_start, peak_rss_mb=_status_kib("VmHWM") / 1024,
               maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               phases=phases.records)
    if args.tracemalloc:
        import tracemalloc

        out["py_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    Path(args.result).write_text(json.dumps(out))
    return 0


# == parent side ==============================================================================
def _mem_total_mb() -> float:
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_child(step: str, model: Path, work: Path, *, timeout: float, rss_limit_mb: float,
              extra: list[str] | None = None, python_flags: list[str] | None = None) -> dict:
    """Run one step in a fresh interpreter, sampling its RSS; returns the child's report plus
    the sampled timeline (t, rss_mb)."""
    result = work / f"{step}.result.json"
    events = work / f"{step}.events.jsonl"
    result.unlink(missing_ok=True)
    events.unlink(missing_ok=True)
    out = work / f"{model.stem}.{step}.out.onnx"
    cmd = [sys.executable, *(python_flags or []), str(Path(__file__).resolve()), "_child",
           "--step", step, "--model", str(model), "--out", str(out),
           "--report", str(work / f"{step}.report.json"), "--result", str(result),
           "--events", str(events), *(extra or [])]
    os.sync()
    samples: list[tuple[float, float]] = []
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    killed = None
    errs: list[str] = []
    reader = threading.Thread(target=lambda: errs.append(proc.stderr.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        rss = _rss_mb(proc.pid)
        now = time.time()
        if rss is not None:
            samples.append((now, rss))
            if rss > rss_limit_mb:
                killed = f"killed: RSS {rss:.0f} MB over the {rss_limit_mb:.0f} MB limit"
        if now - t0 > timeout:
            killed = f"killed: over the {timeout:.0f} s limit"
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.05)
    proc.stdout.read()
    reader.join(timeout=5)
    wall = time.time() - t0
    rep: dict = {"step": step, "parent_wall_s": wall, "samples": samples,
                 "sampled_peak_mb": max((r for _, r in samples), default=0.0)}
    if result.exists():
        rep.update(json.loads(result.read_text()))
    else:
        why = "".join(errs).strip()[-800:]
        if proc.returncode == -signal.SIGKILL and not killed:
            why = ("SIGKILL from outside (on Linux most likely the kernel's OOM killer: see "
                   f"dmesg); last sampled RSS {samples[-1][1] if samples else 0:.0f} MB")
        rep["error"] = killed or f"exit {proc.returncode}: {why}"
        rep.update(_from_events(events, t0))
    if rep.get("rc"):
        rep["error"] = f"graphprune exit {rep['rc']}: {''.join(errs).strip()[-800:]}"
    report = work / f"{step}.report.json"
    if step == "compress" and report.exists():
        rep["report"] = json.loads(report.read_text())
    for f in (out, out.with_name(out.name + ".data"), report, result, events):
        f.unlink(missing_ok=True)
    return rep


def _from_events(events: Path, t0: float) -> dict:
    """What a killed child got through: finished stages, and the ones it was inside."""
    if not events.exists():
        return {}
    done, open_ = [], {}
    for line in events.read_text().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        key = (ev["name"], ev["t0"])
        if ev.pop("ev") == "start":
            open_[key] = ev
        else:
            open_.pop(key, None)
            done.append(ev)
    inside = [f"{e['name']} (from {e['t0'] - t0:.0f} s)" for e in open_.values()]
    return {"t_start": t0, "phases": done, "killed_inside": inside}


def _phase_rows(rep: dict) -> list[list]:
    """Top-level and nested stage calls with duration, RSS at the end and the sampled peak."""
    rows = []
    t_start = rep.get("t_start", 0.0)
    samples = rep.get("samples", [])
    for ph in sorted(rep.get("phases", []), key=lambda p: p["t0"]):
        inside = [r for t, r in samples if ph["t0"] <= t <= ph["t1"]]
        peak = max(inside, default=max(ph["rss0"], ph["rss1"]))
        row = ["  " * ph["depth"] + ph["name"], f"{ph['t0'] - t_start:.1f}",
               f"{ph['t1'] - ph['t0']:.2f}", f"{ph['rss0']:.0f}", f"{ph['rss1']:.0f}",
               f"{peak:.0f}", f"{ph['hwm1']:.0f}"]
        if "py_peak" in ph:
            row.append(f"{ph['py1']:.0f}")
        rows.append(row)
    return rows


def print_phases(label: str, rep: dict) -> None:
    rows = _phase_rows(rep)
    if rep.get("killed_inside"):
        print(f"\n{label}: {rep.get('error')}; it was inside: "
              + "; ".join(rep["killed_inside"]))
    if not rows:
        return
    headers = ["stage (nested = called inside)", "start s", "dur s", "RSS in MB", "RSS out MB",
               "sampled peak MB", "VmHWM after MB"]
    if len(rows[0]) > len(headers):
        headers.append("py alloc out MB")
    imp = (f"import {rep['import_s']:.1f} s, RSS after import {rep['rss_after_import_mb']:.0f} MB"
           if "import_s" in rep else "stages that finished before the child was killed")
    print(f"\n{label}: compress stages on the memory timeline (t=0 at process start; {imp})")
    print(common.table(headers, rows))


def _fmt_s(rep: dict) -> str:
    if rep.get("error"):
        return f">{rep['parent_wall_s']:.0f} (killed)" if "killed" in rep["error"] else "FAIL"
    return f"{rep['wall_s']:.2f}"


def _rss(rep: dict) -> str:
    """VmHWM; for a killed child the sampled peak, as a lower bound."""
    if "peak_rss_mb" in rep:
        return f"{rep['peak_rss_mb']:.0f}"
    return f">{rep.get('sampled_peak_mb', 0):.0f}"


def bench_size(name: str, base: Path, args: argparse.Namespace) -> dict:
    cfg = msl.SIZES[name]
    work = base / name
    work.mkdir(parents=True, exist_ok=True)
    model = work / f"llama_{name}.onnx"
    t = time.time()
    info = msl.build(cfg, model, seed=0)
    build_s = time.time() - t
    size_b = model.stat().st_size + model.with_name(model.name + ".data").stat().st_size
    print(f"\n== {name}: {info['params'] / 1e6:.1f}M params, {info['nodes']} nodes, "
          f"{size_b / 1e9:.2f} GB, built in {build_s:.1f} s", flush=True)
    res: dict = {"size": name, "params": info["params"], "nodes": info["nodes"],
                 "file_bytes": size_b, "build_s": build_s, "config": cfg.__dict__}
    shapes = [f"--input-shape={s}" for s in msl.input_shape_args(cfg, 1, args.seq)]
    kw = {"timeout": args.timeout, "rss_limit_mb": args.rss_limit_mb}
    for step, extra in (("copy", []), ("analyze", []),
                        ("compress", ["--ratio", str(args.ratio), *shapes])):
        rep = run_child(step, model, work, extra=extra, **kw)
        res[step] = rep
        msg = rep.get("error") or (f"{rep['wall_s']:.2f} s (work {rep['work_s']:.2f} s), "
                                   f"peak RSS {rep['peak_rss_mb']:.0f} MB")
        print(f"  {step:<9} {msg}", flush=True)
    rep = res["compress"].get("report")
    if rep:
        ok = rep["exact_check"]["passed"]
        print(f"  compress: params {rep['params_before']:,} -> {rep['params_after']:,}, exact "
              f"check {'passed' if ok else 'FAILED'} (max abs err "
              f"{rep['exact_check']['max_abs_err']:.1e}); timings {rep['timings']}")
    if args.phases:
        print_phases(name, res["compress"])
    if args.profile == name:
        res["profile"] = profile(model, work, cfg, args)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return res


def profile(model: Path, work: Path, cfg, args: argparse.Namespace) -> dict:
    import pstats

    shapes = [f"--input-shape={s}" for s in msl.input_shape_args(cfg, 1, args.seq)]
    kw = {"timeout": args.timeout, "rss_limit_mb": args.rss_limit_mb}
    prof = work / "compress.pstats"
    print(f"\n-- profile ({model.name}): cProfile of compress, top 30 by cumulative time")
    rep = run_child("compress", model, work, extra=["--ratio", str(args.ratio), *shapes,
                                                    "--cprofile", str(prof)], **kw)
    out: dict = {"cprofile_wall_s": rep.get("wall_s")}
    if prof.exists():
        st = pstats.Stats(str(prof))
        st.sort_stats("cumulative").print_stats(30)
        print("-- top 20 by own time")
        st.sort_stats("tottime").print_stats(20)
    print("\n-- tracemalloc (Python-visible allocations) along the stages")
    rep = run_child("compress", model, work, extra=["--ratio", str(args.ratio), *shapes,
                                                    "--tracemalloc"], **kw)
    out["tracemalloc_peak_mb"] = rep.get("py_peak_mb")
    out["tracemalloc_rss_peak_mb"] = rep.get("peak_rss_mb")
    print(f"python-visible peak {rep.get('py_peak_mb', 0):.0f} MB vs RSS peak "
          f"{rep.get('peak_rss_mb', 0):.0f} MB (slowed by tracing: {rep.get('wall_s', 0):.1f} s)")
    print_phases(f"{model.stem} (tracemalloc)", rep)
    print("\n-- python -X importtime: graphprune CLI imports (cumulative us, top 12)")
    r = subprocess.run([sys.executable, "-X", "importtime", "-c",
                        "import graphprune.cli, graphprune.pipeline"],
                       capture_output=True, text=True)
    rows = []
    for line in r.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    rows.sort(reverse=True)
    for cum, mod in rows[:12]:
        print(f"{cum / 1e6:8.2f} s  {mod}")
    out["import_top"] = rows[:12]
    return out


def summary(results: list[dict]) -> None:
    rows, stage_rows = [], []
    for r in results:
        c, a, cp = r["copy"], r["analyze"], r["compress"]
        ratio = (cp["wall_s"] / c["wall_s"] if not (cp.get("error") or c.get("error"))
                 else float("nan"))
        cp_rss = _rss(cp)
        rows.append([r["size"], f"{r['params'] / 1e6:.1f}M", f"{r['file_bytes'] / 1e9:.3f}",
                     _fmt_s(c), _fmt_s(a), _fmt_s(cp),
                     "-" if ratio != ratio else f"{ratio:.1f}x", _rss(a), cp_rss,
                     f"{float(cp_rss.lstrip('>')) / (r['file_bytes'] / 2**20):.1f}x"])
        rep = cp.get("report") or {}
        t = rep.get("timings", {})
        load = sum(p["t1"] - p["t0"] for p in cp.get("phases", [])
                   if p["name"].startswith("load (") and p["depth"] == 0)
        save = sum(p["t1"] - p["t0"] for p in cp.get("phases", [])
                   if p["name"] == "save_atomic" and p["depth"] == 0)
        keys = ("analysis", "scoring", "selection", "rewrite", "validation", "report")
        if cp.get("error"):  # killed: its finished stages are on the timeline above
            stage_rows.append([r["size"], "-", f"{load:.2f}" if load else "-",
                               *("-" for _ in keys), "-"])
            continue
        stage_rows.append([r["size"], f"{cp.get('import_s', 0):.2f}", f"{load:.2f}",
                           *(f"{t.get(k, 0):.2f}" for k in keys), f"{save:.2f}"])
    print("\n## Scale summary (wall s per fresh process, imports included; RSS = VmHWM)\n")
    print(common.table(["size", "params", "file GB", "copy s", "analyze s", "compress s",
                        "compress ÷ copy", "analyze RSS MB", "compress RSS MB",
                        "RSS ÷ file"], rows))
    print("\ncompress stages (s): import and load/save from the CLI; the rest from the "
          "report's `timings`\n")
    print(common.table(["size", "import", "load", "analysis", "scoring", "selection",
                        "rewrite", "validation", "report", "save"], stage_rows))
    ok = [r for r in results if not r["compress"].get("error")]
    if len(ok) >= 2:
        print("\nlinearity: seconds and MB per million parameters (flat = linear)\n")
        lin = []
        base_rss = min(r["compress"].get("rss_after_import_mb", 0) for r in ok)
        for r in ok:
            m = r["params"] / 1e6
            cp = r["compress"]
            lin.append([r["size"], f"{(cp['wall_s'] - cp.get('import_s', 0)) / m * 1e3:.1f}",
                        f"{r['copy']['wall_s'] / m * 1e3:.2f}",
                        f"{r['analyze']['wall_s'] / m * 1e3:.1f}",
                        f"{(cp['peak_rss_mb'] - base_rss) / m:.1f}"])
        print(common.table(["size", "compress ms/Mparam (no import)", "copy ms/Mparam",
                            "analyze ms/Mparam", "compress (peak RSS - import RSS) MB/Mparam"],
                           lin))
    big = next((r for r in results if r["size"] == "1b"), None)
    if big is not None:
        cp = big["compress"]
        if cp.get("error"):
            print(f"\ntargets (1b): compress did not finish: {cp['error']}")
        else:
            ratio = cp["wall_s"] / big["copy"]["wall_s"]
            print(f"\ntargets (1b): compress ÷ copy {ratio:.1f}x (target <= {TARGET_RATIO:.0f}x: "
                  f"{'met' if ratio <= TARGET_RATIO else 'NOT met'}); peak RSS "
                  f"{cp['peak_rss_mb']:.0f} MB (target < {TARGET_RSS_MB:.0f} MB: "
                  f"{'met' if cp['peak_rss_mb'] < TARGET_RSS_MB else 'NOT met'})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("--step", required=True, choices=["copy", "analyze", "compress"])
        for opt in ("--model", "--out", "--report", "--result"):
            ap.add_argument(opt, required=True)
        ap.add_argument("--ratio", type=float, default=0.4)
        ap.add_argument("--input-shape", action="append", default=[])
        ap.add_argument("--cprofile")
        ap.add_argument("--tracemalloc", action="store_true")
        ap.add_argument("--events")
        return child(ap.parse_args(argv[1:]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(DEFAULT_SIZES),
                    help=f"comma-separated, of {', '.join(msl.SIZES)} (default tiny,small,medium)")
    ap.add_argument("--big", action="store_true", help="also the 1b model (4.1 GB on disk)")
    ap.add_argument("--dir", default=None, help="where the temporary models go (default: $TMPDIR)")
    ap.add_argument("--ratio", type=float, default=0.4)
    ap.add_argument("--seq", type=int, default=8, help="validation sequence length (default 8)")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per subprocess")
    ap.add_argument("--rss-limit-mb", type=float, default=None,
                    help="kill a child above this RSS (default 75%% of RAM)")
    ap.add_argument("--phases", action=argparse.BooleanOptionalAction, default=True,
                    help="print each size's compress stages on the memory timeline")
    ap.add_argument("--profile", metavar="SIZE", help="cProfile + tracemalloc + importtime "
                    "of this size's compress")
    ap.add_argument("--keep", action="store_true", help="keep the models")
    ap.add_argument("--json", help="write all results here")
    args = ap.parse_args(argv)
    args.rss_limit_mb = args.rss_limit_mb or 0.75 * _mem_total_mb()
    sizes = [s for s in args.sizes.split(",") if s]
    if args.big and "1b" not in sizes:
        sizes.append("1b")
    unknown = [s for s in sizes if s not in msl.SIZES]
    if unknown:
        ap.error(f"unknown sizes {unknown}")
    base = Path(tempfile.mkdtemp(prefix="graphprune_scale_", dir=args.dir))
    print(common.machine())
    print(f"models in {base}; RSS limit {args.rss_limit_mb:.0f} MB; timeout {args.timeout:.0f} s")
    results = []
    try:
        for name in sizes:
            cfg = msl.SIZES[name]
            need = cfg.params() * 4 * 2.8  # model + copy + pruned output, with margin
            free = shutil.disk_usage(base).free
            if free < need:
                print(f"\n== {name}: skipped, {free / 1e9:.1f} GB free < {need / 1e9:.1f} GB")
                continue
            results.append(bench_size(name, base, args))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    summary(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
