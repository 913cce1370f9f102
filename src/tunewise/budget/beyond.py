"""Beyond the measured range: what the next step of labeling is forecast to buy (issue 18, item 6).

When the largest measured size is the knee, or ROI has not fallen yet, "measure larger sizes"
is all the measurements can say; the calibrated forecast (:mod:`tunewise.budget.forecast`) can
say more. :func:`next_step_advice` prices the next step, doubling the largest measured size:
the gain it is forecast to add, with the forecast's 80% interval, and a verdict:

* the interval's top is below :data:`NOT_WORTH_POINTS` (1 point), or its centre is and its top is
  under 2 points: "probably not worth it";
* the whole interval is a gain: "worth it if an item costs less than X", X being the item price at
  which the labels cost what the gain is worth: ``X = V * gain / extra - training per item`` for
  ``V`` the value of one point to the user (unknown here, so X is written relative to it), the
  training time priced at ``price_per_hour`` when given;
* otherwise the gain is uncertain and the sentence says so;
* where the backtest of the forecast does not cover that horizon (:meth:`ForecastResult.trust`),
  it says so instead of a number.

Points are the metric x 100 for a metric in [0, 1]; a metric outside it (a loss) is quoted in its
own units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from tunewise.budget.forecast import ForecastResult
from tunewise.budget.roi import SizeSummary, find_knee, gaining_rois

NOT_WORTH_POINTS = 1.0  # a forecast gain under one point (0-100 scale) is not worth a doubling of the labels
SMALL = 1.0  # ... nor one whose interval tops out under 2 x SMALL x NOT_WORTH_POINTS (2 points)
LEVEL = 0.8


def _fmt(value: float, points: bool, signed: bool = True) -> str:
    sign = "+" if signed else ""
    return f"{value:{sign}.1f}" if points else f"{value:{sign}.3g}"


def next_step_advice(
    rows: Sequence[SizeSummary],
    forecast_result: ForecastResult | None,
    *,
    unit: str,
    metric: str,
    higher_is_better: bool,
    price_per_hour: float | None,
    seconds_per_item: float | None,
    drop: float = 0.70,
    currency: str = "$",
) -> str | None:
    """One sentence on what labeling as many items again would buy, or None when it does not apply.

    It applies when the largest measured size is the knee or ROI has not fallen by ``drop`` from
    its peak (the measurements alone then end at "measure larger sizes"), and a forecast exists.

    Args:
        rows: data-sweep summaries (:func:`tunewise.budget.roi.summarize_points`, kind "data").
        forecast_result: the sweep's forecast (None: no sentence).
        unit: what is labeled ("items", "pairs", "images").
        metric: the metric's name, e.g. "MRR@20".
        higher_is_better: the metric's direction; for a falling metric the gain is a reduction.
        price_per_hour: price of the machine per hour; None: training time is not priced.
        seconds_per_item: training seconds per labeled item at the largest size (None: unknown).
        drop: the ROI drop that defines the knee, as in :func:`tunewise.budget.advice.recommend`.
        currency: symbol put before money amounts.
    """
    data = [r for r in rows if r.kind == "data"]
    if forecast_result is None or not data or not forecast_result.boot:
        return None
    knee = find_knee([r.size for r in data], gaining_rois(data), drop)
    if knee is not None and knee < len(data) - 1:
        return None  # the knee is inside the measured range: the advice already says what lies beyond
    largest = data[-1].size
    target, extra = 2 * largest, largest
    fc = replace(forecast_result, level=LEVEL)
    trust = fc.trust(target)
    step = f"labeling {extra:,} more {unit} (to {target:,})"
    if not trust.trusted:
        return (f"The forecast cannot be trusted as far as {step}: {trust.text} Measure {target:,} {unit} to know "
                "what they would buy.")
    (now, centre), (_, low), (_, high) = (v.tolist() for v in fc.predict([largest, target]))
    points = fc.axis_top == 1.0
    scale = 100.0 if points else 1.0
    sign = 1.0 if higher_is_better else -1.0
    # Measured from the fitted curve at the largest size (not the noisy observed mean): a gain, > 0 better.
    gain = sign * scale * (centre - now)
    g_low, g_high = sorted(sign * scale * (v - now) for v in (low, high))
    what = (f"points of {metric}" if points else metric) if higher_is_better else \
        (f"points off {metric}" if points else f"off {metric}")
    verb = "add" if higher_is_better else "take"
    head = (f"{step[0].upper()}{step[1:]} is forecast to {verb} {_fmt(gain, points)} {what} "
            f"({100 * LEVEL:.0f}% interval {_fmt(g_low, points)} to {_fmt(g_high, points)})")
    train = ""
    per_item_train = None
    if seconds_per_item is not None and seconds_per_item > 0:
        seconds = extra * seconds_per_item
        train = f"; training them takes about {seconds:,.0f} s more"
        if price_per_hour is not None:
            per_item_train = seconds_per_item / 3600 * price_per_hour
            train += f" ({currency}{seconds / 3600 * price_per_hour:,.2f} at {currency}{price_per_hour:,.2f}/hour)"
    threshold = NOT_WORTH_POINTS if points else NOT_WORTH_POINTS / 100 * abs(now or 1.0)
    # Not worth it: the whole interval is under a point, or its centre is and even its top stays small.
    if g_high < threshold or (gain < threshold and g_high < 2 * SMALL * threshold):
        return f"{head}: probably not worth it{train}."
    if gain <= 0:  # centre no gain, yet the interval reaches a real one
        return (f"{head}: uncertain, no gain at the central estimate{train}. Measuring {target:,} {unit} would "
                "settle it.")
    # Worth it while extra * item_price + training < gain * V, V the value of one point to the user.
    per_point = extra / gain
    one = f"a point of {metric}" if points else f"one unit of {metric}"
    price = (f"1/{per_point:,.0f} of what {one} is worth to you" if per_point >= 1
             else f"{1 / per_point:,.1f} x what {one} is worth to you")
    if per_item_train is not None and per_item_train >= 1e-4:  # below that, training is no part of the item's price
        price += f", minus {currency}{per_item_train:.4f} of training per item"
    if g_low > 0:
        return f"{head}: worth it if an item costs less than {price}{train}."
    return (f"{head}: uncertain, the interval includes no gain; at the central estimate, worth it if an item costs "
            f"less than {price}{train}. Measuring {target:,} {unit} would settle it.")
