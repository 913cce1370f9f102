"""Lower-is-better metrics (a loss, WER) in the planner's maths and words: a fall is the improvement.

Hand-derived numbers, one comment per number; the same curve is run through both directions to
show that only the words change.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from tunewise.budget.advice import change_text, gain_name, improvement_words, recommend
from tunewise.budget.roi import BudgetPoint, find_knee, gaining_rois, improvement, metric_direction, relative_improvement, summarize_points
from tunewise.budget.store import ResultStore, point_from_dict


def test_relative_improvement_both_directions_hand_values():
    assert relative_improvement(0.31, 0.18, higher_is_better=False) == pytest.approx(0.13 / 0.31)  # WER fell: +41.9%
    assert relative_improvement(0.20, 0.25, higher_is_better=False) == pytest.approx(-0.25)  # WER rose 0.05 / 0.20
    assert relative_improvement(0.5, 0.6) == pytest.approx(0.2)  # default: higher is better, (0.6 - 0.5) / 0.5
    assert relative_improvement(0.5, 0.6, higher_is_better=True) == pytest.approx(0.2)
    assert relative_improvement(0.0, 0.1, higher_is_better=False) is None  # no ratio from 0
    assert relative_improvement(None, 0.1, higher_is_better=False) is None
    # a loss of 3.2 falling to 2.4: (3.2 - 2.4) / 3.2 = 0.25 (losses above 1 are fine)
    assert relative_improvement(3.2, 2.4, higher_is_better=False) == pytest.approx(0.25)


def test_improvement_absolute_gain_from_zero_follows_the_direction():
    assert improvement(0.0, 0.9) == pytest.approx(0.9)  # higher: 0.9 - 0
    assert improvement(0.0, 0.2, higher_is_better=False) == pytest.approx(-0.2)  # a loss of 0 that rose: worse
    assert improvement(0.4, 0.3, higher_is_better=False) == pytest.approx(0.25)  # relative: 0.1 / 0.4


def test_metric_direction_reads_the_task_spec():
    from tunewise.tasks import TASKS

    lm = TASKS.get("causal-lm").spec
    assert metric_direction(lm, "eval_loss") is False and metric_direction(lm, "perplexity") is False
    assert metric_direction(lm, "exact_match") is True
    assert metric_direction(lm, "something_undeclared") is True  # a diagnostic: the old default
    assert metric_direction(TASKS.get("embedding").spec, "mrr@20") is True


def _loss_points(higher: bool):
    """One curve, mirrored: improvement r(n) = 0.4 (1 - exp(-n / 150)) in both directions.

    Higher-is-better: before 0.5, after 0.5 (1 + r). Lower-is-better: before 2.0, after 2.0 (1 - r).
    """
    pts = []
    for n in (25, 50, 100, 200, 400, 800, 1600):
        for s in range(3):
            r = 0.4 * (1 - math.exp(-n / 150)) + 0.002 * s
            before = 0.5 if higher else 2.0
            after = before * (1 + r) if higher else before * (1 - r)
            pts.append(BudgetPoint(n, s, before, after, n / 10, 1.0, higher_is_better=higher))
    return pts


def test_mirrored_curves_give_the_same_rows_knee_and_numbers():
    up, down = summarize_points(_loss_points(True)), summarize_points(_loss_points(False))
    assert [r.mean_rel_improvement for r in up] == pytest.approx([r.mean_rel_improvement for r in down])
    assert all(r.mean_rel_improvement > 0 for r in down)  # a falling loss is a positive improvement
    assert [r.roi for r in up] == pytest.approx([r.roi for r in down])
    assert [r.marginal_roi for r in up] == pytest.approx([r.marginal_roi for r in down])
    knee = find_knee([r.size for r in down], gaining_rois(down))
    assert knee == find_knee([r.size for r in up], gaining_rois(up)) == 5  # 800 items, as test_budget_roi's curve
    assert not down[0].higher_is_better and up[0].higher_is_better
    assert down[0].mean_metric_before == pytest.approx(2.0)


def test_lower_is_better_recommendation_speaks_of_a_fall_not_a_gain():
    down = summarize_points(_loss_points(False))
    rec = recommend(down, None, metric_name="eval_loss")
    assert rec.items == 800 and rec.data_knee == 5
    # mean after at 800 items: 2.0 (1 - r), r = 0.4 (1 - e^-5.33) + 0.002 = 0.39998...; change -40.0%
    assert "With 800 items eval_loss (lower is better) fell from 2 to 1.2 (-40.0%)" in rec.text, rec.text
    assert "relative reduction" in rec.text and "relative improvement" not in rec.text
    assert "capture most of the improvement" in rec.text
    assert "gain of -" not in rec.text and "+-" not in rec.text


def test_lower_is_better_that_got_worse_warns_that_the_metric_rose():
    # before 1.0; 25 items -> 0.8 (better), 50 items -> 0.9 (worse than at 25): marginal ROI negative
    pts = [BudgetPoint(25, 0, 1.0, 0.8, 1, 1, higher_is_better=False),
           BudgetPoint(50, 0, 1.0, 0.9, 1, 1, higher_is_better=False)]
    rec = recommend(summarize_points(pts), None, metric_name="wer")
    assert "wer rose (lower is better) with more items (25 → 50" in rec.text
    nothing = [BudgetPoint(n, 0, 0.3, 0.35, 1, 1, higher_is_better=False) for n in (25, 50)]
    assert "did not improve wer (lower is better)" in recommend(summarize_points(nothing), None, metric_name="wer").text


def test_lower_is_better_time_sweep_text():
    pts = [BudgetPoint(100, 0, 2.0, 2.0 - 0.3 * e, 10.0 * e, 1.0, epoch=e, kind="time", higher_is_better=False)
           for e in (1, 2, 3)]
    rec = recommend(None, summarize_points(pts), metric_name="eval_loss")
    # improvements 0.15, 0.30, 0.45 over 10, 20, 30 s: ROI 0.015 flat, no knee: the best epoch, 3
    assert rec.epochs == 3
    assert "after 3 epochs eval_loss fell from 2 to 1.1 (-45.0%)" in rec.text


def test_words_and_change_text():
    assert gain_name(False, False) == "rel. reduction" and gain_name(True, False) == "abs. reduction"
    assert gain_name(False) == "rel. improvement"
    assert improvement_words(False, False) == "relative reduction"
    assert change_text("WER", 0.31, 0.18) == "WER fell from 0.31 to 0.18 (-41.9%)"
    assert change_text("mrr", 0.5, 0.6) == "mrr rose from 0.5 to 0.6 (+20.0%)"
    assert change_text("loss", 0.0, 0.1) == "loss rose from 0 to 0.1"  # no ratio from 0


def test_summaries_refuse_mixed_directions():
    with pytest.raises(ValueError, match="higher- and lower-is-better"):
        summarize_points([BudgetPoint(10, 0, 1, 0.5, 1, 1, higher_is_better=False), BudgetPoint(20, 0, 1, 0.5, 1, 1)])


def test_store_round_trips_the_direction_and_reads_old_points_as_higher_is_better(tmp_path):
    store = ResultStore(tmp_path / "results.jsonl", "fp")
    point = BudgetPoint(10, 0, 2.0, 1.5, 1.0, 1.0, higher_is_better=False, metric_before_equal_labels=None)
    store.append(point)
    assert store.points() == [point] and store.points()[0].higher_is_better is False
    # A line written before the field existed (no "higher_is_better", no equal-labels probe)
    old = {k: v for k, v in dataclasses.asdict(BudgetPoint(10, 1, 0.4, 0.5, 1.0, 1.0)).items()
           if k not in ("higher_is_better", "metric_before_equal_labels")}
    with open(store.path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(old) + "\n")
    back = [p for p in store.points() if p.seed == 1][0]
    assert back.higher_is_better is True and back.metric_before_equal_labels is None
    assert point_from_dict(old).relative_improvement == pytest.approx(0.25)  # (0.5 - 0.4) / 0.4


def test_beyond_the_measured_range_the_forecast_speaks(monkeypatch):
    """Where the measurements end at "measure larger sizes", the forecast's next-step sentence is quoted."""
    import tunewise.budget.beyond as beyond

    calls = []

    def fake(rows, forecast_result, **kwargs):
        calls.append((len(rows), forecast_result, kwargs))
        return "NEXT STEP."

    monkeypatch.setattr(beyond, "next_step_advice", fake)
    # Knee at the largest size: ROI 0.003, 0.002, 0.0005 (down 83% from its peak at 100 items)
    pts = [BudgetPoint(n, 0, 1.0, 1.0 - r, n / 10, 1.0, higher_is_better=False)
           for n, r in ((100, 0.3), (200, 0.4), (400, 0.2))]
    rows = summarize_points(pts)
    plain = recommend(rows, None, metric_name="wer")
    assert "measure larger sizes to see what lies beyond" in plain.text and not calls
    sentinel = object()
    rec = recommend(rows, None, metric_name="wer", price_per_hour=3.0, forecast=sentinel, unit="clips")
    assert "NEXT STEP." in rec.text and "measure larger sizes to see what lies beyond" not in rec.text
    (n, fc, kwargs), = calls
    assert n == 3 and fc is sentinel
    assert kwargs["unit"] == "clips" and kwargs["metric"] == "wer" and kwargs["higher_is_better"] is False
    assert kwargs["price_per_hour"] == 3.0 and kwargs["seconds_per_item"] == pytest.approx(0.1)  # 40 s / 400 items
