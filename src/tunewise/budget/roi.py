"""Return on investment of labeled data and training time: pure functions, no training.

A budget sweep fine-tunes the same pre-trained model at several budgets and measures the
metric before and after. From those measurements this module derives:

* relative improvement ``r = (m_after - m_before) / m_before`` (``m_before`` is the
  pre-trained model on the same evaluation set; a run's ``metrics.json`` uses the same
  function), or the absolute gain where the pre-trained model scores 0. "Improvement" always
  means "better": for a lower-is-better metric (a loss, perplexity, WER; the task declares the
  direction, :meth:`tunewise.tasks.base.TaskSpec.higher_is_better`) it is the relative
  reduction ``(m_before - m_after) / m_before``, so a falling WER is a positive improvement and
  everything below (ROI, knee, marginal ROI) needs no second definition,
* ROI ``r / B`` where the budget ``B`` is labeled items (data sweep) or training seconds
  (time sweep; evaluation time is excluded and reported separately),
* marginal ROI between consecutive budgets ``(r_i - r_{i-1}) / (B_i - B_{i-1})``, which is
  negative when more budget made the model worse (overfitting),
* the knee: the first budget at which ROI has fallen by at least ``drop`` (70%) from its peak.

The plain-language recommendation built from these numbers is :mod:`tunewise.budget.advice`.

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
        higher_is_better: the metric's direction (False: a loss or error rate, where a fall is
            the improvement). Stores written before it existed hold higher-is-better metrics only.
        metric_before_equal_labels: classifiers only: the frozen-feature probe fitted on this
            point's own training subset (the transfer-learning baseline at the same labeled
            size), scored on the same evaluation set; ``metric_before`` is the probe fitted on
            all training items. None for tasks without such a baseline.
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
    higher_is_better: bool = True
    metric_before_equal_labels: float | None = None

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
        return improvement(self.metric_before, self.metric_after, self.higher_is_better)

    @property
    def improvement_equal_labels(self) -> float | None:
        """Relative improvement over the probe fitted on the same labeled items (None: no such probe, or it scored 0)."""
        if self.metric_before_equal_labels is None:
            return None
        return relative_improvement(self.metric_before_equal_labels, self.metric_after,
                                    higher_is_better=self.higher_is_better)


@dataclass(frozen=True)
class SizeSummary:
    """Mean over seeds at one budget.

    ``size`` is the number of items; for a time sweep the budget is ``mean_seconds`` and the
    row is identified by ``epoch`` (``size`` is then the fixed data size of the sweep).
    ``std`` is the sample standard deviation of the relative improvement over seeds (0 for a
    single seed). ``marginal_roi`` of the first row is measured from the origin (no budget,
    no improvement), so it equals its ROI. The improvements are "better is positive" for both
    directions of the metric (``higher_is_better``).

    Classifiers also get the comparison at equal labels (None elsewhere):
    ``mean_metric_before_equal_labels`` is the mean score of the frozen-feature probe fitted on
    each point's own subset, ``mean_rel_improvement_equal_labels`` (± ``std_equal_labels``) the
    fine-tuned model's relative improvement over it: whether fine-tuning is worth it at this
    budget, where ``mean_rel_improvement`` (against the probe fitted on all items) says whether
    labels beat features.
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
    higher_is_better: bool = True
    mean_metric_before_equal_labels: float | None = None
    mean_rel_improvement_equal_labels: float | None = None
    std_equal_labels: float | None = None

    @property
    def absolute(self) -> bool:
        """Whether the improvement is an absolute gain (the pre-trained model scored 0)."""
        return not self.mean_metric_before > 0

    @property
    def budget(self) -> float:
        """Items for a data sweep, training seconds for a time sweep."""
        return float(self.size) if self.kind == "data" else self.mean_seconds


