"""The budget planner's advice: the recommendation a person reads, and how gains are written.

Built on the numbers of :mod:`tunewise.budget.roi` (summaries, ROI, marginal ROI, knees); nothing
here computes a new quantity except the rounding of what it quotes:

* the advised data budget is the data knee, or the largest measured size while ROI has not
  fallen by ``drop`` yet; the advised training time is the time knee, never beyond the best epoch;
* "each extra 100 items adds under x%" is the largest marginal ROI measured beyond the knee,
  rounded up so that the sentence stays true;
* where more budget made the model worse (negative marginal ROI) a warning says so in words;
* the metric's direction (``SizeSummary.higher_is_better``) picks the words: a loss or an error
  rate "fell from 0.31 to 0.18 (-42%)", a "reduction", never a "gain" of a negative number;
* classifiers also hear how fine-tuning compares with a frozen-feature probe fitted on the same
  labeled items, and every data knee comes with its stability over resampled seeds
  (:mod:`tunewise.budget.stability`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunewise.budget.roi import SizeSummary, find_knee, gaining_rois
from tunewise.budget.stability import KneeStability
from tunewise.errors import TunewiseError

if TYPE_CHECKING:
    from tunewise.budget.forecast import ForecastResult


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


def gain_name(absolute: bool, higher_is_better: bool = True) -> str:
    """Column and axis name of the improvement (a "reduction" for a lower-is-better metric)."""
    if higher_is_better:
        return "abs. gain" if absolute else "rel. improvement"
    return "abs. reduction" if absolute else "rel. reduction"


def improvement_words(absolute: bool, higher_is_better: bool = True) -> str:
    """What the improvement is called in sentences and captions."""
    if higher_is_better:
        return "gain" if absolute else "relative improvement"
    return "reduction" if absolute else "relative reduction"


def change_text(metric: str, before: float, after: float) -> str:
    """``eval_loss fell from 3.10 to 1.80 (-41.9%)``: a metric's move in its own direction words."""
    verb = "fell" if after < before else "rose" if after > before else "stayed"
    pct = f" ({100 * (after - before) / abs(before):+.1f}%)" if before else ""
    if verb == "stayed":
        return f"{metric} stayed at {before:.4g}"
    return f"{metric} {verb} from {before:.4g} to {after:.4g}{pct}"


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
    knee_stability: KneeStability | None = None,
    forecast: ForecastResult | None = None,
    unit: str = "items",
) -> Recommendation:
    """Turn sweep summaries into advice a person can act on.

    The advised data budget is the data knee (:func:`find_knee`), or the largest measured size
    when ROI has not fallen by ``drop`` yet; the advised training time is the time knee, or
    the best epoch when longer training made the metric worse. The "each extra 100 items adds
    under x%" bound is the largest marginal ROI measured beyond the knee times 100. The
    improvements are "better is positive" whatever the metric's direction; the text says
    "fell"/"reduction" for a lower-is-better metric.

    Args:
        data_summary: rows of a data sweep (:func:`summarize_points` with kind "data").
        time_summary: rows of a time sweep (kind "time"), or None.
        price_per_hour: price of the machine per hour; adds money next to the seconds.
        metric_name: the metric's name, used in the text.
        drop: ROI drop that defines the knee.
        currency: symbol put before money amounts.
        knee_stability: the data knee over resampled seeds (:func:`~tunewise.budget.stability.knee_stability`),
            quoted after the data advice.
        forecast: the sweep's learning-curve forecast; where the measurements end at "measure larger
            sizes" (the knee is the largest size, or ROI has not fallen yet), it says what the next
            labeling step is forecast to buy (:func:`tunewise.budget.beyond.next_step_advice`).
        unit: what one labeled example is called ("items", "pairs"), for that sentence.
    """
    check_price_per_hour(price_per_hour)
    data = list(data_summary or [])
    times = list(time_summary or [])
    warnings: list[str] = []
    rec: dict[str, Any] = {}
    parts: list[str] = []
    head = ""

    if data:
        higher = data[0].higher_is_better
        best = max(data, key=lambda r: r.mean_rel_improvement)
        if best.mean_rel_improvement <= 0:
            parts.append(
                f"Fine-tuning did not improve {metric_name}{'' if higher else ' (lower is better)'} over the "
                f"pre-trained model at any measured size (up to {data[-1].size} items); more labels are unlikely "
                "to help with this setup."
            )
        else:
            knee = find_knee([r.size for r in data], gaining_rois(data), drop)
            chosen = data[knee] if knee is not None else data[-1]
            share = chosen.mean_rel_improvement / best.mean_rel_improvement
            rec.update(items=chosen.size, data_knee=knee, gain_share=share)
            head = f"About {chosen.size} labeled items"
            absolute = chosen.absolute
            words = improvement_words(absolute, higher)
            if higher:
                kind = "absolute gain (the pre-trained model scores 0, so no ratio)" if absolute else words
                detail = (
                    f"{chosen.size} items give {gain_text(chosen.mean_rel_improvement, absolute)} {kind} "
                    f"in {metric_name}, {100 * share:.0f}% of the best measured "
                    f"({gain_text(best.mean_rel_improvement, absolute)} at {best.size} items)."
                )
            else:
                detail = (
                    f"With {chosen.size} items "
                    f"{change_text(f'{metric_name} (lower is better)', chosen.mean_metric_before, chosen.mean_metric)}, "
                    f"{100 * share:.0f}% of the best measured {words} "
                    f"({gain_text(best.mean_rel_improvement, absolute, signed=False)} at {best.size} items)."
                )
            next_step = _next_step(data, forecast, unit=unit, metric=metric_name, price_per_hour=price_per_hour,
                                   drop=drop, currency=currency)
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
                    f"{words} (measured up to {data[-1].size} items)."
                )
            elif knee is not None:
                per100 = chosen.marginal_roi * 100
                rec["marginal_per_100_items"] = per100
                detail += (
                    f" The last step, up to {chosen.size} items, added {_pct_ceil(per100, absolute)} {words} per "
                    f"100 items{'' if next_step else '; measure larger sizes to see what lies beyond'}."
                )
            if next_step:
                detail += f" {next_step}"
            if knee_stability is not None:
                detail += f" Stability: {knee_stability.text}."
            parts.append(detail)
        _warn_negative(data, "items", warnings, metric_name, higher)
        if (equal := _equal_labels_text(data, rec.get("items") or data[-1].size, metric_name)) is not None:
            parts.append(equal)

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
        # The seconds were measured at the time sweep's size: say so where that is not the advised size.
        at = "" if rec.get("items") in (None, chosen_t.size) else f" at {chosen_t.size} {unit}"
        head += (
            f"{' and' if head else 'About'} {chosen_t.epoch:g} epochs (about "
            f"{_seconds(chosen_t.mean_seconds)} of training{at} on this machine{money})"
        )
        _warn_negative(times, "epochs", warnings, metric_name, times[0].higher_is_better)
        if chosen_t.higher_is_better:
            gives = f"{chosen_t.epoch:g} epochs give {gain_text(chosen_t.mean_rel_improvement, chosen_t.absolute)}"
        else:
            gives = f"after {chosen_t.epoch:g} epochs {change_text(metric_name, chosen_t.mean_metric_before, chosen_t.mean_metric)}"
        parts.append(
            f"Time sweep at {chosen_t.size} items: {gives}; evaluation took a further "
            f"{_seconds(chosen_t.mean_eval_seconds)} per run (not counted as training)."
        )
    higher = (data or times)[0].higher_is_better if (data or times) else True
    text = (head + f" capture most of the {'gain' if higher else 'improvement'}. " if head else "") + " ".join(parts)
    if not data and not times:
        text = "No finished budget points yet: run a sweep first."
    text = " ".join([text, *warnings]).strip()
    return Recommendation(text=text, warnings=warnings, **rec)


