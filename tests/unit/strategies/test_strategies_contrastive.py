"""Strategy contrastive (the SetFit recipe): pair sampling, training on a tiny random BERT, the saved
classifier predicting what the trained one did, option errors, compare and a budget point."""

from __future__ import annotations

import json
import os
import random
from collections import Counter

import pytest
from rich.console import Console

from tunewise.errors import TunewiseError
from tunewise.run import as_config as load_config
from tunewise.strategies.contrastive import sample_pairs

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- pair sampling ---------------------------------------------------------------------------


def test_pairs_are_balanced_seeded_and_num_iterations_per_item():
    labels = [0, 0, 0, 1, 1, 2]  # class 2 has one item
    pairs = sample_pairs(labels, num_iterations=3, seed=7)
    assert len(pairs) == 2 * 3 * len(labels)  # one positive and one negative per item per iteration
    assert Counter(s for _, _, s in pairs) == {1.0: 18, 0.0: 18}
    assert Counter(i for i, _, _ in pairs) == {i: 6 for i in range(len(labels))}  # every item anchors as often
    for i, j, s in pairs:
        assert (labels[i] == labels[j]) == (s == 1.0)
        if s == 1.0 and labels.count(labels[i]) > 1:
            assert i != j  # a positive partner is another item while the class has one
    assert (5, 5, 1.0) in pairs  # the lone item of class 2 pairs with itself
    assert sample_pairs(labels, 3, seed=7) == pairs
    assert sample_pairs(labels, 3, seed=8) != pairs


def test_pairs_need_two_classes():
    with pytest.raises(TunewiseError, match="fewer than two classes"):
        sample_pairs([1, 1, 1], 2, seed=0)


# -- training on a tiny BERT ----------------------------------------------------------------


