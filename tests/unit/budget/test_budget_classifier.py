"""A classifier's budget sweep compares every point with two probes: one fitted on all training
items (the sweep's "before") and one fitted on the point's own subset (equal labels)."""

from __future__ import annotations

import json
import random

import pytest
from rich.console import Console

SIZES = [9, 27]  # 36 texts, eval_fraction 0.25: 27 training texts, 9 evaluation texts
N_EVAL = 9


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _texts_file(path, n_per_class=12):
    rng = random.Random(0)
    rows = []
    for label, words in (("alpha", range(0, 3)), ("beta", range(10, 13)), ("gamma", range(20, 23))):
        for _ in range(n_per_class):
            rows.append({"text": " ".join(f"w{rng.choice(list(words))}" for _ in range(5)), "label": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tiny_bert, data, **classify):
    return {"task": "classification", "model": str(tiny_bert), "data": {"train": str(data), "eval_fraction": 0.25},
            "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-4}, "classify": classify}


@pytest.fixture(scope="module")
def swept(tiny_bert, tmp_path_factory):
    from tunewise.budget import run_budget

    tmp = tmp_path_factory.mktemp("clf-budget")
    cfg = _config(tiny_bert, _texts_file(tmp / "texts.jsonl"))
    return run_budget(cfg, sizes=SIZES, seeds=2, epochs=1, output_dir=tmp / "budget", console=Console(quiet=True))


def test_every_point_has_the_probe_at_equal_labels(swept):
    result = swept
    assert result.equal_labels
    assert all(p.metric_before_equal_labels is not None for p in result.points)
    before = result.metric_before
    for p in result.points:
        if p.size == 27:  # all training items: the same probe as the sweep's "before" (item order aside)
            assert abs(p.metric_before_equal_labels - before) <= 1 / N_EVAL + 1e-9
        assert p.extra["probe_eval_seconds"] >= 0
    for r in result.data_summary:
        pts = [p for p in result.points if p.kind == "data" and p.size == r.size]
        probes = [p.metric_before_equal_labels for p in pts]
        assert r.mean_metric_before_equal_labels == pytest.approx(sum(probes) / len(probes))
        expected = [(p.metric_after - q) / q for p, q in zip(pts, probes) if q]
        assert r.mean_rel_improvement_equal_labels == pytest.approx(sum(expected) / len(expected))
        # the all-items comparison keeps its meaning: against the one "before"
        assert r.mean_metric_before == pytest.approx(before)
    assert all(p.metric_before_equal_labels is not None for p in result.points if p.kind == "time")


def test_report_summary_and_cli_table_show_both_comparisons(swept, monkeypatch):
    import tunewise.cli.budget as cli

    result = swept
    summary = json.loads(result.summary_path.read_text())
    assert len(summary["baselines"]) == 2 and "same labeled items" in summary["baselines"][1]
    row = summary["data"][0]
    assert {"mean_metric_before_equal_labels", "mean_rel_improvement_equal_labels", "std_equal_labels"} <= set(row)
    assert summary["metric_before"] == pytest.approx(result.metric_before)  # "before" unchanged: all items
    html = result.report_path.read_text()
    assert "vs same-items probe" in html and "vs all-items probe" in html and "probe, same items" in html
    assert "Orange, dashed: against the probe fitted on the same labeled items" in html
    assert "Against a frozen-feature probe fitted on the same labeled items" in result.recommendation.text

    console = Console(record=True, width=250)
    monkeypatch.setattr(cli, "console", console)
    cli._show(result)
    text = console.export_text()
    assert "probe on all items" in text and "vs same-items probe" in text and "knee stability:" in text


def test_without_init_head_the_probe_is_scored_and_the_head_put_back(tiny_bert, tmp_path, monkeypatch):
    import torch

    import tunewise.tasks.classifier_shared as shared
    from tunewise.budget import run_budget
    from tunewise.tasks.classification import ClassificationTask

    probes: list[torch.Tensor] = []
    heads: list[torch.Tensor] = []
    fit_probe, train = shared.fit_probe, ClassificationTask.train

    def probe_spy(*args, **kwargs):
        weight, bias = fit_probe(*args, **kwargs)
        probes.append(weight.clone())
        return weight, bias

    def train_spy(self, model, data, config, **kwargs):  # the head fine-tuning starts from
        heads.append(self.head_modules(model)[0].weight.detach().float().cpu().clone())
        return train(self, model, data, config, **kwargs)

    monkeypatch.setattr(shared, "fit_probe", probe_spy)
    monkeypatch.setattr(ClassificationTask, "train", train_spy)
    cfg = _config(tiny_bert, _texts_file(tmp_path / "texts.jsonl"), init_head=False)
    result = run_budget(cfg, sizes=[27], seeds=1, time_sweep=False, output_dir=tmp_path / "b", console=Console(quiet=True))
    (point,) = result.points
    assert abs(point.metric_before_equal_labels - result.metric_before) <= 1 / N_EVAL + 1e-9
    assert len(probes) == 2 and len(heads) == 1  # the sweep's "before" and this point's probe; one fine-tune
    assert not torch.allclose(heads[0], probes[1])  # init_head off: fine-tuning does not start from the probe