def _next_step(rows: Sequence[SizeSummary], forecast: ForecastResult | None, *, unit: str, metric: str,
               price_per_hour: float | None, drop: float, currency: str) -> str | None:
    """What the forecast says the next labeling step would buy (None without a forecast, or inside the range)."""
    if forecast is None:
        return None
    from tunewise.budget.beyond import next_step_advice

    last = rows[-1]
    return next_step_advice(rows, forecast, unit=unit, metric=metric, higher_is_better=last.higher_is_better,
                            price_per_hour=price_per_hour,
                            seconds_per_item=last.mean_seconds / last.size if last.size else None,
                            drop=drop, currency=currency)


def _equal_labels_text(rows: Sequence[SizeSummary], size: int, metric: str) -> str | None:
    """Classifiers: fine-tuning against the frozen-feature probe fitted on the same labeled items.

    None when the sweep has no such probe (every task but the classifiers).
    """
    equal = [(r.size, r.mean_rel_improvement_equal_labels) for r in rows if r.mean_rel_improvement_equal_labels is not None]
    if not equal:
        return None
    at = dict(equal)
    size = size if size in at else equal[-1][0]
    words = "relative improvement" if rows[0].higher_is_better else "relative reduction"
    text = (f"Against a frozen-feature probe fitted on the same labeled items, fine-tuning at {size} items gives "
            f"{gain_text(at[size], False)} {words} in {metric}")
    winning = [s for s, value in equal if value > 0]
    if not winning:
        text += ("; it does not beat that probe at any measured size: at these budgets the probe alone (strategy "
                 "head) is the cheaper choice")
    elif winning[0] == equal[0][0]:
        text += f"; it beats that probe at every measured size from {equal[0][0]} items"
    else:
        text += f"; it beats that probe from {winning[0]} items (below that the probe alone is as good or better)"
    return text + (". The numbers above compare with the probe fitted on all training items: whether labels beat "
                   "features.")


def _warn_negative(rows: Sequence[SizeSummary], unit: str, out: list[str], metric: str,
                   higher_is_better: bool = True) -> None:
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
    moved = "fell" if higher_is_better else "rose (lower is better)"
    out.append(
        f"Warning: {metric} {moved} with more {unit} ({', '.join(steps)}; marginal ROI down to "
        f"{worst:.3g} per {'item' if unit == 'items' else 'second'}): {cause}."
    )