def relative_improvement(metric_before: float | None, metric_after: float, *,
                         higher_is_better: bool = True) -> float | None:
    """Relative improvement over the pre-trained model, positive when the model got better.

    ``r = (m_after - m_before) / |m_before|`` for a higher-is-better metric, and the relative
    reduction ``r = (m_before - m_after) / |m_before|`` for a lower-is-better one (a loss,
    perplexity, an error rate): WER falling from 0.30 to 0.18 is ``r = +0.40``. The one
    definition, used per metric in a run's ``metrics.json`` and by the budget planner.

    Args:
        metric_before: the pre-trained (baseline) score.
        metric_after: the fine-tuned score on the same evaluation set.
        higher_is_better: the metric's direction, as the task declares it.

    Returns:
        The ratio, or None when the pre-trained score is 0 or missing (no ratio exists; the
        planner then measures the absolute gain, :func:`improvement`).
    """
    if not metric_before:
        return None
    gain = metric_after - metric_before if higher_is_better else metric_before - metric_after
    return gain / abs(metric_before)


def improvement(metric_before: float, metric_after: float, higher_is_better: bool = True) -> float:
    """What the budget planner measures a run by (positive: better, for either direction).

    The relative improvement over the pre-trained model when it scores above 0; when it scores
    0 (an output format it never produces, say) the ratio is undefined and the improvement is
    the absolute gain in the metric's own units, ``m_after - m_before`` (or ``m_before -
    m_after`` for a lower-is-better metric). Every point of a sweep shares the pre-trained
    score, so all of its rows are of one kind.
    """
    rel = relative_improvement(metric_before, metric_after, higher_is_better=higher_is_better) if metric_before > 0 else None
    if rel is not None:
        return rel
    return metric_after - metric_before if higher_is_better else metric_before - metric_after


def metric_direction(spec: Any, name: str) -> bool:
    """``spec.higher_is_better(name)`` of a task's :class:`~tunewise.tasks.base.TaskSpec`.

    A metric the task reports without declaring it (a diagnostic next to the declared ones)
    counts as higher-is-better, as every metric did before directions existed.
    """
    try:
        return bool(spec.higher_is_better(name))
    except TunewiseError:
        return True


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


def check_knee_drop(drop: float) -> float:
    """The knee's ROI drop, checked: a fraction in (0, 1).

    Raises:
        TunewiseError: naming ``--knee-drop``.
    """
    if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 < drop < 1:
        raise TunewiseError(f"--knee-drop: must be a fraction in (0, 1), e.g. 0.70 for a 70% drop; got {drop}")
    return drop


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
    check_knee_drop(drop)
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
    directions = {p.higher_is_better for p in pts}
    if len(directions) > 1:
        raise ValueError("points mix higher- and lower-is-better metrics; a sweep scores one metric")
    higher = directions.pop()
    groups: dict[Any, list[BudgetPoint]] = defaultdict(list)
    for p in pts:
        groups[p.size if kind == "data" else p.epoch].append(p)

    rows = []
    for group_key, group in groups.items():
        rel = [p.relative_improvement for p in group]
        n = len(rel)
        mean_r, std = _mean_std(rel)
        probes = [p.metric_before_equal_labels for p in group if p.metric_before_equal_labels is not None]
        equal = [r for r in (p.improvement_equal_labels for p in group) if r is not None]
        mean_eq, std_eq = _mean_std(equal) if equal else (None, None)
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
                higher_is_better=higher,
                mean_metric_before_equal_labels=sum(probes) / len(probes) if probes else None,
                mean_rel_improvement_equal_labels=mean_eq,
                std_equal_labels=std_eq,
                _budget=budget,
            )
        )
    rows.sort(key=lambda r: (r["_budget"], r["epoch"] or 0))
    margins = marginal_roi([r["_budget"] for r in rows], [r["mean_rel_improvement"] for r in rows])
    return [
        SizeSummary(marginal_roi=m, **{k: v for k, v in r.items() if k != "_budget"})
        for r, m in zip(rows, margins)
    ]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    return mean, (math.sqrt(sum((x - mean) ** 2 for x in values) / (n - 1)) if n > 1 else 0.0)


def gaining_rois(rows: Sequence[SizeSummary]) -> list[float]:
    """ROI where the budget improved on the pre-trained model, NaN (skipped by the knee) elsewhere.

    A budget that is still below the pre-trained score has no return to fall from: counting a
    tiny positive ROI just above zero as the peak would put the knee at the next dip.
    """
    return [r.roi if r.mean_rel_improvement > 0 else math.nan for r in rows]
