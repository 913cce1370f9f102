"""The budget planner's advice: the recommendation a person reads, and how gains are written.

Built on the numbers of :mod:`tunewise.budget.roi` (summaries, ROI, marginal ROI, knees); nothing
here computes a new quantity except the rounding of what it quotes:

* the advised data budget is the data knee, or the largest measured size while ROI has not
  fallen by ``drop`` yet; the advised training time is the time knee, never beyond the best epoch;
* "each extra 100 items adds under x%" is the largest marginal ROI measured beyond the knee,
  rounded up so that the sentence stays true;
* where more budget made the model worse (negative marginal ROI) a warning says so in words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tunewise.budget.roi import SizeSummary, find_knee, gaining_rois
from tunewise.errors import TunewiseError


@dataclass(frozen=True)
class Recommendation:
    """What the planner advises, as numbers and as text (``.text``)."""

    text: str
    items: int | None = None
    epochs: float | None = None
    train_seconds: float | None = None
    cost: float | None = None
    data_knee: int | None = None
    time_knee: int | None = None
    gain_share: float | None = None
    marginal_per_100_items: float | None = None
    warnings: list[str] = field(default_factory=list)


def gain_text(value: float, absolute: bool, digits: int = 1, signed: bool = True) -> str:
    """An improvement for people: ``+12.3%`` relative, or ``+0.975`` as an absolute gain."""
    sign = "+" if signed else ""
    return f"{value:{sign}.3f}" if absolute else f"{100 * value:{sign}.{digits}f}%"


def gain_name(absolute: bool) -> str:
    """Column and axis name of the improvement."""
    return "abs. gain" if absolute else "rel. improvement"


def _pct_ceil(x: float, absolute: bool = False) -> str:
    # Round up so that "adds under x" stays true of the measured value.
    if absolute:
        return f"{max(math.ceil(x * 1000) / 1000, 0):.3f}"
    return f"{max(math.ceil(100 * x * 100) / 100, 0):.2f}%"


def _seconds(s: float) -> str:
    return f"{s:,.0f} s" if s < 600 else f"{s:,.0f} s ≈ {s / 60:.0f} min"


def check_price_per_hour(price_per_hour: float | None) -> None:
    """Money is quoted from a price of 0 or more (None: seconds only).

    Raises:
        TunewiseError: naming ``--price-per-hour``.
    """
    if price_per_hour is not None and not price_per_hour >= 0:
        raise TunewiseError(f"--price-per-hour: must be 0 or more; got {price_per_hour}")


def recommend(
    data_summary: Sequence[SizeSummary] | None,
    time_summary: Sequence[SizeSummary] | None,
    price_per_hour: float | None = None,
    metric_name: str = "metric",
    drop: float = 0.70,
    currency: str = "$",
) -> Recommendation:
    """Turn sweep summaries into advice a person can act on.

    The advised data budget is the data knee (:func:`find_knee`), or the largest measured size
    when ROI has not fallen by ``drop`` yet; the advised training time is the time knee, or
    the best epoch when longer training made the metric worse. The "each extra 100 items adds
    under x%" bound is the largest marginal ROI measured beyond the knee times 100.

    Args:
        data_summary: rows of a data sweep (:func:`summarize_points` with kind "data").
        time_summary: rows of a time sweep (kind "time"), or None.
        price_per_hour: price of the machine per hour; adds money next to the seconds.
        metric_name: the metric's name, used in the text.
        drop: ROI drop that defines the knee.
        currency: symbol put before money amounts.
    """
    check_price_per_hour(price_per_hour)
    data = list(data_summary or [])
    times = list(time_summary or [])
    warnings: list[str] = []
    rec: dict[str, Any] = {}
    parts: list[str] = []
    head = ""

    if data:
        best = max(data, key=lambda r: r.mean_rel_improvement)
        if best.mean_rel_improvement <= 0:
            parts.append(
                f"Fine-tuning did not improve {metric_name} over the pre-trained model at any "
                f"measured size (up to {data[-1].size} items); more labels are unlikely to help "
                "with this setup."
            )
        else:
            knee = find_knee([r.size for r in data], gaining_rois(data), drop)
            chosen = data[knee] if knee is not None else data[-1]
            share = chosen.mean_rel_improvement / best.mean_rel_improvement
            rec.update(items=chosen.size, data_knee=knee, gain_share=share)
            head = f"About {chosen.size} labeled items"
            absolute = chosen.absolute
            kind = ("absolute gain (the pre-trained model scores 0, so no ratio)" if absolute
                    else "relative improvement")
            detail = (
                f"{chosen.size} items give {gain_text(chosen.mean_rel_improvement, absolute)} {kind} "
                f"in {metric_name}, {100 * share:.0f}% of the best measured "
                f"({gain_text(best.mean_rel_improvement, absolute)} at {best.size} items)."
            )
            if knee is None:
                detail += (
                    f" ROI has not yet fallen by {100 * drop:.0f}% from its peak within the "
                    f"measured range: more labeled data is still paying off."
                )
            after = data[knee + 1 :] if knee is not None else []
            beyond = [r.marginal_roi for r in after if not math.isnan(r.marginal_roi)]
            if knee is not None and beyond:
                per100 = max(beyond) * 100
                rec["marginal_per_100_items"] = per100
                detail += (
                    f" Beyond that each extra 100 items adds under {_pct_ceil(per100, absolute)} "
                    f"{'gain' if absolute else 'relative improvement'} (measured up to {data[-1].size} items)."
                )
            elif knee is not None:
                per100 = chosen.marginal_roi * 100
                rec["marginal_per_100_items"] = per100
                detail += (
                    f" The last step, up to {chosen.size} items, added {_pct_ceil(per100, absolute)} per "
                    "100 items; measure larger sizes to see what lies beyond."
                )
            parts.append(detail)
            _warn_negative(data, "items", warnings, metric_name)

    if times:
        t_best = max(times, key=lambda r: r.mean_rel_improvement)
        t_knee = find_knee([r.mean_seconds for r in times], gaining_rois(times), drop)
        chosen_t = times[t_knee] if t_knee is not None else t_best
        # Past the best epoch the metric only falls: never advise training beyond it.
        if chosen_t.mean_seconds > t_best.mean_seconds:
            chosen_t = t_best
        rec.update(epochs=chosen_t.epoch, train_seconds=chosen_t.mean_seconds, time_knee=t_knee)
        money = ""
        if price_per_hour is not None:
            cost = chosen_t.mean_seconds / 3600 * price_per_hour
            rec["cost"] = cost
            money = f", about {currency}{cost:.2f} at {currency}{price_per_hour:.2f}/hour"
        head += (
            f"{' and' if head else 'About'} {chosen_t.epoch:g} epochs (about "
            f"{_seconds(chosen_t.mean_seconds)} of training on this machine{money})"
        )
        _warn_negative(times, "epochs", warnings, metric_name)
        parts.append(
            f"Time sweep at {chosen_t.size} items: {chosen_t.epoch:g} epochs give "
            f"{gain_text(chosen_t.mean_rel_improvement, chosen_t.absolute)}; evaluation took a further "
            f"{_seconds(chosen_t.mean_eval_seconds)} per run (not counted as training)."
        )
    text = (head + " capture most of the gain. " if head else "") + " ".join(parts)
    if not data and not times:
        text = "No finished budget points yet: run a sweep first."
    text = " ".join([text, *warnings]).strip()
    return Recommendation(text=text, warnings=warnings, **rec)


def _warn_negative(rows: Sequence[SizeSummary], unit: str, out: list[str], metric: str) -> None:
    """Say in words where more budget made the model worse (negative marginal ROI)."""
    label = (lambda r: r.size) if unit == "items" else (lambda r: r.epoch)
    steps = [
        f"{label(prev):g} → {label(cur):g}"
        for prev, cur in zip(rows, rows[1:])
        if cur.marginal_roi < 0
    ]
    if not steps:
        return
    worst = min(r.marginal_roi for r in rows)
    cause = "training longer overfits" if unit == "epochs" else "noise or overfitting"
    out.append(
        f"Warning: {metric} fell with more {unit} ({', '.join(steps)}; marginal ROI down to "
        f"{worst:.3g} per {'item' if unit == 'items' else 'second'}): {cause}."
    )
