"""A model of the wrong kind for its task is refused in one line, before any work, naming the tasks it fits."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tunewise.cli.app import app
from tunewise.config import load_config
from tunewise.errors import TunewiseError
from tunewise.models.loading import model_modality
from tunewise.run import check_config

runner = CliRunner()
TEXT_TASKS = "text models fit tasks causal-lm, classification, embedding"
IMAGE_TASKS = "image models fit tasks image-classification, image-search"


@pytest.mark.parametrize(("config", "expected"), [
    ({"model_type": "bert", "vocab_size": 30}, "text"),
    ({"model_type": "llama", "vocab_size": 30}, "text"),
    ({"model_type": "vit", "image_size": 32}, "image"),
    ({"model_type": "resnet", "num_channels": 3}, "image"),
    ({"model_type": "clip", "text_config": {}, "vision_config": {}}, "image-text"),
    ({"model_type": "siglip"}, "image-text"),  # zero-shot image classification: an image-text pair of towers
    ({"model_type": "not-in-transformers", "vocab_size": 100}, "text"),  # unknown types: judged by their fields
    ({"model_type": "not-in-transformers", "num_channels": 3}, "image"),
    ({"model_type": "not-in-transformers"}, None),
])
def test_modality_of_configs(config, expected):
    assert model_modality(config) == expected


def _error(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len(lines) == 1 and lines[0].startswith("error: model: "), result.output
    return lines[0]


@pytest.mark.parametrize("task", ["image-classification", "image-search"])
def test_image_tasks_refuse_a_text_model_before_reading_data(task, tiny_bert, tmp_path):
    """fit: the check runs before the data is read (the data file does not even exist)."""
    line = _error("fit", "--set", f"task={task}", "--model", tiny_bert, "--train", tmp_path / "missing", "-o", tmp_path / "o")
    assert f"is a text model (bert); task {task} needs an image model; {TEXT_TASKS}" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("task", ["image-classification", "image-search"])
def test_image_tasks_refuse_a_text_model_in_evaluate(task, tiny_bert, tmp_path):
    from PIL import Image

    for label, colour in {"red": (220, 30, 30), "blue": (30, 40, 220)}.items():
        (tmp_path / "img" / label).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), colour).save(tmp_path / "img" / label / f"{i}.png")
    line = _error("evaluate", "--set", f"task={task}", "--model", tiny_bert, "--train", tmp_path / "img")
    assert f"task {task} needs an image model" in line and TEXT_TASKS in line


@pytest.mark.parametrize("task", ["classification", "causal-lm", "embedding"])
def test_text_tasks_refuse_an_image_model(task, tiny_vit, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(f'{{"query": "q{i}", "positive": "p{i}", "text": "t {i}", "label": "{"ab"[i % 2]}", '
                            f'"prompt": "p{i}", "completion": "c{i}"}}\n' for i in range(12)))
    line = _error("fit", "--set", f"task={task}", "--model", tiny_vit, "--train", data, "-o", tmp_path / "o", "--epochs", "1")
    assert "is an image model (vit)" in line and IMAGE_TASKS in line


def test_clip_and_image_search_refuse_each_others_models(tiny_bert, tiny_clip, tmp_path):
    line = _error("fit", "--set", "task=clip", "--model", tiny_bert, "--train", tmp_path / "x.csv", "-o", tmp_path / "o")
    assert "task clip needs an image-text (CLIP-like) model" in line
    line = _error("fit", "--set", "task=image-search", "--model", tiny_clip, "--train", tmp_path / "x", "-o", tmp_path / "o")
    assert "is an image-text (CLIP-like) model (clip)" in line and "fit task clip" in line


def test_config_command_checks_the_model_kind(tiny_resnet, tiny_clip, tiny_bert):
    """``tunewise config`` validates as fit does, model kind included; CLIP's vision tower classifies images."""
    with pytest.raises(TunewiseError, match="is an image model"):
        check_config(load_config(None, ["task=classification", f"model={tiny_resnet}"]))
    check_config(load_config(None, ["task=image-classification", f"model={tiny_clip}"]))  # CLIPForImageClassification
    check_config(load_config(None, ["task=image-classification", f"model={tiny_resnet}"]))
    check_config(load_config(None, ["task=image-classification", "model=timm:resnet18"]))  # no config to read: not checked
    check_config(load_config(None, ["task=classification", f"model={tiny_bert}"]))
