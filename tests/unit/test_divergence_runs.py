"""A diverged run is an error, not a result: nothing is published, the message says what to try.

One run per task family with a learning rate of 1e30, which makes the first optimizer step
overflow (the guard sees non-finite gradients or weights), then the same through the CLI.
"""

from __future__ import annotations

import json
import random

import pytest
from rich.console import Console

import tunewise
from tunewise.config import load_config
from tunewise.errors import TunewiseError

from tiny_models import json_rows, lm_config, write_jsonl

DIVERGED = "training diverged.*nothing was saved.*Lower the learning rate"


def _assert_diverged(cfg, tmp_path, match: str = DIVERGED) -> str:
    with pytest.raises(TunewiseError, match=match) as info:
        tunewise.fit(cfg, console=Console(quiet=True))
    assert not (tmp_path / "run").exists(), "a diverged run published its folder"
    assert not list(tmp_path.glob(".run.*")), "a diverged run left its staging folder"
    return str(info.value)


def _texts(path, n_per_class: int = 8):
    """Three classes with disjoint words of the tiny BERT's vocabulary (w0..w39)."""
    rng = random.Random(0)
    rows = [{"text": " ".join(f"w{rng.choice(words)}" for _ in range(5)), "label": label}
            for label, words in (("alpha", [0, 1, 2]), ("beta", [10, 11, 12]), ("gamma", [20, 21, 22]))
            for _ in range(n_per_class)]
    return write_jsonl(path, rows)


def _images(root, n_per_class: int = 6):
    """Three colours of small PNGs in class folders (the image tasks' folder layout)."""
    from PIL import Image

    rng = random.Random(0)
    for label, colour in {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}.items():
        (root / label).mkdir(parents=True)
        for i in range(n_per_class):
            Image.new("RGB", (24, 24), tuple(min(255, c + rng.randint(0, 30)) for c in colour)).save(root / label / f"{i}.png")
    return root


def test_diverged_embedding_run_publishes_nothing(tiny_st_model, pairs_file, tmp_path):
    cfg = load_config(None, [f"model={tiny_st_model}", f"data.train={pairs_file}", f"output_dir={tmp_path / 'run'}",
                             "train.epochs=2", "train.batch_size=8", "train.learning_rate=1e30"])
    _assert_diverged(cfg, tmp_path)


def test_diverged_classification_run_publishes_nothing(tiny_bert, tmp_path):
    cfg = load_config(None, ["task=classification", f"model={tiny_bert}", f"data.train={_texts(tmp_path / 't.jsonl')}",
                             f"output_dir={tmp_path / 'run'}", "train.epochs=2", "train.batch_size=8",
                             "train.learning_rate=1e30", "data.eval_fraction=0.25"])
    _assert_diverged(cfg, tmp_path)


def test_diverged_causal_lm_full_run_publishes_nothing(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", json_rows(24))
    cfg = tunewise.run.as_config(lm_config(tmp_path, tiny_llama, data, strategy="full", overwrite=False,
                                           train__learning_rate=1e30, train__epochs=1))
    _assert_diverged(cfg, tmp_path)


@pytest.mark.parametrize("task", ["image-classification", "image-search"])
def test_diverged_image_run_publishes_nothing(task, tiny_resnet, tmp_path):
    pytest.importorskip("PIL")
    cfg = load_config(None, [f"task={task}", f"model={tiny_resnet}", f"data.train={_images(tmp_path / 'imgs')}",
                             f"output_dir={tmp_path / 'run'}", "image.size=32", "train.epochs=2", "train.batch_size=6",
                             "train.learning_rate=1e30", "data.eval_fraction=0.25"])
    _assert_diverged(cfg, tmp_path)


def _head_config(tiny_bert, tmp_path):
    return load_config(None, ["task=classification", f"model={tiny_bert}", f"data.train={_texts(tmp_path / 't.jsonl')}",
                              f"output_dir={tmp_path / 'run'}", "train.epochs=2", "train.batch_size=8",
                              "strategy={name: head, head_lr: 1e30}", "data.eval_fraction=0.25"])


def test_diverged_head_strategy_run_publishes_nothing(tiny_bert, tmp_path, monkeypatch):
    """Strategy ``head`` trains itself on cached features (its own Trainer), with its own learning rate."""
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    _assert_diverged(_head_config(tiny_bert, tmp_path), tmp_path, match="training diverged.*nothing was saved")


def test_head_strategy_divergence_advice_names_the_head_learning_rate(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    _assert_diverged(_head_config(tiny_bert, tmp_path), tmp_path, match="training diverged.*strategy.head_lr")


def test_diverged_run_through_the_cli_is_one_line_exit_2(tiny_st_model, pairs_file, tmp_path):
    from typer.testing import CliRunner

    from tunewise.cli.app import app

    result = CliRunner().invoke(app, ["fit", "--train", str(pairs_file), "--model", tiny_st_model, "-o",
                                      str(tmp_path / "run"), "--epochs", "1", "--lr", "1e30", "--json"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "training diverged" in errors[0] and "Traceback" not in result.output, result.stderr
    assert result.stderr.rstrip("\n").splitlines()[-1] == errors[0]  # the message is the last line, whole
    assert result.stdout == ""
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.*"))


def test_metrics_json_is_strict_json(tmp_path):
    from tunewise.files import write_json

    write_json(tmp_path / "m.json", {"a": float("nan"), "b": [float("inf"), 1.5]})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard {c}")) == {"a": None, "b": [None, 1.5]}
