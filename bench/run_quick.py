"""Run the quick tier of every benchmark in bench/, each in its own subprocess, and summarise.

    python bench/run_quick.py [--only NAME ...] [--timeout 300] [--list]

Every `bench/bench_*.py` runs with its quick arguments: those listed in QUICK_ARGS below, or
`--quick` when the script's source mentions that flag. A script with neither is listed as
skipped (give it a `--quick` mode to include it). The 1B-parameter tier is never run here
(bench_scale.py runs without --big, on its tiny size only). Each script's own output is
printed as it finishes; the summary gives exit status, wall seconds and the peak RSS of the
script's largest process (the script or one of its workers).
The whole tier is meant to finish in under 10 minutes on the 2-CPU development machine (the
exports it needs are cached in ~/.cache/graphprune-bench after the first run).
Asserts nothing: a failed script shows as failed, and the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

# script -> quick arguments (for scripts without a --quick flag of their own)
QUICK_ARGS: dict[str, list[str]] = {
    "bench_compress.py": ["--repeat", "1"],
    "bench_minilm.py": ["--exporter", "torchscript", "--scope", "heads,ffn", "--ratios", "0.4"],
    "bench_transformer_speed.py": ["--model", "bert_base", "--exporter", "torchscript",
                                   "--repeat", "1"],
    "bench_criteria_digits.py": ["--criteria", "l1", "taylor", "--allocations", "uniform",
                                 "--targets", "0.6", "--epochs", "10", "--json",
                                 os.devnull],
    "bench_scale.py": ["--sizes", "tiny", "--no-phases"],
    "bench_families.py": ["--family", "qwen2", "--family", "bloom", "--exporter", "dynamo"],
    "bench_session_memory.py": ["--mb", "30"],
    "bench_torch.py": ["digits", "--targets", "0.4", "--epochs", "1", "--methods",
                       "gp taylor+cubic", "gp l1 one-shot"],
}
# scripts or flags of the 1B-parameter tier: never part of the quick run
BIG_TIER = re.compile(r"(^|_)(1b|billion)(_|\.|$)", re.I)
ORDER = ("bench_compress.py", "bench_latency.py", "bench_peers.py")
PEAK = "@@PEAK_RSS_KIB"


def plan() -> list[tuple[str, list[str] | None, str]]:
    """(script, args or None when skipped, why)."""
    out = []
    scripts = sorted(HERE.glob("bench_*.py"),
                     key=lambda p: (ORDER.index(p.name) if p.name in ORDER else len(ORDER),
                                    p.name))
    for path in scripts:
        name = path.name
        if BIG_TIER.search(name):
            out.append((name, None, "1B tier: not part of the quick run"))
        elif name in QUICK_ARGS:
            out.append((name, QUICK_ARGS[name], ""))
        elif "--quick" in path.read_text(encoding="utf-8", errors="replace"):
            out.append((name, ["--quick"], ""))
        else:
            out.append((name, None, "no quick mode (add --quick or an entry in QUICK_ARGS)"))
    return out


def run_one(name: str, args: list[str], timeout: float) -> tuple[str, float, float | None]:
    """Run a script, stream nothing, print its output after; (status, seconds, peak MiB)."""
    # a small parent per script, so that RUSAGE_CHILDREN covers this script's processes only
    wrapper = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
               "print(PEAK, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
               "sys.exit(rc)").replace("PEAK", repr(PEAK))
    cmd = [sys.executable, "-c", wrapper, sys.executable, str(HERE / name), *args]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=common.ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        status = f"timed out ({timeout:.0f} s)"
    secs = time.perf_counter() - t
    peak = None
    lines = []
    for line in out.splitlines():
        if line.startswith(PEAK):
            peak = int(line.split()[1]) / 1024.0
        else:
            lines.append(line)
    print(f"\n===== {name} {' '.join(args)}  [{status}, {secs:.0f} s]")
    print("\n".join(lines).rstrip())
    sys.stdout.flush()
    return status, secs, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", help="run only these scripts (repeatable)")
    ap.add_argument("--timeout", type=float, default=300, help="per script, seconds")
    ap.add_argument("--list", action="store_true", help="print the plan and exit")
    args = ap.parse_args()
    steps = plan()
    if args.only:
        want = {n if n.endswith(".py") else n + ".py" for n in args.only}
        steps = [s for s in steps if s[0] in want]
    if args.list:
        for name, a, why in steps:
            print(f"{name:<30} {' '.join(a) if a is not None else 'skipped: ' + why}")
        return
    print(common.machine())
    t0 = time.perf_counter()
    rows = []
    failed = False
    for name, a, why in steps:
        if a is None:
            rows.append([name, "-", f"skipped: {why}", "-", "-"])
            continue
        status, secs, peak = run_one(name, a, args.timeout)
        rows.append([name, " ".join(a), status, f"{secs:.0f}",
                     f"{peak:.0f}" if peak is not None else "-"])
        failed |= status != "ok"
    print("\n===== summary")
    print(common.table(["script", "quick args", "status", "wall s", "peak RSS MiB"], rows))
    print(f"total {time.perf_counter() - t0:.0f} s")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
