"""The budget planner end to end on a lower-is-better metric: a real sweep of the tiny random Llama
scored by its held-out loss (``eval.primary=eval_loss``), where a falling loss is the improvement."""

from __future__ import annotations

import dataclasses
import json

import pytest
from rich.console import Console

from tiny_models import json_rows, lm_config, write_jsonl  # noqa: E402

SIZES = [8, 16, 32]  # json_rows(40) with eval_size 8 leaves 32 training examples


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def loss_primary():
    """Let eval_loss be the primary metric, whatever causal_lm's own rule on it is today.

    The planner is what is under test; the task declares eval_loss lower-is-better either way.
    """
    from tunewise.tasks.base import Metric
    from tunewise.tasks.causal_lm import CausalLMTask

    spec = CausalLMTask.spec
    metrics = tuple(Metric(m.name, m.higher_is_better) if m.name == "eval_loss" else m for m in spec.metrics)
    CausalLMTask.spec = dataclasses.replace(spec, metrics=metrics)
    yield
    CausalLMTask.spec = spec


@pytest.fixture(scope="module")
def swept(tiny_llama, tmp_path_factory, loss_primary):
    from tunewise.budget import run_budget

    tmp = tmp_path_factory.mktemp("lm-budget")
    data = write_jsonl(tmp / "train.jsonl", json_rows(40))
    cfg = lm_config(tmp, tiny_llama, data, strategy="full", train__epochs=2, eval__primary="eval_loss",
                    llm__max_new_tokens=4)
    return run_budget(cfg, sizes=SIZES, seeds=2, epochs=2, output_dir=tmp / "budget", console=Console(quiet=True))


@pytest.mark.slow
def test_a_falling_loss_is_the_improvement_in_rows_knee_recommendation_and_summary(swept):
    result = swept
    assert result.metric == "eval_loss" and result.higher_is_better is False
    assert all(p.higher_is_better is False for p in result.points)
    rows = result.data_summary
    assert [r.size for r in rows] == SIZES and all(r.n == 2 for r in rows)
    for r in rows:  # the improvement is the relative fall of the loss, recomputed from the rows' own means
        assert r.mean_metric < r.mean_metric_before  # the tiny model learns: its held-out loss falls
        per_point = [(p.metric_before - p.metric_after) / p.metric_before for p in result.points
                     if p.kind == "data" and p.size == r.size]
        assert r.mean_rel_improvement == pytest.approx(sum(per_point) / len(per_point))
        assert r.mean_rel_improvement > 0 and r.roi > 0
    # more data, lower loss: the largest size improves most
    assert rows[-1].mean_rel_improvement > rows[0].mean_rel_improvement

    rec = result.recommendation
    assert rec.items in SIZES
    chosen = next(r for r in rows if r.size == rec.items)
    assert f"With {rec.items} items eval_loss (lower is better) fell from {chosen.mean_metric_before:.4g} to " \
           f"{chosen.mean_metric:.4g} ({-100 * chosen.mean_rel_improvement:+.1f}%)" in rec.text, rec.text
    assert "did not improve" not in rec.text and "relative improvement" not in rec.text
    assert "knee" in rec.text  # its stability over the 2 seeds
    assert result.knee_stability is not None and result.knee_stability.units == 2

    summary = json.loads(result.summary_path.read_text())
    assert summary["higher_is_better"] is False and summary["metric"] == "eval_loss"
    assert [row["higher_is_better"] for row in summary["data"]] == [False] * 3
    assert summary["data"][-1]["mean_rel_improvement"] == pytest.approx(rows[-1].mean_rel_improvement)
    assert summary["data_knee_stability"]["resamples"] == 1000
    fc = summary["forecast"]  # the forecast reads the points' direction: a falling curve, not a rising one
    assert fc is not None and all(m < result.metric_before for m in fc["mean"])
    assert fc["mean"] == sorted(fc["mean"], reverse=True)
    knee = summary["data_knee_items"]
    assert knee is None or knee == rec.items

    # the time curve: a loss falling over epochs is improvement too
    assert result.time_summary and all(r.mean_rel_improvement > 0 for r in result.time_summary)
    html = result.report_path.read_text()
    assert "rel. reduction" in html and "Relative reduction over the pre-trained model against labeled" in html
    assert "rel. improvement" not in html


@pytest.mark.slow
def test_metrics_json_relative_improvement_follows_each_metrics_direction(tiny_llama, tmp_path, loss_primary):
    from tunewise.run import fit

    data = write_jsonl(tmp_path / "train.jsonl", json_rows(40))
    m = fit(lm_config(tmp_path, tiny_llama, data, strategy="full", train__epochs=3, llm__max_new_tokens=4),
            console=Console(quiet=True)).metrics
    before, after, rel = m["before"], m["after"], m["relative_improvement"]
    assert after["eval_loss"] < before["eval_loss"]  # it learns
    assert rel["eval_loss"] == pytest.approx((before["eval_loss"] - after["eval_loss"]) / before["eval_loss"])
    assert rel["eval_loss"] > 0 and rel["perplexity"] > 0  # falls are improvements
    assert rel["answer_likelihood"] == pytest.approx(
        (after["answer_likelihood"] - before["answer_likelihood"]) / before["answer_likelihood"])
