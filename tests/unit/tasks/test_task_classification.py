"""Text classification: metrics against scikit-learn, splits, a tiny BERT end to end, CLI errors."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch

from tunewise.config import load_config
from tunewise.errors import TunewiseError
from tunewise.evaluate.classification import (
    CLASSIFICATION_METRICS,
    accuracy,
    classification_metrics,
    confusion_matrix,
    per_class,
)
from tunewise.tasks import TASKS

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# -- pure metrics ---------------------------------------------------------------------------


def test_hand_derived_case():
    y_true = [0, 0, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 0]
    # class 0: TP 1, predicted twice -> P 1/2; true twice -> R 1/2
    # class 1: TP 2, predicted 3 times -> P 2/3; R 2/2
    # class 2: TP 0 -> P 0 (never predicted), R 0
    rows = per_class(y_true, y_pred, 3)
    assert rows[0]["precision"] == pytest.approx(0.5) and rows[0]["recall"] == pytest.approx(0.5)
    assert rows[1]["precision"] == pytest.approx(2 / 3) and rows[1]["recall"] == pytest.approx(1.0)
    assert rows[2]["precision"] == 0.0 and rows[2]["recall"] == 0.0
    assert accuracy(y_true, y_pred) == pytest.approx(3 / 5)
    assert confusion_matrix(y_true, y_pred, 3) == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_scikit_learn(seed):
    sk = pytest.importorskip("sklearn.metrics")
    rng = random.Random(seed)
    n_classes = 6
    y_true = [rng.randrange(n_classes - 1) for _ in range(80)]  # class 5 never true
    y_pred = [rng.randrange(n_classes) for _ in range(80)]
    ours = classification_metrics(y_true, y_pred, n_classes)
    assert ours["accuracy"] == pytest.approx(sk.accuracy_score(y_true, y_pred))
    for avg in ("macro", "weighted"):
        p, r, f, _ = sk.precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        assert ours[f"{avg}_f1"] == pytest.approx(f)
        if avg == "macro":
            assert ours["macro_precision"] == pytest.approx(p)
            assert ours["macro_recall"] == pytest.approx(r)
    p, r, f, s = sk.precision_recall_fscore_support(y_true, y_pred, labels=list(range(n_classes)), zero_division=0)
    rows = per_class(y_true, y_pred, n_classes)
    assert [x["precision"] for x in rows] == pytest.approx(list(p))
    assert [x["recall"] for x in rows] == pytest.approx(list(r))
    assert [x["support"] for x in rows] == list(s)
    assert confusion_matrix(y_true, y_pred, n_classes) == sk.confusion_matrix(y_true, y_pred, labels=list(range(n_classes))).tolist()


def test_config_lists_the_same_metrics():
    for name in ("classification", "image-classification"):
        assert tuple(m.name for m in TASKS.get(name).spec.metrics) == CLASSIFICATION_METRICS


def test_primary_defaults_per_task():
    assert load_config(None, ["task=classification"]).eval.primary == "accuracy"
    assert load_config(None, ["task=classification", "eval.primary=macro_f1"]).eval.primary == "macro_f1"
    assert load_config(None, ["task=image-search"]).eval.primary == "mrr@20"
    assert load_config(None, []).eval.primary == "mrr@20"
    with pytest.raises(TunewiseError):
        load_config(None, ["task=classification", "eval.primary=ndcg@10"])
    with pytest.raises(TunewiseError):
        load_config(None, ["eval.primary=accuracy"])


# -- splits -----------------------------------------------------------------------------------


def test_stratified_split_keeps_every_class_in_train():
    from tunewise.data.labeled import stratified_split

    labels = [0] * 10 + [1] * 2 + [2] * 5
    train, held = stratified_split(labels, 0.3, None, seed=0)
    assert sorted(train + held) == list(range(len(labels)))
    for c in (0, 1, 2):
        assert any(labels[i] == c for i in train) and any(labels[i] == c for i in held)
    assert stratified_split(labels, 0.3, None, seed=0) == (train, held)  # seeded


def test_single_item_class_is_an_error():
    from tunewise.data.labeled import check_classes

    with pytest.raises(TunewiseError, match="class 'lonely'"):
        check_classes(["a", "a", "lonely"], "data.csv")


def test_probe_folding_reproduces_sklearn():
    """The logistic regression folded into raw-feature weights predicts as sklearn does."""
    pytest.importorskip("sklearn")
    from tunewise.tasks.classifier_shared import fit_probe

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g) * torch.tensor([1.0, 5.0, 0.1, 2.0, 1.0]) + 3
    y = (x[:, 0] + x[:, 1] / 5 > 3).long().tolist()  # two classes
    w, b = fit_probe(x, y, 2, 1.0, 0)
    pred = (x @ w.T + b).argmax(1).tolist()
    assert accuracy(y, pred) > 0.9


# -- a tiny BERT end to end ---------------------------------------------------------------------


def _texts_file(path, n_per_class=12):
    rng = random.Random(0)
    rows = []
    for label, words in (("alpha", range(0, 3)), ("beta", range(10, 13)), ("gamma", range(20, 23))):
        for _ in range(n_per_class):
            rows.append({"text": " ".join(f"w{rng.choice(list(words))}" for _ in range(5)), "label": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_fit_end_to_end(tiny_bert, tmp_path):
    from rich.console import Console
    from transformers import AutoModelForSequenceClassification

    from tunewise.run import fit

    data = _texts_file(tmp_path / "texts.jsonl")
    out = tmp_path / "out"
    cfg = load_config(None, ["task=classification", f"model={tiny_bert}", f"data.train={data}", f"output_dir={out}",
                             "train.epochs=6", "train.learning_rate=1e-3", "train.batch_size=8", "data.eval_fraction=0.25",
                             "train.warmup_ratio=0"])
    result = fit(cfg, console=Console(quiet=True))
    m = result.metrics
    assert m["primary_metric"] == "accuracy"
    assert set(m["before"]) == set(CLASSIFICATION_METRICS)
    assert m["after"]["accuracy"] >= 0.9  # three disjoint vocabularies: easy once trained
    # accuracy has per-item scores (correct = 1); macro metrics are recomputed on resampled items
    items = m["items"]["accuracy"]["after"]
    assert set(items) <= {0.0, 1.0} and sum(items) / len(items) == pytest.approx(m["after"]["accuracy"])
    assert set(m["uncertainty"]) == set(CLASSIFICATION_METRICS)

    # per-item scores average to the reported metrics: the paired intervals' point gain is after - before
    for name, interval in m["uncertainty"].items():
        assert interval["difference"] == pytest.approx(m["after"][name] - m["before"][name], abs=1e-9), name
    losses = m["train"]["history"][-1]["train_loss_per_epoch"]
    assert losses[-1] < losses[0]  # the loss goes down
    assert m["examples"]["before"][0].keys() >= {"input", "expected", "output", "correct"}
    report = json.loads((out / "classification_report.json").read_text())
    assert len(report["after"]["confusion_matrix"]) == 3
    assert set(report["before"]["per_class"]) == {"alpha", "beta", "gamma"}
    # the ecosystem's own loader opens the output, with the labels
    loaded = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert set(loaded.config.id2label.values()) == {"alpha", "beta", "gamma"}


def test_baseline_is_a_fitted_head_on_frozen_features(tiny_bert, tmp_path):
    from tunewise.tasks.classification import ClassificationTask

    data_file = _texts_file(tmp_path / "texts.jsonl")
    cfg = load_config(None, ["task=classification", f"model={tiny_bert}", f"data.train={data_file}", "classify.init_head=false"])
    task = ClassificationTask()
    data = task.prepare_data(cfg)
    model = task.load_model(cfg, "cpu")
    backbone_before = {k: v.clone() for k, v in model.base_model.state_dict().items()}
    head_before = model.classifier.weight.detach().clone()
    result = task.baseline(model, data, cfg)
    assert result.metrics["accuracy"] > 0.6  # separable words: the probe learns them
    assert all(torch.equal(v, model.base_model.state_dict()[k]) for k, v in backbone_before.items())  # frozen
    assert torch.equal(model.classifier.weight, head_before)  # init_head=false restores the random head


# -- bad input through the CLI --------------------------------------------------------------------


def _cli(args):
    from typer.testing import CliRunner

    from tunewise.cli.app import app

    return CliRunner().invoke(app, args)


def _assert_one_line_error(result, needle):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert needle in lines[0]
    assert "Traceback" not in result.output


def test_cli_missing_label_value(tmp_path):
    data = tmp_path / "t.csv"
    data.write_text("text,label\nhello,a\nworld,\nagain,a\n")
    result = _cli(["fit", "--train", str(data), "--set", "task=classification", "-o", str(tmp_path / "o")])
    _assert_one_line_error(result, "row 2")


def test_cli_missing_label_column(tmp_path):
    data = tmp_path / "t.csv"
    data.write_text("text,category\nhello,a\nworld,b\n")
    result = _cli(["fit", "--train", str(data), "--set", "task=classification", "-o", str(tmp_path / "o")])
    _assert_one_line_error(result, "no column 'label'")


def test_cli_single_item_class(tmp_path):
    data = tmp_path / "t.csv"
    data.write_text("text,label\nhello,a\nworld,a\nagain,b\n")
    result = _cli(["fit", "--train", str(data), "--set", "task=classification", "-o", str(tmp_path / "o")])
    _assert_one_line_error(result, "class 'b'")


def test_head_strategy_trains_only_the_classifier_on_cached_features(tiny_bert, tmp_path, monkeypatch):
    from rich.console import Console

    from tunewise.run import fit

    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    data = _texts_file(tmp_path / "texts.jsonl")

    def run(out, *extra):
        cfg = load_config(None, ["task=classification", f"model={tiny_bert}", f"data.train={data}", f"output_dir={out}",
                                 "train.epochs=3", "train.batch_size=8", "data.eval_fraction=0.25", "strategy=head", *extra])
        return fit(cfg, console=Console(quiet=True)).metrics

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    s = first["strategy"]
    assert s["name"] == "head" and s["trainable_params"] == 16 * 3 + 3  # the final Linear(16 -> 3) only
    c1, c2 = s["details"]["feature_cache"], second["strategy"]["details"]["feature_cache"]
    assert c1["status"] == "miss" and 0 < c1["encoded"] <= c1["inputs"] and c2["status"] == "hit"  # duplicates once
    assert second["after"] == first["after"]  # the same cached features, the same seeded head
    assert len(s["details"]["epoch_losses"]) == 3
    assert first["after"]["accuracy"] >= first["before"]["accuracy"] - 0.1  # starts from the fitted probe
    with pytest.raises(TunewiseError, match="strategy.dim: a classifier's head is its final linear layer"):
        run(tmp_path / "c", "strategy={name: head, dim: 8}")
    assert not (tmp_path / "c").exists()


def test_budget_points_start_from_the_probe_fitted_on_their_own_subset(tiny_bert, tmp_path, monkeypatch):
    from rich.console import Console

    from tunewise.budget import run_budget
    from tunewise.tasks.classification import ClassificationTask

    data = _texts_file(tmp_path / "texts.jsonl")
    seen: list[int] = []
    original = ClassificationTask.init_head

    def spy(self, model, subset, config):
        seen.append(len(subset.train))
        return original(self, model, subset, config)

    monkeypatch.setattr(ClassificationTask, "init_head", spy)
    cfg = {"task": "classification", "model": str(tiny_bert), "data": {"train": str(data), "eval_fraction": 0.25},
           "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-4}}
    result = run_budget(cfg, sizes=[9, 18], seeds=1, time_sweep=False, output_dir=tmp_path / "b", console=Console(quiet=True))
    assert sorted(seen) == [9, 18]
    # starting from the probe, a short fine-tune stays near the probe's accuracy, not at chance (1/3)
    assert all(p.metric_after > 0.5 for p in result.points)


def test_merge_of_a_classification_lora_run_gives_base_plus_adapter_plus_head(tiny_bert, tmp_path):
    """`tunewise merge` on a classifier (merge: false): a plain model equal to the base model with the
    adapter applied and the run's trained head, with the run's labels."""
    from peft import PeftModel
    from rich.console import Console
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunewise.run import fit
    from tunewise.strategies.lora import merge_run

    data = _texts_file(tmp_path / "texts.jsonl")
    out = tmp_path / "out"
    cfg = load_config(None, ["task=classification", f"model={tiny_bert}", f"data.train={data}", f"output_dir={out}",
                             "train.epochs=2", "train.batch_size=8", "data.eval_fraction=0.25", "train.learning_rate=1e-2",
                             "strategy={name: lora, rank: 4, merge: false}"])
    fit(cfg, console=Console(quiet=True))
    merged_dir = merge_run(out, tmp_path / "merged")
    merged = AutoModelForSequenceClassification.from_pretrained(str(merged_dir)).eval()
    assert sorted(merged.config.id2label.values()) == ["alpha", "beta", "gamma"]
    assert json.loads((merged_dir / "merged_from.json").read_text())["strategy"] == "lora"

    # by hand: the pre-trained body, the adapter on it, the run's head
    labels = merged.config.id2label
    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=3, id2label=labels,
                                                              label2id={v: k for k, v in labels.items()})
    base.bert = PeftModel.from_pretrained(base.bert, str(out / "adapter")).merge_and_unload()
    base.classifier.load_state_dict(merged.classifier.state_dict())
    base.eval()
    batch = AutoTokenizer.from_pretrained(str(merged_dir))(["w0 w1 w2", "w20 w21 w22"], return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, base(**batch).logits)
        untrained = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=3).eval()
        untrained.classifier.load_state_dict(merged.classifier.state_dict())
        assert not torch.allclose(untrained(**batch).logits, merged(**batch).logits)  # the adapter did change the body
