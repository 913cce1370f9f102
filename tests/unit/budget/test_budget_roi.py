"""ROI, marginal ROI, knee and recommendation: hand-derived numbers, one comment per number."""

from __future__ import annotations

import math

import pytest

from tunewise.budget.advice import recommend
from tunewise.budget.roi import (
    BudgetPoint,
    find_knee,
    marginal_roi,
    relative_improvement,
    roi,
    summarize_points,
)
from tunewise.errors import TunewiseError


def test_relative_improvement_hand_values():
    assert relative_improvement(0.5, 0.6) == pytest.approx(0.2)  # (0.6 - 0.5) / 0.5
    assert relative_improvement(0.4, 0.3) == pytest.approx(-0.25)  # worse: (0.3 - 0.4) / 0.4
    assert relative_improvement(0.8, 0.8) == 0.0


def test_relative_improvement_has_no_ratio_from_a_zero_or_missing_baseline():
    assert relative_improvement(0.0, 0.5) is None  # metrics.json shows n/a; the planner takes the gain
    assert relative_improvement(None, 0.5) is None


def test_roi_and_marginal_roi():
    assert roi(0.2, 100) == pytest.approx(0.002)  # 0.2 / 100 items
    with pytest.raises(ValueError):
        roi(0.2, 0)
    # From the origin (0 items, 0 improvement): 0.2/100; then 0.1/100; then -0.05/200.
    assert marginal_roi([100, 200, 400], [0.2, 0.3, 0.25]) == pytest.approx(
        [0.002, 0.001, -0.00025]
    )
    assert math.isnan(marginal_roi([100, 100], [0.2, 0.3])[1])  # same budget twice


def test_find_knee_first_budget_down_70_percent():
    # Peak 1.0; threshold (1 - 0.7) * 1.0 = 0.3; 0.31 is above it, 0.29 is the first below.
    assert find_knee(range(6), [1.0, 0.8, 0.5, 0.31, 0.29, 0.1]) == 4
    assert find_knee([1, 2], [1.0, 0.3]) == 1  # "at least 70%": exactly 0.3 counts
    # Running peak: the peak is reached at index 1, so the knee is relative to 1.0.
    assert find_knee(range(4), [0.5, 1.0, 0.31, 0.29]) == 3
    assert find_knee(range(3), [1.0, 0.9, 0.5]) is None  # never fell 70%
    assert find_knee(range(3), [-0.1, -0.2, -0.5]) is None  # never positive: no peak
    assert find_knee(range(4), [1.0, float("nan"), 0.2, 0.1]) == 2  # NaN skipped
    assert find_knee(range(3), [1.0, 0.6, 0.45], drop=0.5) == 2  # 0.45 <= 0.5


def test_find_knee_rejects_percent_instead_of_fraction():
    with pytest.raises(TunewiseError, match="--knee-drop"):
        find_knee([1, 2], [1.0, 0.1], drop=70)


def _p(size, seed, after, secs=10.0, before=0.5, **kw):
    return BudgetPoint(size, seed, before, after, secs, 1.0, **kw)


def test_summarize_points_data_sweep():
    points = [
        _p(200, 0, 0.70, secs=20), _p(100, 0, 0.60), _p(100, 1, 0.64, secs=12), _p(200, 1, 0.70),
    ]
    rows = summarize_points(points)
    assert [r.size for r in rows] == [100, 200]  # ordered by budget
    r100, r200 = rows
    assert r100.n == 2
    assert r100.mean_rel_improvement == pytest.approx(0.24)  # mean(0.2, 0.28)
    assert r100.std == pytest.approx(math.sqrt(2 * 0.04**2))  # sample std: deviations ±0.04
    assert r100.roi == pytest.approx(0.0024)  # 0.24 / 100
    assert r100.marginal_roi == pytest.approx(0.0024)  # from the origin
    assert r100.mean_seconds == pytest.approx(11.0)  # mean(10, 12)
    assert r100.mean_metric == pytest.approx(0.62)
    assert r200.mean_rel_improvement == pytest.approx(0.4)  # (0.7 - 0.5) / 0.5
    assert r200.marginal_roi == pytest.approx(0.0016)  # (0.4 - 0.24) / 100
    assert r200.std == 0.0 and r200.budget == 200


def test_summarize_points_time_sweep_uses_seconds_and_flags_overfitting():
    points = [
        _p(1000, s, after, secs=secs, epoch=e, kind="time")
        for s in (0, 1)
        for e, after, secs in ((1, 0.60, 50.0), (2, 0.65, 100.0), (3, 0.62, 150.0))
    ]
    rows = summarize_points(points)
    assert [r.epoch for r in rows] == [1, 2, 3]
    assert [r.budget for r in rows] == [50.0, 100.0, 150.0]
    assert rows[0].roi == pytest.approx(0.2 / 50)  # rel 0.2 over 50 s
    assert rows[2].marginal_roi == pytest.approx((0.24 - 0.30) / 50)  # negative: overfitting
    assert rows[0].size == 1000


def test_summarize_points_rejects_mixed_kinds_unless_selected():
    points = [_p(100, 0, 0.6), _p(1000, 0, 0.6, epoch=1, kind="time")]
    with pytest.raises(ValueError, match="kind"):
        summarize_points(points)
    assert [r.kind for r in summarize_points(points, kind="time")] == ["time"]
    assert summarize_points([]) == []