def _texts_file(path, n_per_class=12):
    rng = random.Random(0)
    rows = []
    for label, words in (("alpha", range(0, 3)), ("beta", range(10, 13)), ("gamma", range(20, 23))):
        for _ in range(n_per_class):
            rows.append({"text": " ".join(f"w{rng.choice(list(words))}" for _ in range(5)), "label": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tiny_bert, data, out, **strategy):
    return {"task": "classification", "model": str(tiny_bert), "output_dir": str(out),
            "data": {"train": str(data), "eval_fraction": 0.25},
            "train": {"batch_size": 8, "learning_rate": 1e-3},
            "strategy": {"name": "contrastive", "num_iterations": 2, **strategy}}


@pytest.fixture(scope="module")
def fitted(tiny_bert, tmp_path_factory):
    from tunewise import fit

    tmp = tmp_path_factory.mktemp("contrastive")
    data = _texts_file(tmp / "texts.jsonl")
    result = fit(_config(tiny_bert, data, tmp / "run"), console=Console(quiet=True))
    return result, data, tmp


def test_trains_pairs_and_reports_them(fitted):
    result, _, _ = fitted
    m = result.metrics
    assert m["strategy"]["name"] == "contrastive"
    details = m["strategy"]["details"]
    n_train = m["train"]["examples"]
    assert details["pairs"] == 2 * 2 * n_train
    assert m["train"]["steps"] == -(-details["pairs"] // 8)  # one pass, batch 8
    assert details["pair_losses"] and all(x == x for x in details["pair_losses"])  # logged, not NaN
    assert m["train"]["epochs"] == 1.0
    assert m["after"]["accuracy"] >= 0.0


def test_saved_folder_is_a_classifier_that_predicts_as_trained(fitted):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result, data, _ = fitted
    out = result.output_dir
    model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    texts = [e["input"] for e in result.metrics["examples"]["after"]]
    with torch.inference_mode():
        preds = model(**tok(texts, padding=True, return_tensors="pt")).logits.argmax(-1).tolist()
    labels = [model.config.id2label[p] for p in preds]
    assert labels == [e["output"] for e in result.metrics["examples"]["after"]]

    from tunewise import evaluate

    cfg = _config(result.output_dir.parent.parent / "unused", data, out)
    cfg["model"] = str(out)
    again = evaluate(cfg, console=Console(quiet=True))
    assert again["metrics"]["accuracy"] == pytest.approx(result.metrics["after"]["accuracy"])


def test_head_is_the_logistic_regression_on_the_tuned_features(tiny_bert, tmp_path):
    """After training, the head equals a fresh probe fit on the trained body's head inputs."""
    import torch

    from tunewise.strategies.base import resolve_strategy
    from tunewise.tasks import TASKS
    from tunewise.tasks.classifier_shared import fit_probe, head_inputs, head_linear

    cfg = load_config(_config(tiny_bert, _texts_file(tmp_path / "t.jsonl"), tmp_path / "o"))
    task = TASKS.get("classification")()
    data = task.prepare_data(cfg)
    model = task.load_model(cfg, "cpu")
    strategy, options = resolve_strategy(cfg)
    model = strategy.prepare(model, task, options, cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    strategy.train(model, task, data, options, cfg, workdir=tmp_path / "w")
    body = [n for n in before if "classifier" not in n and "pooler" not in n]
    assert any(not torch.equal(before[n], dict(model.named_parameters())[n]) for n in body)  # the body trained
    head = head_linear(model, data.n_classes)
    feats = head_inputs(model, head, task.feature_batches(data.train, 64), "cpu")
    w, b = fit_probe(feats, data.train_labels, data.n_classes, cfg.classify.baseline_c, cfg.seed)
    assert torch.allclose(head.weight, w, atol=1e-5) and torch.allclose(head.bias, b, atol=1e-5)


@pytest.mark.parametrize(("strategy", "message"), [
    ({"num_iterations": 0}, "strategy.num_iterations: must be at least 1"),
    ({"pair_loss": "triplet"}, "strategy.pair_loss: use cosine or contrastive"),
    ({"rank": 4}, "strategy.rank: does not apply to strategy 'contrastive'"),
])
def test_bad_options_are_one_line(tiny_bert, tmp_path, strategy, message):
    from tunewise.strategies.base import resolve_strategy

    with pytest.raises(TunewiseError, match=message) as err:
        resolve_strategy(load_config(_config(tiny_bert, tmp_path / "t.jsonl", tmp_path / "o", **strategy)))
    assert "\n" not in str(err.value)


def test_refused_for_tasks_without_a_classifier_head_and_with_early_stopping(tiny_bert, tmp_path):
    from tunewise.strategies.base import resolve_strategy

    cfg = load_config({"task": "embedding", "data": {"train": str(tmp_path / "p.jsonl")}, "strategy": {"name": "contrastive"}})
    with pytest.raises(TunewiseError, match="task 'embedding' has none"):
        resolve_strategy(cfg)
    raw = _config(tiny_bert, tmp_path / "t.jsonl", tmp_path / "o")
    raw["train"]["early_stopping_patience"] = 2
    with pytest.raises(TunewiseError, match="train.early_stopping_patience"):
        resolve_strategy(load_config(raw))


def test_compare_and_a_budget_point(fitted, tiny_bert):
    from tunewise.budget import run_budget
    from tunewise.compare import compare

    _, data, tmp = fitted
    cfg = load_config(_config(tiny_bert, data, tmp / "unused"))
    table = compare(cfg, ["head", "contrastive:num_iterations=1"], tmp / "compare", console=Console(quiet=True))
    names = [r["strategy"] for r in table["rows"]]
    assert any("contrastive" in n for n in names) and any("head" in n for n in names)
    swept = run_budget(_config(tiny_bert, data, tmp / "unused"), sizes=[12], seeds=1, time_sweep=False,
                       output_dir=tmp / "budget", console=Console(quiet=True))
    (point,) = [p for p in swept.points if p.kind == "data"]
    assert point.size == 12 and 0.0 <= point.metric_after <= 1.0
