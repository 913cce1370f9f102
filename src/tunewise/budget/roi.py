"""Return on investment of labeled data and training time: pure functions, no training.

A budget sweep fine-tunes the same pre-trained model at several budgets and measures the
metric before and after. From those measurements this module derives:

* relative improvement ``r = (m_after - m_before) / m_before`` (``m_before`` is the
  pre-trained model on the same evaluation set),
* ROI ``r / B`` where the budget ``B`` is labeled items (data sweep) or training seconds
  (time sweep; evaluation time is excluded and reported separately),
* marginal ROI between consecutive budgets ``(r_i - r_{i-1}) / (B_i - B_{i-1})``, which is
  negative when more budget made the model worse (overfitting),
* the knee: the first budget at which ROI has fallen by at least ``drop`` (70%) from its peak,
* a plain-language recommendation built from all of the above.

The definitions follow the Jina AI study "Fine-tuning with low budget and high
expectations" (Xiao, Wang, Martens, 2022), which reported the 70% ROI drop.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunewise.errors import TunewiseError

KINDS = ("data", "time")


@dataclass(frozen=True)
class BudgetPoint:
    """One finished fine-tuning run of a budget sweep.

    Args:
        size: labeled training items used.
        seed: seed of the subset draw and of training.
        metric_before: metric of the pre-trained model on the evaluation set.
        metric_after: metric of the fine-tuned model on the same evaluation set.
        train_seconds: wall-clock seconds spent training (evaluation excluded).
        eval_seconds: wall-clock seconds spent evaluating, reported separately.
        epoch: epochs trained; the budget axis of a time sweep (may be fractional).
        extra: anything else worth keeping (peak memory, samples/s, ...); JSON-serialisable.
        kind: "data" (budget = items) or "time" (budget = training seconds).
    """

    size: int
    seed: int
    metric_before: float
    metric_after: float
    train_seconds: float
    eval_seconds: float
    epoch: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    kind: str = "data"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"BudgetPoint.kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "time" and self.epoch is None:
            raise ValueError("BudgetPoint.epoch is required for a time-sweep point")

    @property
    def key(self) -> tuple[str, int, int, float | None]:
        """Identity of the run inside a sweep: ``(kind, size, seed, epoch)``."""
        return (self.kind, int(self.size), int(self.seed), self.epoch)

    @property
    def relative_improvement(self) -> float:
        """The planner's improvement: relative, or the absolute gain from a pre-trained score of 0."""
        return improvement(self.metric_before, self.metric_after)


@dataclass(frozen=True)
class SizeSummary:
    """Mean over seeds at one budget.

    ``size`` is the number of items; for a time sweep the budget is ``mean_seconds`` and the
    row is identified by ``epoch`` (``size`` is then the fixed data size of the sweep).
    ``std`` is the sample standard deviation of the relative improvement over seeds (0 for a
    single seed). ``marginal_roi`` of the first row is measured from the origin (no budget,
    no improvement), so it equals its ROI.
    """

    size: int
    n: int
    mean_rel_improvement: float
    std: float
    mean_metric: float
    mean_seconds: float
    roi: float
    marginal_roi: float
    mean_eval_seconds: float = 0.0
    mean_metric_before: float = 0.0
    epoch: float | None = None
    kind: str = "data"

    @property
    def absolute(self) -> bool:
        """Whether the improvement is an absolute gain (the pre-trained model scored 0)."""
        return not self.mean_metric_before > 0

    @property
    def budget(self) -> float:
        """Items for a data sweep, training seconds for a time sweep."""
        return float(self.size) if self.kind == "data" else self.mean_seconds


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


def relative_improvement(metric_before: float, metric_after: float) -> float:
    """Relative improvement over the pre-trained model.

    ``r = (m_after - m_before) / m_before``

    Raises:
        TunewiseError: when ``metric_before`` is not positive (the ratio is undefined).
    """
    if not metric_before > 0:
        raise TunewiseError(
            f"metric_before: the pre-trained model scores {metric_before}, so relative "
            "improvement is undefined; pick a metric on which it scores above 0"
        )
    return (metric_after - metric_before) / metric_before


def improvement(metric_before: float, metric_after: float) -> float:
    """What the budget planner measures a run by.

    The relative improvement over the pre-trained model when it scores above 0; when it scores
    0 (an output format it never produces, say) the ratio is undefined and the improvement is
    the absolute gain ``m_after - m_before`` in the metric's own units (every point of a sweep
    shares the pre-trained score, so all of its rows are of one kind).
    """
    if metric_before > 0:
        return relative_improvement(metric_before, metric_after)
    return metric_after - metric_before


def gain_text(value: float, absolute: bool, digits: int = 1, signed: bool = True) -> str:
    """An improvement for people: ``+12.3%`` relative, or ``+0.975`` as an absolute gain."""
    sign = "+" if signed else ""
    return f"{value:{sign}.3f}" if absolute else f"{100 * value:{sign}.{digits}f}%"


def gain_name(absolute: bool) -> str:
    """Column and axis name of the improvement."""
    return "abs. gain" if absolute else "rel. improvement"


def roi(rel_improvement: float, budget: float) -> float:
    """ROI = relative improvement / budget (labeled items, or training seconds)."""
    if not budget > 0:
        raise ValueError(f"ROI needs a positive budget, got {budget}")
    return rel_improvement / budget


