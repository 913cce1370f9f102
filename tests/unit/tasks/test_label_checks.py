"""``tunewise evaluate`` scores a classifier only with a trained head whose labels match the data's by name.

A bare backbone would be scored with a random head, and a head trained on other labels (or the
same ones in another order) would be scored by index: numbers without meaning. ``fit`` is
unchanged: it fits its probe head first.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tunewise.cli.app import app
from tunewise.config import load_config
from tunewise.errors import TunewiseError
from tunewise.run import evaluate, fit
from tunewise.tasks.classifier_shared import label_map

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

WORDS = {"alpha": range(0, 3), "beta": range(10, 13), "gamma": range(20, 23)}
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def texts_file(path: Path, labels: dict[str, str] | None = None, n_per_class: int = 10) -> Path:
    """Texts of three word groups; ``labels`` renames (or, mapped to None, drops) a group."""
    rng = random.Random(0)
    rows = []
    for label, words in WORDS.items():
        name = (labels or {}).get(label, label)
        rows += [{"text": " ".join(f"w{rng.choice(list(words))}" for _ in range(5)), "label": name}
                 for _ in range(n_per_class) if name is not None]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def image_folder(root: Path, labels: dict[str, str] | None = None, n_per_class: int = 6) -> Path:
    rng = random.Random(0)
    for label, colour in COLOURS.items():
        name = (labels or {}).get(label, label)
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            shade = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in colour)
            Image.new("RGB", (24, 24), shade).save(root / name / f"{i}.png")
    return root


def text_cfg(model, data, out=None):
    return load_config(None, ["task=classification", f"model={model}", f"data.train={data}",
                              f"output_dir={out or data.parent / 'unused'}", "train.epochs=3", "train.learning_rate=1e-3",
                              "train.batch_size=8", "data.eval_fraction=0.3", "train.warmup_ratio=0"])


def image_cfg(model, data, out=None):
    return load_config(None, ["task=image-classification", f"model={model}", f"data.train={data}",
                              f"output_dir={out or data.parent / 'unused'}", "image.size=32", "train.epochs=1",
                              "train.batch_size=6", "train.learning_rate=1e-3", "data.eval_fraction=0.3"])


def permute_head(run: Path, out: Path, order: list[int], keys: tuple[str, ...]) -> Path:
    """A copy of ``run`` whose head lists its labels in ``order``: the same classifier, outputs reordered."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(run, out)
    state = load_file(str(out / "model.safetensors"))
    for key in keys:
        state[key] = state[key][order].contiguous()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    labels = [config["id2label"][str(i)] for i in order]
    config.update(id2label={str(i): c for i, c in enumerate(labels)}, label2id={c: i for i, c in enumerate(labels)})
    (out / "config.json").write_text(json.dumps(config))
    meta_file = out / "tunewise_vision.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        meta["extra"]["id2label"] = {str(i): c for i, c in enumerate(labels)}
        meta_file.write_text(json.dumps(meta))
    return out


# -- matching labels by name (pure) -------------------------------------------------------------


def test_label_map_by_name():
    assert label_map(["a", "b", "c"], ["a", "b", "c"], "m") is None
    assert label_map(["c", "a", "b"], ["a", "b", "c"], "m") == [2, 0, 1]  # model output 0 ('c') is data class 2


def test_label_map_names_what_differs():
    with pytest.raises(TunewiseError) as err:
        label_map(["a", "b", "c"], ["a", "b", "d"], "runs/x")
    assert str(err.value) == ("model: runs/x was trained on other labels (model labels: a, b, c; data labels: a, b, d): "
                              "'d' is not a label of the model; 'c' is not in the data")
    with pytest.raises(TunewiseError, match="'e' is not in the data$"):  # a 5-class run on 4-class data
        label_map(list("abcde"), list("abcd"), "runs/x")


# -- text classification -------------------------------------------------------------------------


def finished_run(make_cfg, model, data: Path):
    """(fit's result, its data): a run folder next to the data."""
    return fit(make_cfg(model, data, data.parent / "run"), console=Console(quiet=True)), data


@pytest.fixture(scope="module")
def text_run(tiny_bert, tmp_path_factory):
    return finished_run(text_cfg, tiny_bert, texts_file(tmp_path_factory.mktemp("text-run") / "texts.jsonl"))


def test_evaluate_a_trained_classifier_reproduces_fit(text_run):
    result, data = text_run
    scored = evaluate(text_cfg(result.output_dir, data), console=Console(quiet=True))
    assert scored["metrics"] == result.after


