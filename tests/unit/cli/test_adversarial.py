"""Acceptance suite: malformed and adversarial input to every command ends with one line and exit 2.

Each case of :data:`adversarial_cases.CASES` runs one command line (in-process through Typer's
CliRunner, or as a real process where that matters) and must end with

* exit code 2 and no traceback;
* exactly one non-empty line on stderr, ``error: ...`` (the parser's errors are one line too),
  holding the case's expected fragments (the intended reason, not just any failure); stdout
  may hold a banner printed before the check (``demo-budget``), never a traceback;
* nothing that looks like a result: no metrics.json, weights, report.html or results.jsonl with
  points appeared, no staging folder is left, no file that was there before changed or vanished.

Most cases fail before any model loads (the whole table takes under a minute on 2 cores).
SIGTERM during ``fit`` is checked on a real process at the end.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from adversarial_cases import CASES, MODELS, Case, pairs  # beside this file (pytest puts its folder on sys.path)
from typer.testing import CliRunner

from tunewise.cli.app import app

STOPPED = ("finished work is kept, unfinished output was not published; the same command continues it "
           "(fit: add --resume; a budget sweep picks up its finished points)")

RESULT_FILES = ("metrics.json", "model.safetensors", "pytorch_model.bin", "adapter_model.safetensors", "report.html",
                "summary.json", "merged_from.json")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _placeholders(case: Case, request: pytest.FixtureRequest, tmp: Path) -> dict[str, str]:
    """``{tmp}`` and the tiny models the case names (each fixture is built only when a case needs it)."""
    text = " ".join(case.argv) + " ".join(str(v) for v in case.files.values() if isinstance(v, str))
    values = {"tmp": str(tmp)}
    for key, fixture in MODELS.items():
        if "{" + key + "}" in text:
            values[key] = str(request.getfixturevalue(fixture))
    return values


def _make_files(case: Case, tmp: Path, values: dict[str, str]) -> None:
    for rel, content in case.files.items():
        path = tmp / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(_fill(content, values), encoding="utf-8")


def _snapshot(tmp: Path) -> dict[str, str]:
    return {str(p.relative_to(tmp)): hashlib.sha1(p.read_bytes()).hexdigest() for p in tmp.rglob("*") if p.is_file()}


def _run(argv: list[str], process: bool) -> tuple[int, str, str]:
    if process:
        proc = subprocess.run([sys.executable, "-m", "tunewise.cli.app", *argv], capture_output=True, text=True, env=ENV,
                              timeout=120)
        return proc.returncode, proc.stdout, proc.stderr
    result = CliRunner().invoke(app, argv)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(result.exception))
        return result.exit_code, result.stdout, result.stderr + "\nTraceback (in-process):\n" + tb
    return result.exit_code, result.stdout, result.stderr


def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        yield pytest.param(case, id=case.id, marks=marks)


def _content_key(content) -> object:
    """What a file's content is, for telling cases apart (a maker: its code and what it closes over)."""
    if not callable(content):
        return content
    code = content.__code__
    return code.co_code, code.co_consts, [cell.cell_contents for cell in content.__closure__ or ()]


def test_the_table_is_big_and_distinct():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 60
    keys = {(case.argv, case.process, repr(sorted((k, _content_key(v)) for k, v in case.files.items()))) for case in CASES}
    assert len(keys) == len(CASES)
    commands = {case.argv[0] for case in CASES}
    assert commands >= {"fit", "evaluate", "demo", "config", "compare", "merge", "interpolate", "budget", "demo-budget",
                        "memory"}
    tasks = " ".join(" ".join(case.argv) for case in CASES)
    for task in ("classification", "image-classification", "image-search", "clip", "causal-lm"):
        assert f"task={task}" in tasks, task


@pytest.mark.parametrize("case", _params())
def test_adversarial_input_is_one_line_exit_2_and_leaves_no_result(case: Case, request, tmp_path):
    values = _placeholders(case, request, tmp_path)
    _make_files(case, tmp_path, values)
    before = _snapshot(tmp_path)
    code, stdout, stderr = _run([_fill(arg, values) for arg in case.argv], case.process)

    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr + stdout, stderr
    assert code == 2, f"exit {code}\nstdout: {stdout}\nstderr: {stderr}"
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in case.expect:
        assert fragment in lines[0], lines[0]

    after = _snapshot(tmp_path)
    assert {k: v for k, v in before.items() if after.get(k) != v} == {}, "input files changed or vanished"
    new = sorted(set(after) - set(before))
    results = [p for p in new if Path(p).name in RESULT_FILES
               or (Path(p).name == "results.jsonl" and (tmp_path / p).stat().st_size > 0)]
    assert results == [], f"result-looking files left behind: {results}"
    assert not [p.name for p in tmp_path.rglob(".*.tmp-*")], "a staging folder was left behind"
    for rel in case.absent:
        assert not (tmp_path / rel).exists(), f"{rel} exists"


# -- SIGTERM on a real process ----------------------------------------------------------------------


def _wait_for(predicate, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before training began:\n{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no staging folder appeared")
        time.sleep(0.1)


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default. A suite started in the background
    (``nohup pytest &``, some CI runners) inherits SIGINT *ignored*, Python then installs no
    KeyboardInterrupt handler, and the child would train on through the signal (what made this
    test time out in background runs; the faulthandler dump showed the run still saving checkpoints)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(("signum", "code", "message"), [
    (signal.SIGTERM, 143, "error: interrupted (SIGTERM); " + STOPPED),
    (signal.SIGINT, 130, "error: interrupted; " + STOPPED),
], ids=["SIGTERM", "SIGINT"])
def test_a_stop_during_fit_is_one_line_and_publishes_nothing(signum, code, message, tiny_st_model, tmp_path):
    """A scheduler's SIGTERM ends a run as Ctrl-C does: the staging folder is removed, one line, exit 128 + signal."""
    (tmp_path / "pairs.jsonl").write_text(pairs(60), encoding="utf-8")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "tunewise.cli.app", "fit", "--train", str(tmp_path / "pairs.jsonl"),
                             "--model", tiny_st_model, "-o", str(out), "--epochs", "500", "--lr", "1e-4", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**ENV, "PYTHONFAULTHANDLER": "1"}, preexec_fn=_default_sigint)
    try:
        _wait_for(lambda: any(tmp_path.glob(".out.tmp-*")), proc, seconds=120)
        time.sleep(1.0)  # inside the training loop
        proc.send_signal(signum)
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # hung: SIGABRT makes faulthandler (PYTHONFAULTHANDLER) print every thread's stack
            proc.send_signal(signal.SIGABRT)
            stdout, stderr = proc.communicate(timeout=30)
            dump = stderr[stderr.find("Fatal Python error"):].split("Extension modules:")[0]
            pytest.fail(f"the run did not stop within 60 s of the signal; its threads:\n{dump[:12000]}")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    errors = [line for line in stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert errors == [message], stderr
    assert stderr.rstrip("\n").splitlines()[-1] == message  # the last thing said, whole
    assert stdout == ""
    # nothing published, no staging left; only the hidden checkpoints a `--resume` continues from may stay
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*")), list(tmp_path.iterdir())
    assert {p.name for p in tmp_path.glob(".out.*")} <= {".out.checkpoints"}


def test_sigterm_handler_is_restored_after_a_command():
    """The handler lives only while a command runs: a library user's own SIGTERM handling is untouched."""
    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(app, ["config", "--set", "train.epochs=2"])
    assert result.exit_code == 0 and signal.getsignal(signal.SIGTERM) is before