def marginal_roi(budgets: Sequence[float], rel_improvements: Sequence[float]) -> list[float]:
    """Marginal ROI between consecutive budgets.

    ``mROI_i = (r_i - r_{i-1}) / (B_i - B_{i-1})`` with ``(B_0, r_0) = (0, 0)``: zero budget
    is the pre-trained model, whose improvement over itself is 0. A negative value means the
    extra budget made the model worse (overfitting); NaN when two budgets coincide.
    """
    if len(budgets) != len(rel_improvements):
        raise ValueError("budgets and rel_improvements must have the same length")
    out: list[float] = []
    prev_b, prev_r = 0.0, 0.0
    for b, r in zip(budgets, rel_improvements):
        db = float(b) - prev_b
        out.append((float(r) - prev_r) / db if db != 0 else math.nan)
        prev_b, prev_r = float(b), float(r)
    return out


def find_knee(budgets: Sequence[float], rois: Sequence[float], drop: float = 0.70) -> int | None:
    """Index of the first budget whose ROI has fallen by at least ``drop`` from its peak.

    The peak is the running maximum up to that budget (``roi_i <= (1 - drop) * max_{j<=i}
    roi_j``), so adding larger budgets to a sweep never moves an existing knee.

    Args:
        budgets: increasing budgets (only used to check the lengths match).
        rois: ROI at each budget; NaN entries are skipped.
        drop: fraction in (0, 1); 0.70 means "fallen by 70%".

    Returns:
        The index, or None when ROI never fell that far or never was positive.

    Raises:
        TunewiseError: when ``drop`` is not a fraction in (0, 1).
    """
    if not 0 < drop < 1:
        raise TunewiseError(
            f"--knee-drop: must be a fraction in (0, 1), e.g. 0.70 for a 70% drop; got {drop}"
        )
    if len(budgets) != len(rois):
        raise ValueError("budgets and rois must have the same length")
    peak = -math.inf
    for i, value in enumerate(rois):
        if value is None or math.isnan(value):
            continue
        peak = max(peak, value)
        if peak > 0 and value <= (1 - drop) * peak:
            return i
    return None


def summarize_points(points: Iterable[BudgetPoint], kind: str | None = None) -> list[SizeSummary]:
    """Average the seeds at each budget and derive ROI and marginal ROI.

    Data points are grouped by ``size``; time points by ``epoch`` (budget = mean training
    seconds at that epoch). Rows come back ordered by budget.

    Args:
        points: finished runs, all of one kind unless ``kind`` selects one.
        kind: "data" or "time"; None infers it from the points.

    Raises:
        ValueError: when kinds are mixed and ``kind`` is None.
    """
    pts = list(points)
    if kind is not None:
        pts = [p for p in pts if p.kind == kind]
    kinds = {p.kind for p in pts}
    if len(kinds) > 1:
        raise ValueError(f"points mix sweep kinds {sorted(kinds)}; pass kind='data' or 'time'")
    if not pts:
        return []
    kind = kinds.pop()
    groups: dict[Any, list[BudgetPoint]] = defaultdict(list)
    for p in pts:
        groups[p.size if kind == "data" else p.epoch].append(p)

    rows = []
    for group_key, group in groups.items():
        rel = [p.relative_improvement for p in group]
        n = len(rel)
        mean_r = sum(rel) / n
        std = math.sqrt(sum((x - mean_r) ** 2 for x in rel) / (n - 1)) if n > 1 else 0.0
        mean_s = sum(p.train_seconds for p in group) / n
        budget = float(group_key) if kind == "data" else mean_s
        rows.append(
            dict(
                size=int(group[0].size) if kind == "time" else int(group_key),
                n=n,
                mean_rel_improvement=mean_r,
                std=std,
                mean_metric=sum(p.metric_after for p in group) / n,
                mean_seconds=mean_s,
                roi=roi(mean_r, budget) if budget > 0 else math.nan,
                mean_eval_seconds=sum(p.eval_seconds for p in group) / n,
                mean_metric_before=sum(p.metric_before for p in group) / n,
                epoch=None if kind == "data" else group_key,
                kind=kind,
                _budget=budget,
            )
        )
    rows.sort(key=lambda r: (r["_budget"], r["epoch"] or 0))
    margins = marginal_roi([r["_budget"] for r in rows], [r["mean_rel_improvement"] for r in rows])
    return [
        SizeSummary(marginal_roi=m, **{k: v for k, v in r.items() if k != "_budget"})
        for r, m in zip(rows, margins)
    ]


def _pct_ceil(x: float, absolute: bool = False) -> str:
    # Round up so that "adds under x" stays true of the measured value.
    if absolute:
        return f"{max(math.ceil(x * 1000) / 1000, 0):.3f}"
    return f"{max(math.ceil(100 * x * 100) / 100, 0):.2f}%"


def _seconds(s: float) -> str:
    return f"{s:,.0f} s" if s < 600 else f"{s:,.0f} s ≈ {s / 60:.0f} min"


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
    if price_per_hour is not None and not price_per_hour >= 0:
        raise TunewiseError(f"--price-per-hour: must be 0 or more; got {price_per_hour}")
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


def gaining_rois(rows: Sequence[SizeSummary]) -> list[float]:
    """ROI where the budget improved on the pre-trained model, NaN (skipped by the knee) elsewhere.

    A budget that is still below the pre-trained score has no return to fall from: counting a
    tiny positive ROI just above zero as the peak would put the knee at the next dip.
    """
    return [r.roi if r.mean_rel_improvement > 0 else math.nan for r in rows]


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
