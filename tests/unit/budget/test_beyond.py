"""What the next step of labeling would buy (budget.beyond), on synthetic sweeps with known curves."""

from __future__ import annotations

import numpy as np
import pytest

from tunewise.budget import calibration as calibration_module
from tunewise.budget.beyond import next_step_advice
from tunewise.budget.calibration import BacktestRow
from tunewise.budget.forecast import forecast
from tunewise.budget.roi import BudgetPoint, summarize_points

GRID = [25, 50, 100, 200, 400]


def sweep(curve, sd=0.003, seeds=3, seed=0, higher=True):
    rng = np.random.default_rng(seed)
    return [BudgetPoint(n, k, 0.2 if higher else 0.6, float(curve(n) + rng.normal(0, sd)), 0.5 * n, 1.0,
                        higher_is_better=higher) for n in GRID for k in range(seeds)]


def advise(points, higher=True, price=2.5, spi=0.5, **fc_kwargs):
    rows = summarize_points(points, "data")
    fc = forecast(points, n_boot=100, seed=0, **fc_kwargs)
    return next_step_advice(rows, fc, unit="pairs", metric="MRR@20", higher_is_better=higher, price_per_hour=price,
                            seconds_per_item=spi)


def steep(n):  # still climbing at 400: +4.6 points from 400 to 800 (0.95 - 1.6 n^-0.3)
    return 0.95 - 1.6 * np.power(n, -0.3)


def flat(n):  # the knee is the largest size, and the curve has levelled off: +0.3 points from 400 to 800
    return 0.62 - 0.4 * np.exp(-n / 80)


def test_worth_it_names_the_gain_its_interval_and_the_break_even_item_price():
    text = advise(sweep(steep))
    assert text.startswith("Labeling 400 more pairs (to 800) is forecast to add +")
    gain = float(text.split("add ")[1].split(" ")[0])
    true = 100 * (steep(800) - steep(400))  # 4.6 points
    assert gain == pytest.approx(true, abs=1.5)
    assert "points of MRR@20 (80% interval +" in text  # the whole interval is a gain
    assert "worth it if an item costs less than 1/" in text and "of what a point of MRR@20 is worth to you" in text
    assert "minus $0.0003 of training per item" in text  # 0.5 s per item at $2.50/hour
    assert "training them takes about 200 s more ($0.14 at $2.50/hour)" in text


def test_saturated_curve_is_never_called_worth_it():
    """+0.3 points in truth. With the backtest's spread floor (0.04 per doubling since the LLM curves joined
    it) the 80% interval at 2x is about +-1.9 points, so the verdict is "probably not worth it" or, when its
    top passes 2 points, "uncertain": never "worth it"."""
    text = advise(sweep(flat))
    assert text.startswith("Labeling 400 more pairs (to 800) is forecast to add ")
    assert float(text.split("add ")[1].split(" ")[0]) < 1.0  # points; the truth is +0.3
    assert "probably not worth it; " in text or "uncertain, the interval includes no gain" in text
    assert "training them takes about 200 s more ($0.14 at $2.50/hour)" in text


def test_without_a_price_the_break_even_is_relative_to_the_gain():
    text = advise(sweep(steep), price=None, spi=None)
    assert "worth it if an item costs less than 1/" in text and "minus" not in text and "training them" not in text


def test_falling_metric_speaks_of_a_reduction():
    points = sweep(lambda n: 0.05 + 1.6 * np.power(n, -0.3), higher=False)  # a WER still falling
    text = next_step_advice(summarize_points(points, "data"), forecast(points, n_boot=100), unit="items", metric="WER",
                            higher_is_better=False, price_per_hour=None, seconds_per_item=None)
    assert text.startswith("Labeling 400 more items (to 800) is forecast to take +")
    assert "points off WER" in text and "worth it" in text


def test_untrusted_horizon_says_so_instead_of_a_number(monkeypatch):
    monkeypatch.setattr(calibration_module, "BACKTEST", {2: BacktestRow(2, 20, 0.55, 0.8, 3.0, 0.4, 6.0)})
    text = advise(sweep(steep))
    assert text.startswith("The forecast cannot be trusted as far as labeling 400 more pairs (to 800)")
    assert "held the observed value on 55%" in text and "Not trusted this far" in text
    assert "forecast to add" not in text


def test_bootstrap_only_interval_is_never_trusted():
    text = advise(sweep(steep), interval="bootstrap")
    assert text.startswith("The forecast cannot be trusted")


def test_no_sentence_when_the_knee_is_inside_the_measured_range_or_no_forecast():
    knee_early = sweep(lambda n: 0.6 - 0.4 * np.exp(-n / 10))  # all the gain by 50: knee well inside
    rows = summarize_points(knee_early, "data")
    fc = forecast(knee_early, n_boot=20)
    kwargs = dict(unit="items", metric="acc", higher_is_better=True, price_per_hour=None, seconds_per_item=None)
    assert next_step_advice(rows, fc, **kwargs) is None
    assert next_step_advice(summarize_points(sweep(steep), "data"), None, **kwargs) is None


def test_no_gain_at_the_centre_but_a_wide_interval_is_uncertain(monkeypatch):
    """A falling centre with an interval reaching +3 points: neither "worth it" nor a price per point."""
    points = sweep(steep)
    fc = forecast(points, n_boot=40)
    now = fc.predict([400])[0][0]
    monkeypatch.setattr(type(fc), "predict", lambda self, sizes: (np.array([now, now - 0.002]), np.array([now, now - 0.03]),
                                                                   np.array([now, now + 0.03])))
    text = next_step_advice(summarize_points(points, "data"), fc, unit="items", metric="acc", higher_is_better=True,
                            price_per_hour=None, seconds_per_item=None)
    assert "forecast to add -0.2 points of acc (80% interval -3.0 to +3.0): uncertain, no gain at the central estimate" in text
    assert "Measuring 800 items would settle it." in text and "1/" not in text
