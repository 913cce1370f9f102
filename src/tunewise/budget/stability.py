"""How far to trust the knee: the knee recomputed on bootstrap resamples of the sweep's repetitions.

A data sweep repeats every size over a few seeds (and folds, when a sweep uses them). The knee
(:func:`~tunewise.budget.roi.find_knee`) is computed from the mean over those repetitions, so
with three seeds a single lucky run can move it. Here the repetitions are resampled with
replacement, the means and the knee are recomputed on every resample, and the central
``level`` (80%) of the resampled knees is reported: "knee at 200 items (in 84% of 1,000
resamples of the 3 seeds between 100 and 400)".

The resampling unit is the repetition, drawn jointly for every size: the subsets of one seed
are nested (its 100 items are the first 100 of its 200), so its points at different sizes are
not independent and stay together in a resample. A size where none of the drawn repetitions
finished (a sweep stopped part-way) keeps the mean of the repetitions it has.

Pure and seeded: the same points give the same answer.

References:
    Efron & Tibshirani, "An Introduction to the Bootstrap", 1993 (ch. 6, the bootstrap
    estimate of variability; ch. 13, percentile intervals).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunewise.budget.roi import BudgetPoint, find_knee, gaining_rois, summarize_points

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.80


@dataclass(frozen=True)
class KneeStability:
    """The data knee and how it moves under resampled repetitions.

    Args:
        knee: items at the knee of the measured means; None when ROI never fell by ``drop``.
        low, high: the central ``level`` of the resampled knees, in items; None stands for
            "no knee within the measured range" (beyond the largest size), or both None when
            the stability cannot be measured.
        share: share of resamples whose knee lies between ``low`` and ``high`` (at least ``level``).
        share_same: share of resamples whose knee is ``knee`` itself.
        share_none: share of resamples without a knee in the measured range.
        level: the nominal central share (0.80).
        resamples: bootstrap resamples drawn (0: not measurable).
        units: repetitions resampled (seeds, or seed and fold pairs).
        unit_name: what a repetition is, for the text ("seeds", "folds", "seed-fold runs").
        largest: the largest measured size.
        text: the sentence the recommendation and the report quote.
    """

    knee: int | None
    low: int | None
    high: int | None
    share: float | None
    share_same: float | None
    share_none: float | None
    level: float
    resamples: int
    units: int
    unit_name: str
    largest: int
    text: str

    @property
    def measurable(self) -> bool:
        return self.resamples > 0


def _unit(point: BudgetPoint) -> tuple[int, Any]:
    """The repetition a point belongs to: its seed, and its fold when the sweep uses folds."""
    fold = getattr(point, "fold", None)
    return int(point.seed), fold if fold is not None else point.extra.get("fold")


def _unit_name(units: Sequence[tuple[int, Any]]) -> str:
    seeds = {u[0] for u in units}
    folds = {u[1] for u in units}
    if None in folds or len(folds) == 1:
        return "seeds"
    return "folds" if len(seeds) == 1 else "seed-fold runs"


def _knee_index(sizes: Sequence[int], means: np.ndarray, drop: float) -> int | None:
    rois = [m / s if m > 0 else math.nan for s, m in zip(sizes, means)]  # gaining_rois on means
    return find_knee(sizes, rois, drop)


def _items(value: float) -> str:
    return f"{int(value):,}"


def knee_stability(points: Iterable[BudgetPoint], drop: float = 0.70, *, resamples: int = DEFAULT_RESAMPLES,
                   level: float = DEFAULT_LEVEL, seed: int = 0, unit_name: str | None = None) -> KneeStability | None:
    """Resample the repetitions of a data sweep and recompute the knee on each resample.

    Args:
        points: the data sweep's finished points (time points are ignored).
        drop: the knee's ROI drop (as for :func:`~tunewise.budget.roi.find_knee`).
        resamples: bootstrap resamples.
        level: central share of the resampled knees to report, in (0, 1).
        seed: seeds the resampling (deterministic).
        unit_name: what a repetition is called ("folds" when a k-fold sweep runs fold ``s`` as
            its seed ``s``); default: "seeds", or "folds" when the points carry ``extra["fold"]``.

    Returns:
        The stability, or None without data points. With one repetition per size it says
        that the stability cannot be measured.
    """
    pts = [p for p in points if p.kind == "data"]
    if not pts:
        return None
    rows = summarize_points(pts, "data")
    sizes = [r.size for r in rows]
    k = find_knee(sizes, gaining_rois(rows), drop)
    knee = sizes[k] if k is not None else None
    units = sorted({_unit(p) for p in pts}, key=repr)
    name = unit_name or _unit_name(units)
    largest = sizes[-1]
    at = f"knee at {_items(knee)} items" if knee is not None else f"no knee up to {_items(largest)} items"
    if len(units) < 2:
        return KneeStability(knee, None, None, None, None, None, level, 0, len(units), name, largest,
                             f"{at} (one {name[:-1] if name.endswith('s') else name} per size: how stable the knee is "
                             "cannot be measured; run at least 3 seeds, e.g. --seeds 3)")

    # (units, sizes) matrix of improvements; NaN where a repetition has no point at a size.
    index = {u: i for i, u in enumerate(units)}
    col = {s: j for j, s in enumerate(sizes)}
    values = np.full((len(units), len(sizes)), np.nan)
    for p in pts:
        values[index[_unit(p)], col[p.size]] = p.relative_improvement
    fallback = np.array([r.mean_rel_improvement for r in rows])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(units), size=(resamples, len(units)))
    knees: list[float] = []
    for draw in draws:
        sample = values[draw]  # (units, sizes)
        counts = (~np.isnan(sample)).sum(0)
        with np.errstate(invalid="ignore"):
            means = np.where(counts > 0, np.nansum(sample, 0) / np.maximum(counts, 1), fallback)
        i = _knee_index(sizes, means, drop)
        knees.append(float(sizes[i]) if i is not None else math.inf)
    arr = np.sort(np.array(knees))
    tail = (1 - level) / 2
    low = arr[int(math.floor(tail * (resamples - 1)))]
    high = arr[int(math.ceil((1 - tail) * (resamples - 1)))]
    share = float(np.mean((arr >= low) & (arr <= high)))
    share_none = float(np.mean(np.isinf(arr)))
    share_same = float(np.mean(arr == (knee if knee is not None else math.inf)))
    low_i = None if math.isinf(low) else int(low)
    high_i = None if math.isinf(high) else int(high)
    of = f"{resamples:,} resamples of the {len(units)} {name}"
    if low_i is None and knee is None:  # most resamples find no knee either
        return KneeStability(knee, low_i, high_i, share, share_same, share_none, level, resamples, len(units), name,
                             largest, f"{at} in {100 * share_none:.0f}% of {of}")
    if low_i is None:
        where = f"no knee within the measured range in {100 * share_none:.0f}% of {of}"
    elif high_i is None:
        where = (f"in {100 * share:.0f}% of {of} from {_items(low_i)} items to beyond the largest measured "
                 f"size ({_items(largest)}; no knee there in {100 * share_none:.0f}%)")
    elif low_i == high_i == knee:
        return KneeStability(knee, low_i, high_i, share, share_same, share_none, level, resamples, len(units), name,
                             largest, f"{at} in {100 * share:.0f}% of {of}")
    elif low_i == high_i:
        where = f"at {_items(low_i)} items in {100 * share:.0f}% of {of}"
    else:
        where = f"in {100 * share:.0f}% of {of} between {_items(low_i)} and {_items(high_i)} items"
    return KneeStability(knee, low_i, high_i, share, share_same, share_none, level, resamples, len(units), name,
                         largest, f"{at} ({where})")
