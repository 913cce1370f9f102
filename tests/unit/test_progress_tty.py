"""Progress you can see, tried as a user would: ``tunewise fit`` in a pseudo-terminal shows one bar
(steps, epoch, loss, ETA) and no raw log dicts; in a log (no terminal) one line per epoch."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest
from rich.console import Console

from tunewise.tasks.progress import _Lines, _Target, evaluation_text

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
RAW_DICT = re.compile(r"\{'(loss|grad_norm|learning_rate|train_runtime)'")


def fit_args(tiny_st_model, pairs_file, out) -> list[str]:
    # 48 training pairs, batch 16: 3 steps an epoch, 2 epochs
    return [sys.executable, "-m", "tunewise.cli.app", "fit", "--train", str(pairs_file), "--model", tiny_st_model,
            "-o", str(out), "--epochs", "2", "--lr", "1e-3", "--batch-size", "16", "--set", "eval.resamples=200"]


def in_terminal(args: list[str], columns: int = 160) -> tuple[int, str]:
    """Run ``args`` in a pseudo-terminal; (exit status, everything shown, escape codes removed)."""
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(args[0], args[1:], env={**ENV, "TERM": "xterm-256color", "COLUMNS": str(columns)},
                          dimensions=(50, columns), timeout=600, encoding="utf-8")
    shown = child.read()
    child.close()
    return child.exitstatus, ANSI.sub("", shown)


def test_fit_in_a_terminal_shows_one_bar_and_no_raw_dicts(tiny_st_model, pairs_file, tmp_path):
    status, shown = in_terminal(fit_args(tiny_st_model, pairs_file, tmp_path / "run"))
    assert status == 0, shown[-3000:]
    # the finished bar stays as the record of training: every step, the last epoch, its loss, no time left
    final = re.findall(r"training .*? (\d+)/(\d+) steps epoch ([\d.]+)/2 loss ([\d.]+) [\d:]+ ETA ([\d:-]+)", shown)
    assert final, shown[-3000:]
    done, total, epoch, loss, eta = final[-1]
    assert done == total == "6" and epoch == "2.00" and float(loss) > 0 and eta == "0:00:00"
    assert not RAW_DICT.search(shown), shown
    assert "training: epoch" not in shown  # the per-epoch lines are for logs, not terminals
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]["steps"] == 6


@pytest.mark.slow  # a second whole run (~25 s); test_log_lines_carry_the_epoch_s_evaluation checks the lines fast
def test_fit_in_a_log_prints_one_line_per_epoch(tiny_st_model, pairs_file, tmp_path):
    proc = subprocess.run(fit_args(tiny_st_model, pairs_file, tmp_path / "run"), capture_output=True, text=True,
                          env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if line.startswith("training: ")]
    assert len(lines) == 2, lines
    for epoch, (line, step) in enumerate(zip(lines, (3, 6)), start=1):
        assert re.fullmatch(rf"training: epoch {epoch}/2, step {step}/6, loss [\d.]+, [\d:]+ elapsed, ETA [\d:]+", line), line
    assert not RAW_DICT.search(proc.stdout + proc.stderr)
    assert "━" not in proc.stderr  # no bar drawn into a log


@pytest.mark.slow
def test_a_sweep_shows_each_point_s_bar_under_its_own(tiny_st_model, pairs_file, tmp_path):
    args = [sys.executable, "-m", "tunewise.cli.app", "budget", "--train", str(pairs_file), "--model", tiny_st_model,
            "-o", str(tmp_path / "sweep"), "--sizes", "12,24,48", "--seeds", "1", "--no-time", "--set", "train.epochs=1"]
    status, shown = in_terminal(args)
    assert status == 0, shown[-3000:]
    # one screen update holds the sweep's bar with a point's training bar on the line below it
    frames = re.findall(r"budget [^\n]*?\d+/3[^\n]*\n(training [^\n]*? \d+/\d+ steps)", shown)
    assert frames, shown[-3000:]
    assert not RAW_DICT.search(shown)
    tail = shown[shown.rindex("recommendation"):] if "recommendation" in shown else ""
    assert tail and "steps epoch" not in tail  # the point bars went away with their points


def test_log_lines_carry_the_epoch_s_evaluation():
    """The Trainer logs an epoch's loss, then its evaluation: one line holds both."""
    out = io.StringIO()
    lines = _Lines(_Target(Console(file=out, width=200), transient=False), total_steps=6, epochs=2)
    lines.log({"loss": 1.25, "grad_norm": 2.0, "epoch": 1.0}, step=3, epoch=1.0)
    lines.log({"eval_loss": 1.1, "eval_accuracy": 0.8125, "eval_runtime": 0.2, "epoch": 1.0}, step=3, epoch=1.0)
    lines.new_epoch()
    lines.log({"loss": 0.5, "epoch": 2.0}, step=6, epoch=2.0)
    lines.close()
    shown = out.getvalue().splitlines()
    assert len(shown) == 2
    assert shown[0].startswith("training: epoch 1/2, step 3/6, loss 1.25, validation (loss 1.1, accuracy 0.8125), ")
    assert shown[1].startswith("training: epoch 2/2, step 6/6, loss 0.5, ") and shown[1].endswith("ETA 0:00")


def test_evaluation_text_leaves_bookkeeping_out():
    assert evaluation_text({"eval_accuracy": 0.5, "eval_runtime": 1.0, "eval_samples_per_second": 3.0,
                            "eval_steps_per_second": 1.0, "epoch": 1.0}) == "accuracy 0.5"
    assert evaluation_text({"loss": 1.0}) == ""


def test_work_progress_draws_a_bar_on_a_terminal_only():
    from tunewise.tasks.progress import training_console, work_progress

    terminal = io.StringIO()
    with training_console(Console(file=terminal, force_terminal=True, width=120)):
        with work_progress("generating", 3) as advance:
            for _ in range(3):
                advance(1)
    assert "generating" in terminal.getvalue() and "3/3" in ANSI.sub("", terminal.getvalue())
    for console in (Console(file=io.StringIO(), width=120), Console(file=io.StringIO(), force_terminal=True, quiet=True)):
        with training_console(console), work_progress("generating", 3) as advance:
            advance(3)
        assert console.file.getvalue() == ""
