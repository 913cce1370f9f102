"""The command line: a real run, and every bad input ends with one line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tunewise.cli.app import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_fit_through_cli(tiny_st_model, pairs_file, tmp_path):
    out = tmp_path / "run"
    result = invoke("fit", "--train", str(pairs_file), "--model", tiny_st_model, "-o", str(out), "--epochs", "1",
                    "--lr", "1e-3", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["after"]["mrr@20"] == json.loads((out / "metrics.json").read_text())["after"]["mrr@20"]


def test_config_command_prints_resolved_yaml(tmp_path):
    result = invoke("config", "--set", "train.epochs=2")
    assert result.exit_code == 0 and "epochs: 2.0" in result.stdout


@pytest.fixture()
def base_args(tiny_st_model, tmp_path):
    return ["--model", tiny_st_model, "-o", str(tmp_path / "out")]


def _write(tmp_path, name, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


BAD_INPUTS = {
    "missing file": (lambda t: ["--train", str(t / "nope.csv")], ["data.train: file not found", "nope.csv"]),
    "misspelled column": (lambda t: ["--train", _write(t, "d.csv", "question,positive\na,b\nc,d\ne,f\n")],
                          ["no column 'query'", "columns are: question, positive", "data.columns.query"]),
    "empty data set": (lambda t: ["--train", _write(t, "d.csv", "query,positive\n")], ["has no rows"]),
    "non-utf8": (lambda t: ["--train", _write(t, "d.csv", "query,positive\nsmörgås,b\n".encode("latin-1"))], ["not UTF-8"]),
    "wrong type": (lambda t: ["--set", "train.epochs=many"], ["train.epochs: expected float"]),
    "unknown config key": (lambda t: ["--set", "train.lerning_rate=1"], ["unknown config key 'train.lerning_rate'", "learning_rate"]),
    "k <= 0": (lambda t: ["--set", "eval.k=[0]"], ["eval.k"]),
    "too few pairs": (lambda t: ["--train", _write(t, "d.csv", "query,positive\na,b\nc,d\n")], ["need at least 2"]),
    "unknown strategy": (lambda t: ["--strategy", "ful"], ["unknown strategy 'ful'", "did you mean 'full'"]),
    "unknown loss": (lambda t: ["--loss", "mnlr"], ["unknown loss 'mnlr'", "did you mean 'mnrl'"]),
    "empty text": (lambda t: ["--train", _write(t, "d.jsonl", '{"query": "a", "positive": ""}\n')], ["row 1 has an empty 'positive'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, base_args, pairs_file, tmp_path):
    make_args, fragments = BAD_INPUTS[case]
    args = make_args(tmp_path)
    if "--train" not in args:
        args = ["--train", str(pairs_file), *args]
    result = invoke("fit", *base_args, *args)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out").exists()


def test_missing_model_path(pairs_file, tmp_path):
    result = invoke("fit", "--train", str(pairs_file), "--model", str(tmp_path / "no-model"), "-o", str(tmp_path / "out"))
    assert_one_line_error(result, "model: folder not found")
    assert not (tmp_path / "out").exists()


def test_missing_config_file(tmp_path):
    assert_one_line_error(invoke("fit", str(tmp_path / "run.yaml")), "config file not found")


def test_console_script_exit_code(tmp_path):
    """The installed entry point (not only the Typer app) gives exit 2 without a traceback."""
    proc = subprocess.run([sys.executable, "-m", "tunewise.cli.app", "fit", "--train", str(tmp_path / "x.csv")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: data.train: file not found")
    assert "Traceback" not in proc.stderr


def test_demo_budget_options_are_checked_before_any_work(tmp_path):
    assert_one_line_error(invoke("demo", "--task", "classification", "--seeds", "2", "-o", str(tmp_path / "x")),
                          "--seeds: only with --budget")
    assert_one_line_error(invoke("demo", "--task", "clasification", "--budget"), "--task", "classification")
    assert not (tmp_path / "x").exists()


PARSER_ERRORS = {  # click's own errors: one line like the rest, not Typer's usage box
    "not a number": (["fit", "--lr", "abc"], ["error: --lr: 'abc' is not a number"]),
    "not an integer": (["budget", "--seeds", "x"], ["error: --seeds: 'x' is not an integer"]),
    "missing value": (["fit", "--lr"], ["error: --lr: needs a value"]),
    "unknown option": (["fit", "--los", "mnrl"], ["error: --los: unknown option (did you mean '--loss'?)",
                                                   "see 'tunewise fit --help'"]),
    "unknown command": (["fitt"], ["no such command 'fitt'", "see 'tunewise --help'"]),
    "extra argument": (["fit", "a.yaml", "b.yaml"], ["unexpected extra argument"]),
}


@pytest.mark.parametrize("case", sorted(PARSER_ERRORS))
def test_parser_errors_are_one_line_exit_2(case):
    args, fragments = PARSER_ERRORS[case]
    result = invoke(*args)
    assert_one_line_error(result, *fragments)
    assert result.stdout == "" and "Usage" not in result.output and "╭" not in result.output


def test_help_still_works():
    for args in (["--help"], ["fit", "--help"], ["demo", "--help"]):
        result = invoke(*args)
        assert result.exit_code == 0 and "Usage" in result.stdout and result.stderr == "", args
    bare = invoke()  # no command: the help, exit 2 as in click
    assert bare.exit_code == 2 and "Commands" in bare.stdout


def test_console_script_parser_error_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "tunewise.cli.app", "fit", "--lr", "abc"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr == "error: --lr: 'abc' is not a number\n" and proc.stdout == ""


BAD_CONFIGS = {  # `tunewise config` validates as fit does (tunewise.run.check_config)
    "unknown task": (["task=nosuch"], ["task", "nosuch"]),
    "unknown strategy": (["strategy.name=nosuch"], ["strategy", "nosuch"]),
    "lora rank 0": (["strategy.name=lora", "strategy.rank=0"], ["rank"]),
    "unknown primary metric": (["eval.primary=nosuch"], ["eval.primary", "nosuch"]),
    "infinite epochs": (["train.epochs=.inf"], ["train.epochs"]),
    "nan learning rate": (["train.learning_rate=.nan"], ["train.learning_rate"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_config_command_rejects_what_fit_rejects(case):
    sets, fragments = BAD_CONFIGS[case]
    result = invoke("config", *(arg for s in sets for arg in ("--set", s)))
    assert_one_line_error(result, *fragments)
    assert result.stdout == ""


def test_config_command_accepts_a_valid_config():
    result = invoke("config", "--set", "strategy.name=lora", "--set", "strategy.rank=4", "--set", "train.epochs=2")
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert "rank: 4" in result.stdout and "epochs: 2.0" in result.stdout


def test_demo_task_errors_list_the_registered_demos():
    from tunewise.demos import DEMOS

    result = invoke("demo", "--task", "nosuch")
    assert_one_line_error(result, "--task: unknown demo 'nosuch'", f"choose one of: {', '.join(DEMOS.names())}")
    assert_one_line_error(invoke("demo", "--lang", "de"), "--lang: use sv or en, got 'de'")
    assert_one_line_error(invoke("demo-budget", "--lang", "de", "-o", "unused"), "--lang: use sv or en, got 'de'")
    help_text = " ".join(invoke("demo", "--help").stdout.split())
    for name in ("embedding", "classification", "image-search", "image-classification", "llm"):
        assert name in help_text