def test_same_labels_in_another_order_are_matched_by_name(text_run, tmp_path):
    result, data = text_run
    reordered = permute_head(result.output_dir, tmp_path / "reordered", [2, 0, 1], ("classifier.weight", "classifier.bias"))
    assert json.loads((reordered / "config.json").read_text())["id2label"]["0"] == "gamma"
    original = evaluate(text_cfg(result.output_dir, data), console=Console(quiet=True))
    scored = evaluate(text_cfg(reordered, data), console=Console(quiet=True))
    assert scored["metrics"] == original["metrics"] and scored["examples"] == original["examples"]


@pytest.mark.parametrize(("labels", "why"), [
    ({"gamma": "delta"}, "'delta' is not a label of the model; 'gamma' is not in the data"),
    ({"gamma": None}, "'gamma' is not in the data"),
])
def test_other_labels_are_refused(labels, why, text_run, tmp_path):
    result, _ = text_run
    data = texts_file(tmp_path / "other.jsonl", labels)
    with pytest.raises(TunewiseError, match=f"model labels: alpha, beta, gamma; data labels: .*: {why}$"):
        evaluate(text_cfg(result.output_dir, data), console=Console(quiet=True))


def test_a_bare_backbone_is_refused(tiny_bert, tmp_path):
    data = texts_file(tmp_path / "texts.jsonl")
    with pytest.raises(TunewiseError, match=f"model: {tiny_bert} has no trained classification head; fine-tune it first"):
        evaluate(text_cfg(tiny_bert, data), console=Console(quiet=True))
    cfg = text_cfg(tiny_bert, data)
    cfg.model = None
    with pytest.raises(TunewiseError, match=r"all-MiniLM-L6-v2 \(packaged\) has no trained classification head"):
        evaluate(cfg, console=Console(quiet=True))


def test_evaluate_command_says_it_in_one_line(tiny_bert, tmp_path):
    data = texts_file(tmp_path / "texts.jsonl")
    result = CliRunner().invoke(app, ["evaluate", "--set", "task=classification", "--model", str(tiny_bert), "--train", str(data)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip() == (f"error: model: {tiny_bert} has no trained classification head; fine-tune it first "
                                     "(tunewise fit) or evaluate a tunewise run folder")


def test_fit_still_starts_from_a_bare_backbone_or_a_run_with_other_labels(text_run, tmp_path):
    """fit fits its probe head first: another label set re-heads the saved classifier, as before."""
    result, _ = text_run
    data = texts_file(tmp_path / "two.jsonl", {"gamma": None})
    cfg = text_cfg(result.output_dir, data, tmp_path / "again")
    cfg.train.epochs = 1
    assert fit(cfg, console=Console(quiet=True)).metrics["data"]["classes"] == 2


# -- image classification ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_run(tiny_resnet, tmp_path_factory):
    return finished_run(image_cfg, tiny_resnet, image_folder(tmp_path_factory.mktemp("image-run") / "imgs"))


def test_evaluate_a_trained_image_classifier_reproduces_fit(image_run, tmp_path):
    result, data = image_run
    scored = evaluate(image_cfg(result.output_dir, data), console=Console(quiet=True))
    assert scored["metrics"] == result.after
    reordered = permute_head(result.output_dir, tmp_path / "reordered", [1, 2, 0], ("classifier.1.weight", "classifier.1.bias"))
    again = evaluate(image_cfg(reordered, data), console=Console(quiet=True))
    assert again["metrics"] == scored["metrics"] and again["examples"] == scored["examples"]


def test_image_labels_must_match(image_run, tiny_resnet, tmp_path):
    result, _ = image_run
    other = image_folder(tmp_path / "other", {"blue": "cyan"}, n_per_class=4)
    with pytest.raises(TunewiseError, match="'cyan' is not a label of the model; 'blue' is not in the data$"):
        evaluate(image_cfg(result.output_dir, other), console=Console(quiet=True))
    with pytest.raises(TunewiseError, match=f"model: {tiny_resnet} has no trained classification head"):
        evaluate(image_cfg(tiny_resnet, other), console=Console(quiet=True))
    cfg = image_cfg(tiny_resnet, other)
    cfg.model = None  # the packaged EfficientNet-Lite0: an unnamed ImageNet head
    with pytest.raises(TunewiseError, match=r"efficientnet-lite0 \(packaged\) has no trained classification head"):
        evaluate(cfg, console=Console(quiet=True))
