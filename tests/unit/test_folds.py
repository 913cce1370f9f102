"""k-fold cross-validation end to end through the CLI: fit, --final-fit, evaluate, classification, bad K."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from tunewise.cli.app import app
from tunewise.config import load_config
from tunewise.errors import TunewiseError

TRAIN = ["--epochs", "1", "--batch-size", "8", "--lr", "1e-3"]


def _fit(tiny_st_model, pairs_file, out, *extra):
    return CliRunner().invoke(app, ["fit", "--train", str(pairs_file), "--model", tiny_st_model, "-o", str(out), *TRAIN, *extra])


def test_fit_folds_reports_every_fold_and_saves_no_model(tiny_st_model, pairs_file, tmp_path):
    out = tmp_path / "run"
    result = _fit(tiny_st_model, pairs_file, out, "--folds", "3")
    assert result.exit_code == 0, result.output
    assert "3-fold cross-validation" in result.output and "mean" in result.output and "std" in result.output
    assert "pooled over 3 folds" in result.output and "no model saved" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "folds.md", "metrics.json"]  # no weights, no card
    m = json.loads((out / "metrics.json").read_text())
    folds, p = m["folds"], m["primary_metric"]
    assert folds["k"] == 3 and len(folds["rows"]) == 3 and m["model_saved"] is False and m["final_fit"] is None
    # the 60 pairs have 60 distinct queries: each is held out once, so the pooled interval pairs 60 items
    assert sum(r["held_out"] for r in folds["rows"]) == 60 == m["uncertainty"][p]["n"]
    assert all(r["train_examples"] + r["held_out"] == 60 for r in folds["rows"])
    for r in folds["rows"]:
        assert r["gain"] == pytest.approx(r["after"][p] - r["before"][p])
    gains = [r["gain"] for r in folds["rows"]]
    assert folds["summary"][p]["gain"]["mean"] == pytest.approx(sum(gains) / 3)
    assert folds["summary"][p]["gain"]["std"] == pytest.approx(__import__("statistics").stdev(gains))
    # the pooled items are every fold's held-out scores, so their mean gain is the size-weighted mean of the folds'
    items = m["items"][p]
    pooled_gain = (sum(items["after"]) - sum(items["before"])) / 60
    assert m["uncertainty"][p]["difference"] == pytest.approx(pooled_gain)
    weighted = sum(r["gain"] * r["held_out"] for r in folds["rows"]) / 60
    assert pooled_gain == pytest.approx(weighted)
    assert m["uncertainty"][p]["abs_low"] <= pooled_gain <= m["uncertainty"][p]["abs_high"]
    assert "| mean ± std |" in (out / "folds.md").read_text()


def test_final_fit_saves_a_model_labelled_as_not_evaluated(tiny_st_model, pairs_file, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "run"
    result = _fit(tiny_st_model, pairs_file, out, "--folds", "2", "--final-fit")
    assert result.exit_code == 0, result.output
    assert "final model" in result.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["model_saved"] is True
    final = m["final_fit"]
    assert final["evaluated_on_held_out"] is False and final["train_examples"] == 60 and "not evaluated" in final["note"]
    card = (out / "README.md").read_text()
    assert "Not evaluated on held-out data" in card and "2-fold" in card and "library_name: sentence-transformers" in card
    assert SentenceTransformer(str(out)).encode(["a roof question"]).shape == (1, 32)


def test_final_fit_needs_folds(tiny_st_model, pairs_file, tmp_path):
    result = _fit(tiny_st_model, pairs_file, tmp_path / "run", "--final-fit")
    assert result.exit_code == 2 and "--final-fit" in result.output and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("k", "expect"), [("1", "at least 2, e.g. 5; got 1"),
                                           ("61", "61 folds need at least 61 query groups (a query with its answers); the data has 60")])
def test_bad_k_is_one_line_and_writes_nothing(tiny_st_model, pairs_file, tmp_path, k, expect):
    result = _fit(tiny_st_model, pairs_file, tmp_path / "run", "--folds", k)
    assert result.exit_code == 2, result.output
    assert expect in result.output and "--folds" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_a_task_without_fold_splitting_says_so(tiny_st_model):
    from tunewise.folds import fold_splits

    cfg = load_config(None, ["eval.folds=3"])
    with pytest.raises(TunewiseError, match="task 'embedding' cannot split its data into folds"):
        fold_splits(object(), cfg)


def test_evaluate_folds_scores_every_query_once(tiny_st_model, pairs_file):
    runner = CliRunner()
    argv = ["evaluate", "--train", str(pairs_file), "--model", tiny_st_model, "--folds", "3"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert "fold 3" in result.output and "mean ± std" in result.output
    data = json.loads(runner.invoke(app, [*argv, "--json"]).stdout)
    folds = data["folds"]
    assert len(folds["rows"]) == 3 and folds["pooled"]["mrr@20"]["n"] == 60
    pooled = folds["pooled"]["mrr@20"]
    assert pooled["low"] <= pooled["value"] <= pooled["high"]
    assert data["metrics"]["mrr@20"] == pytest.approx(sum(r["metrics"]["mrr@20"] for r in folds["rows"]) / 3)


def _texts_file(path, n_per_class=8):
    rng = random.Random(0)
    rows = []
    for label, words in (("alpha", range(0, 3)), ("beta", range(10, 13)), ("gamma", range(20, 23))):
        for i in range(n_per_class):
            rows.append({"text": " ".join(f"w{rng.choice(list(words))}" for _ in range(5)) + f" n{i}", "label": label})
    rows.append(dict(rows[0]))  # a duplicate text: its two copies must land on one side
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_classification_folds_are_stratified_end_to_end(tiny_bert, tmp_path):
    data, out = _texts_file(tmp_path / "texts.jsonl"), tmp_path / "run"
    argv = ["fit", "--set", "task=classification", "--model", str(tiny_bert), "--train", str(data), "-o", str(out),
            "--epochs", "2", "--lr", "1e-3", "--batch-size", "8", "--final-fit", "--folds", "4"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    folds = m["folds"]
    assert folds["stratified"] and folds["groups"] == 24 and "stratified by class" in folds["grouping"]
    assert sum(r["held_out"] for r in folds["rows"]) == 25 == m["uncertainty"]["accuracy"]["n"]
    assert all(r["before"]["accuracy"] >= 0 and 0 <= r["after"]["accuracy"] <= 1 for r in folds["rows"])
    assert set(m["uncertainty"]) >= {"accuracy", "macro_f1"}  # macro F1 pools per-item codes across folds
    assert json.loads((out / "classification_report.json").read_text()) == {"before": None, "after": None}
    # the saved classifier, scored fold by fold on every item (it trained on all of them: no held-out claim)
    scored = CliRunner().invoke(app, ["evaluate", "--set", "task=classification", "--model", str(out), "--train", str(data),
                                      "--folds", "4", "--json"])
    assert scored.exit_code == 0, scored.output
    folds_eval = json.loads(scored.stdout)["folds"]
    assert len(folds_eval["rows"]) == 4 and folds_eval["pooled"]["accuracy"]["n"] == 25
    # 8 items in the smallest classes (beta, gamma): 10 stratified folds cannot hold each class out
    bad = CliRunner().invoke(app, [*argv[:-1], "10", "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "class 'beta' has 8" in bad.output and not (tmp_path / "bad").exists()


def test_budget_with_folds_repeats_each_size_once_per_fold(tiny_st_model, pairs_file, tmp_path):
    out = tmp_path / "budget"
    result = CliRunner().invoke(app, ["budget", "--train", str(pairs_file), "--model", tiny_st_model, "-o", str(out),
                                      "--folds", "2", "--sizes", "6,12", "--no-time", "--set", "train.epochs=1",
                                      "--set", "train.batch_size=8", "--lr", "1e-3"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    points = [p for p in lines if p.get("kind") == "data"]
    assert sorted((p["size"], p["seed"]) for p in points) == [(6, 0), (6, 1), (12, 0), (12, 1)]  # folds replace seeds
    befores = {p["seed"]: p["metric_before"] for p in points}
    assert len(set(befores.values())) == 2  # each fold's points are scored against that fold's own "before"
    assert all(p["metric_before"] == befores[p["seed"]] for p in points)


@pytest.mark.parametrize(("argv", "expect"), [
    (["--folds", "3", "--sizes", "2,10"], "--sizes: the smallest size 2 is smaller than --folds 3"),
    (["--folds", "100"], "100 folds need at least 100"),
    (["--folds", "1"], "eval.folds (--folds): must be a whole number of at least 2"),
])
def test_budget_bad_folds_are_one_line_and_write_nothing(tiny_st_model, pairs_file, tmp_path, argv, expect):
    out = tmp_path / "budget"
    result = CliRunner().invoke(app, ["budget", "--train", str(pairs_file), "--model", tiny_st_model, "-o", str(out), *argv])
    assert result.exit_code == 2, result.output
    assert expect in result.output and len(result.output.strip().splitlines()) == 1
    assert not (out / "results.jsonl").exists()


def test_image_classification_folds_keep_a_copied_image_on_one_side_and_final_fit_saves(tiny_resnet, tmp_path):
    import shutil

    from PIL import Image
    from rich.console import Console

    from tunewise.run import fit

    rng = random.Random(0)
    root = tmp_path / "imgs"
    for label, colour in {"red": (220, 30, 30), "blue": (30, 40, 220)}.items():
        (root / label).mkdir(parents=True)
        for i in range(6):
            img = Image.new("RGB", (24, 24), tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in colour))
            img.putpixel((rng.randrange(24), rng.randrange(24)), (0, 0, 0))
            img.save(root / label / f"{i}.png")
    shutil.copy(root / "red" / "0.png", root / "red" / "copy-of-0.png")  # the same image twice: one group
    out = tmp_path / "run"
    cfg = load_config(None, ["task=image-classification", f"model={tiny_resnet}", f"data.train={root}", f"output_dir={out}",
                             "image.size=32", "train.epochs=1", "train.batch_size=6", "eval.folds=3", "eval.final_fit=true"])
    m = fit(cfg, console=Console(quiet=True)).metrics
    folds = m["folds"]
    assert folds["groups"] == 12 and sum(r["held_out"] for r in folds["rows"]) == 13
    assert all(r["train_examples"] + r["held_out"] == 13 for r in folds["rows"])
    assert m["final_fit"]["train_examples"] == 13 and (out / "model.safetensors").is_file()
    report = json.loads((out / "classification_report.json").read_text())
    assert report == {"before": None, "after": None}  # no fold's held-out scores are passed off as the final model's


def test_evaluate_gives_each_metric_a_bootstrap_interval(tiny_st_model, pairs_file):
    """`tunewise evaluate` (one split): each score with how far to trust it on this evaluation set."""
    runner = CliRunner()
    argv = ["evaluate", "--train", str(pairs_file), "--model", tiny_st_model]
    shown = runner.invoke(app, argv)
    assert shown.exit_code == 0 and "95% CI" in shown.output, shown.output
    data = json.loads(runner.invoke(app, [*argv, "--json"]).stdout)
    ci = data["intervals"]["mrr@20"]
    assert ci["low"] <= data["metrics"]["mrr@20"] <= ci["high"] and ci["n"] > 1
