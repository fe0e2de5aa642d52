"""Terminal output people can act on: help with examples, tables that wrap without cutting a
name or a reason, reasons in plain words with the flag that lifts them, `analyze` previews
of compress's options, and a progress bar on a terminal only."""

from __future__ import annotations

import argparse
import io
import json
import os
import pty
import re
import select
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zoo

from graphprune import cli, reasons, table
from graphprune.context import RunContext, Step
from models.export import export_spec

EXE = Path(sys.executable).parent / "graphprune"


def run(*args, cwd: Path, columns: int | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONWARNINGS"] = "ignore"
    if columns:
        env["COLUMNS"] = str(columns)
    return subprocess.run([str(EXE), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory) -> Path:
    """Hugging Face BERT: long module names (model.encoder.layer.0.attention.output.dense)."""
    return export_spec("hf_bert", tmp_path_factory.mktemp("hf") / "bert.onnx", "torchscript")


# -- help ---------------------------------------------------------------------------------------
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_option_has_help_and_every_command_examples():
    parser = cli._parser()
    commands = _subparsers(parser)
    assert set(commands) == {"compress", "apply", "analyze", "sparsify"}
    for p in (parser, *commands.values()):
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and len(action.help) > 10, (p.prog, action.dest)
    for name, p in commands.items():
        text = p.format_help()
        tail = text.split("\nexamples:\n")
        assert len(tail) == 2, f"{name} --help has no examples"
        examples = [ln.strip() for ln in tail[1].splitlines() if ln.strip()]
        assert 2 <= len(examples) <= 3 and all(
            ex.startswith(f"graphprune {name} ") for ex in examples), examples
        for ex in examples:  # the examples parse
            args = parser.parse_args(shlex.split(ex)[1:])
            assert args.command == name


# -- tables ------------------------------------------------------------------------------------
def test_wrapping_never_cuts():
    cols = (table.Column("name", flex=True), table.Column("n", ">"),
            table.Column("why", flex=True, words=True))
    name = "model.encoder.layer.11.attention.self.query_key_value_projection"
    why = "frozen by LayerNormalization over the hidden size; `--scope hidden` prunes it"
    for width in (30, 40, 60, 100):
        lines = table.render(cols, [(name, "12", why)], width)
        assert all(len(ln) <= width for ln in lines), (width, lines)
        flat = "".join(ln.strip() for ln in lines)
        assert name in flat.replace(" ", "") or name in "".join(
            ln.split()[0] for ln in lines[1:] if not ln.startswith(" "))
        assert " ".join(" ".join(lines).split()).count("`--scope hidden`") == 1
    assert table.render(cols, [(name, "12", why)], None)[1].split()[0] == name  # --wide


def _rows(stdout: str) -> list[tuple[str, str]]:
    """(name, reasons) per row of `analyze`'s table, its wrapped pieces put together."""
    lines = stdout.splitlines()
    kind_at = lines[0].index("kind")
    rows: list[list[str]] = []
    for ln in lines[1:]:
        if re.match(r"^\d+ groups", ln):
            break
        if ln.startswith("    "):  # a reason under its row
            rows[-1][1] += " " + ln.strip()
        elif ln[kind_at:].strip():  # a new row
            rows.append([ln[:kind_at].strip(), ""])
        else:  # the name goes on
            rows[-1][0] += ln[:kind_at].strip()
    return [(n, " ".join(w.split())) for n, w in rows]


def test_analyze_at_60_columns_keeps_whole_names_and_reasons(hf_bert, tmp_path):
    narrow = run("analyze", hf_bert, cwd=tmp_path, columns=60)
    assert narrow.returncode == 0, narrow.stderr
    assert all(len(ln) <= 60 for ln in narrow.stdout.splitlines()), narrow.stdout
    names = [g["name"] for g in json.loads(run("analyze", hf_bert, "--json",
                                                cwd=tmp_path).stdout)["groups"]]
    assert max(len(n) for n in names) > 40  # long enough to need wrapping
    rows = _rows(narrow.stdout)
    assert [n for n, _ in rows] == names
    assert any("`--scope hidden` prunes them, inexactly" in w for _, w in rows), rows
    assert any("reaches graph output" in w for _, w in rows)
    wide = run("analyze", hf_bert, "--wide", cwd=tmp_path, columns=60)
    assert any(len(ln) > 60 for ln in wide.stdout.splitlines())
    assert [ln.split()[0] for ln in wide.stdout.splitlines()[1:len(names) + 1]] == names
    assert "frozen by LayerNormalization at /" in wide.stdout  # --wide: with their node


def test_compress_report_at_60_columns(hf_bert, tmp_path):
    r = run("compress", hf_bert, "-o", "out.onnx", cwd=tmp_path, columns=60)
    assert r.returncode == 0, r.stderr
    assert all(len(ln) <= 60 for ln in r.stdout.splitlines()), r.stdout
    text = " ".join(r.stdout.split())
    assert "model.encoder.layer.0.intermediate.dense" in text.replace(". ", ".")
    assert "frozen by LayerNormalization over the hidden size; `--scope hidden` prunes them, " \
           "inexactly" in text


# -- reasons --------------------------------------------------------------------------------------
def test_reasons_in_plain_words_with_the_flag_that_lifts_them():
    ln = "normalisation or softmax over a unit axis (LayerNormalization /emb/LayerNorm)"
    assert reasons.plain(ln) == ("frozen by LayerNormalization at /emb/LayerNorm over the hidden "
                                 "size; `--scope hidden` prunes them, inexactly")
    assert "--scope" not in reasons.plain(ln, scope=("channels", "hidden"))
    assert reasons.summary(ln) == "normalisation or softmax over a unit axis (LayerNormalization)"
    assert reasons.plain(reasons.summary(ln)).startswith("frozen by LayerNormalization over")
    soft = "normalisation or softmax over a unit axis (Softmax node_3)"
    assert "--scope" not in reasons.plain(soft) and "mixes them" in reasons.plain(soft)
    out = "reaches graph output 'present.0.key'"
    assert "--allow-io-change" in reasons.plain(out, state={"present.0.key"})
    assert "--allow-io-change" not in reasons.plain("reaches graph output 'logits'",
                                                     state={"present.0.key"})
    assert reasons.plain("hidden not in --scope", scope=("channels", "heads", "ffn")) == (
        "hidden units are outside --scope; `--scope channels,heads,ffn,hidden` prunes them, "
        "inexactly")
    assert reasons.plain("something new (Foo bar)") == "something new (Foo bar)"


# -- analyze previews compress -------------------------------------------------------------------
def _preview(path: Path, tmp_path: Path, *flags: str) -> dict:
    r = run("analyze", path, "--json", *flags, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_analyze_previews_scope_protect_round_to(hf_bert, tmp_path):
    base = _preview(hf_bert, tmp_path)
    s = base["summary"]
    assert 0 < s["removed_units"] < s["prunable_units"]
    llama = export_spec("llama", tmp_path / "llama.onnx", "torchscript")  # logits out
    narrow, hidden = (_preview(llama, tmp_path, *flags)["summary"]
                      for flags in ((), ("--scope", "channels,heads,ffn,hidden")))
    assert hidden["prunable_units"] > narrow["prunable_units"]
    assert hidden["removed_units"] > narrow["removed_units"]
    protected = _preview(hf_bert, tmp_path, "--protect", r"layer\.0\.")
    kept = [g for g in protected["groups"] if g["protected"]]
    assert kept and all(g["removed"] == 0 for g in kept)
    assert protected["summary"]["removed_units"] < s["removed_units"]
    rounded = _preview(hf_bert, tmp_path, "--round-to", "32")
    assert rounded["summary"]["removed_units"] != s["removed_units"]
    assert all((g["units"] - g["removed"]) % 32 == 0 for g in rounded["groups"]
               if g["removed"] and g["units"] >= 32)
    # the preview is what compress does (uniform allocation)
    r = run("compress", hf_bert, "-o", "o.onnx", "--json", "--round-to", "32", cwd=tmp_path)
    done = {g["name"]: g["units_before"] - g["units_after"]
            for g in json.loads(r.stdout)["group_details"]}
    assert done == {g["name"]: g["removed"] for g in rounded["groups"]}


# -- progress ------------------------------------------------------------------------------------
def test_steps_are_strings_and_throttled():
    seen: list[str] = []
    ctx = RunContext(seen.append)
    for k in range(101):
        ctx.count("Taylor probes", k, 100, "unit probes")
    assert seen[0] == "Taylor probes: 0/100 unit probes" and seen[-1].done == 100
    assert len(seen) < 10 and all(isinstance(s, Step) for s in seen)


def _stderr_through_pty(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run graphprune with stderr on a pseudo-terminal; what it wrote there."""
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "100"}
    proc = subprocess.Popen([str(EXE), *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=slave, env=env)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 4096)
            except OSError:  # the other side closed
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal_only(tmp_path):
    model = zoo.copy_example(tmp_path)
    x = np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", input=x)
    args = ["compress", str(model), "-o", "out.onnx", "--criterion", "taylor",
            "--calib", "calib.npz", "--allocation", "sensitivity", "--target-macs", "0.6"]
    rc, tty = _stderr_through_pty(args, tmp_path)
    assert rc == 0, tty
    bars = re.findall(r"\r\[[#.]+\] (Taylor probes|sensitivity scan) (\d+)/(\d+) ", tty)
    assert {b[0] for b in bars} == {"Taylor probes", "sensitivity scan"}, tty
    assert all(0 < int(d) < int(t) for _, d, t in bars)
    assert re.search(r"\d+:\d\d left", tty)
    assert "\x1b[K" in tty  # the bar is cleared before other output

    piped = run(*args, cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert "\r" not in piped.stderr and "[#" not in piped.stderr
    assert "… scoring" in piped.stderr  # stage lines stay
    rc, quiet = _stderr_through_pty([*args, "--quiet"], tmp_path)
    assert rc == 0 and quiet.strip() == "", quiet
    rc, js = _stderr_through_pty([*args, "--json"], tmp_path)
    assert rc == 0 and js.strip() == "", js


# -- a closed pipe -------------------------------------------------------------------------------
class _Closed(io.TextIOWrapper):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_reader_that_stops_is_not_an_error(tmp_path, capsys, monkeypatch):
    model = zoo.copy_example(tmp_path)
    fd = os.open(os.devnull, os.O_WRONLY)
    closed = _Closed(io.FileIO(fd, "w"))
    monkeypatch.setattr(sys, "stdout", closed)
    assert cli.main(["analyze", str(model)]) == 0
    monkeypatch.undo()
    assert "error" not in capsys.readouterr().err