def test_budget_point_validation_and_key():
    with pytest.raises(ValueError):
        BudgetPoint(1, 0, 0.5, 0.6, 1.0, 1.0, kind="money")
    with pytest.raises(ValueError, match="epoch"):
        BudgetPoint(1, 0, 0.5, 0.6, 1.0, 1.0, kind="time")
    assert _p(100, 3, 0.6).key == ("data", 100, 3, None)


def _data_sweep(gain=lambda n: 0.4 * (1 - math.exp(-n / 150))):
    return summarize_points(
        [_p(n, s, 0.5 * (1 + gain(n)) + 0.001 * s, secs=n / 10) for n in
         (25, 50, 100, 200, 400, 800, 1600) for s in range(3)]
    )


def _time_sweep():
    return summarize_points(
        [_p(1000, s, 0.5 * (1 + 0.3 * (1 - math.exp(-e)) - 0.03 * e), secs=60.0 * e, epoch=e,
            kind="time") for e in (1, 2, 3, 4, 5) for s in range(2)]
    )


def test_recommend_text_has_items_epochs_seconds_money_and_overfitting_warning():
    rec = recommend(_data_sweep(), _time_sweep(), price_per_hour=2.5, metric_name="mrr")
    # ROI falls by 70% from its peak (at 25 items) first at 800 items for this curve.
    assert rec.items == 800 and rec.data_knee == 5
    assert rec.epochs == 2  # best epoch: later epochs lower the metric
    assert rec.train_seconds == pytest.approx(120.0)
    assert rec.cost == pytest.approx(120 / 3600 * 2.5)
    assert rec.text.startswith("About 800 labeled items and 2 epochs (about 120 s")
    assert "$0.08 at $2.50/hour" in rec.text
    assert "each extra 100 items adds under" in rec.text
    assert "training longer overfits" in rec.text and rec.warnings
    assert 0 < rec.marginal_per_100_items < 0.001  # flat beyond the knee


def test_recommend_without_price_or_time_sweep():
    rec = recommend(_data_sweep(), None)
    assert "$" not in rec.text and rec.epochs is None
    assert rec.text.startswith("About 800 labeled items capture most of the gain")


def test_recommend_when_roi_has_not_fallen_yet():
    # Linear gain: ROI constant, no knee, so the advice is the largest size and "still paying".
    rec = recommend(_data_sweep(gain=lambda n: n / 4000), None)
    assert rec.data_knee is None and rec.items == 1600
    assert "has not yet fallen by 70%" in rec.text


def test_recommend_when_nothing_improved():
    rec = recommend(_data_sweep(gain=lambda n: -0.1), None, metric_name="recall")
    assert "did not improve recall" in rec.text


def test_recommend_rejects_negative_price():
    with pytest.raises(TunewiseError, match="--price-per-hour"):
        recommend(_data_sweep(), None, price_per_hour=-1)


def test_budgets_below_the_pretrained_score_never_set_the_knee():
    # As measured on the digits classifier: epochs 1-5 hover around the frozen-feature baseline
    # (a tiny positive ROI at epoch 4, then a dip), then the metric climbs for good.
    rel = [-0.29, -0.11, -0.14, 0.002, -0.04, 0.08, 0.054, 0.067, 0.089, 0.096, 0.107, 0.15]
    times = summarize_points([_p(300, 0, 0.83 * (1 + r), secs=1.5 * e, epoch=e, kind="time", before=0.83)
                              for e, r in enumerate(rel, start=1)])
    rec = recommend(None, times)
    assert rec.epochs == 12 and rec.time_knee is None  # not epoch 5, where the metric was below "before"
    assert "12 epochs give +15.0%" in rec.text


def test_a_pretrained_score_of_zero_measures_absolute_gains():
    """A format the base model never produces scores 0 before: no ratio, so the planner uses the gain."""
    from tunewise.budget.advice import gain_name, gain_text
    from tunewise.budget.roi import improvement

    assert improvement(0.0, 0.9) == pytest.approx(0.9)  # absolute: 0.9 - 0
    assert improvement(0.5, 0.6) == pytest.approx(0.2)  # relative as before
    points = [_p(25, 0, 0.30, before=0.0), _p(50, 0, 0.60, before=0.0), _p(100, 0, 0.90, before=0.0),
              _p(200, 0, 0.95, before=0.0), _p(400, 0, 0.97, before=0.0)]
    rows = summarize_points(points)
    assert all(r.absolute for r in rows)
    assert [round(r.mean_rel_improvement, 2) for r in rows] == [0.30, 0.60, 0.90, 0.95, 0.97]
    assert rows[2].roi == pytest.approx(0.009)  # 0.9 gained over 100 items
    rec = recommend(rows, None, metric_name="format_valid")
    # ROI per item 0.012, 0.012, 0.009, 0.00475 (down 60% from the peak), 0.0024 (down 80%): knee at 400
    assert rec.items == 400 and rec.data_knee == 4
    assert "absolute gain" in rec.text and "%" not in rec.text.split("items give")[1].split(" in format_valid")[0]
    assert gain_text(0.9, True) == "+0.900" and gain_text(0.2, False) == "+20.0%"
    assert gain_name(True) == "abs. gain"
