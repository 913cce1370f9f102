"""Adaptive sweeps and the sweep's cost: when more points stop changing the answer.

A sweep runs seed by seed, smallest size first (:func:`tunewise.budget.plan.plan_jobs`), so
after every seed it holds whole curves. :func:`adaptive_stop` is the rule ``tunewise budget
--adaptive`` applies at each seed boundary; pure, on finished points:

* **knee confirmed**: the data knee (:func:`~tunewise.budget.roi.find_knee` on the mean over
  seeds) lies below the largest size, so ROI has been measured past it, and leaving out any one
  seed does not move it: one more seed would have to contradict every seed so far to change it
  (a size only one seed measured, e.g. the full size with ``largest_seeds=1``, stays in);
* **forecast sharp enough** (``stop_width``): the forecast's interval at the largest grid size
  is narrower than the width the user asked for.

Both need ``min_seeds`` finished seeds (default 2): one seed has no spread to judge. Once the
rule holds, the sweep skips the remaining seeds of the data sweep (the time curve still runs)
and the report says what was skipped and why.

:func:`full_run_cost` is what the sweep's cost is quoted against: one fit of the config at the
full size with the config's epochs, measured where the sweep has that point, else scaled from
its largest point by size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tunewise.budget.roi import BudgetPoint, find_knee, gaining_rois, summarize_points
from tunewise.errors import TunewiseError

if TYPE_CHECKING:
    from tunewise.budget.forecast import ForecastResult

MIN_SEEDS = 2


@dataclass(frozen=True)
class StopDecision:
    """The adaptive rule's verdict on the points so far."""

    stop: bool
    reason: str  # why it stops, or what it still waits for
    knee_size: int | None = None
    width: float | None = None  # forecast interval width at the largest grid size
    seeds: int = 0  # seeds finished at every size
    skipped: list[str] = field(default_factory=list)  # labels of the runs left out (set by the sweep)

    def as_dict(self) -> dict[str, Any]:
        return {"stopped": self.stop, "reason": self.reason, "knee_items": self.knee_size,
                "forecast_width_at_largest": self.width, "seeds": self.seeds, "skipped": list(self.skipped)}


def check_stop_width(stop_width: float | None) -> None:
    """Raises TunewiseError naming ``--stop-width`` unless it is None or in (0, 1)."""
    if stop_width is not None and not (isinstance(stop_width, (int, float)) and 0 < stop_width < 1):
        raise TunewiseError(f"--stop-width: must be a metric width in (0, 1), e.g. 0.02; got {stop_width}")


def interval_width(fc: ForecastResult | None, size: int) -> float | None:
    """``high - low`` of the forecast at ``size`` (None: no forecast, or not forecast there)."""
    if fc is None or size not in fc.sizes:
        return None
    i = fc.sizes.index(size)
    return float(fc.high[i] - fc.low[i])


def _knee(points: Sequence[BudgetPoint], sizes: Sequence[int], drop: float) -> int | None:
    rows = summarize_points(points, "data")
    if [r.size for r in rows] != list(sizes) or max(r.mean_rel_improvement for r in rows) <= 0:
        return None
    return find_knee(sizes, gaining_rois(rows), drop)


def adaptive_stop(points: Sequence[BudgetPoint], sizes: Sequence[int], *, stop_width: float | None = None,
                  drop: float = 0.70, min_seeds: int = MIN_SEEDS,
                  forecast: ForecastResult | None = None) -> StopDecision:
    """Whether the data sweep may stop: the knee is confirmed, or the forecast is sharp enough.

    Args:
        points: finished points (time points are ignored).
        sizes: the grid; every size needs a point before anything stops.
        stop_width: stop once the forecast interval at ``sizes[-1]`` is at most this wide (None: knee only).
        drop: the knee's ROI drop (as the report's).
        min_seeds: seeds needed at the smaller sizes (the largest size may run fewer, see
            ``largest_seeds`` of :func:`tunewise.budget.sweep.run_budget`).
        forecast: the forecast of these points (its interval at ``sizes[-1]`` is read).

    Returns:
        A :class:`StopDecision`; ``reason`` is a sentence either way.
    """
    check_stop_width(stop_width)
    sizes = sorted(int(s) for s in sizes)
    data = [p for p in points if p.kind == "data" and p.size in sizes]
    seeds_at = {s: {p.seed for p in data if p.size == s} for s in sizes}
    if missing := [s for s in sizes if not seeds_at[s]]:
        return StopDecision(False, f"sizes {missing} not measured yet")
    done = min(len(seeds_at[s]) for s in sizes[:-1]) if len(sizes) > 1 else len(seeds_at[sizes[0]])
    if done < min_seeds:
        return StopDecision(False, f"{done} seed(s) finished; the rule needs {min_seeds}", seeds=done)
    width = interval_width(forecast, sizes[-1])
    knee = _knee(data, sizes, drop)
    knee_size = None if knee is None else sizes[knee]
    if knee is not None and knee < len(sizes) - 1:
        seeds = sorted({p.seed for p in data})
        held = [_knee(_leave_out(data, s), sizes, drop) for s in seeds]
        if all(k == knee for k in held):
            return StopDecision(True, f"knee at {knee_size} items on the mean of {done} seeds and with any one seed "
                                f"left out, and ROI measured past it up to {sizes[-1]} items", knee_size, width, done)
    if stop_width is not None and width is not None and width <= stop_width:
        return StopDecision(True, f"forecast interval at {sizes[-1]} items is {width:.4f} wide, within "
                            f"--stop-width {stop_width:g}", knee_size, width, done)
    waits = ["knee not confirmed" if knee_size is None or knee == len(sizes) - 1 else
             f"knee at {knee_size} items moves when one seed is left out"]
    if stop_width is not None:
        waits.append("no forecast interval yet" if width is None else
                     f"forecast interval at {sizes[-1]} items {width:.4f} wide > --stop-width {stop_width:g}")
    return StopDecision(False, "; ".join(waits), knee_size, width, done)


def _leave_out(data: Sequence[BudgetPoint], seed: int) -> list[BudgetPoint]:
    """The points without ``seed``'s, except at a size only that seed measured (one seed at the full
    size, ``largest_seeds=1``): those stay, since the rule asks whether the other seeds' subsets
    move the knee, and that size has no other seed to ask."""
    rest = [p for p in data if p.seed != seed]
    measured = {p.size for p in rest}
    return rest + [p for p in data if p.seed == seed and p.size not in measured]


def full_run_cost(data: Sequence[BudgetPoint], n_available: int) -> tuple[float | None, str]:
    """Seconds of one full run (train + one evaluation) at ``n_available`` items, and how they were got.

    Measured: the mean over seeds of the data points at the full size. Estimated: the largest
    measured size's mean training seconds times ``n_available / size`` (training is linear in
    items at fixed epochs), plus its evaluation (which does not depend on the training size).
    """
    pts = [p for p in data if p.kind == "data"]
    if not pts or n_available < 1:
        return None, "no finished points"
    largest = max(p.size for p in pts)
    at = [p for p in pts if p.size == largest]
    train = sum(p.train_seconds for p in at) / len(at)
    evaluation = sum(p.eval_seconds for p in at) / len(at)
    if largest == n_available:
        return train + evaluation, f"measured at {largest} items"
    return train * n_available / largest + evaluation, f"estimated from {largest} items scaled to {n_available}"


def cost_multiple(sweep_seconds: float, full_seconds: float | None) -> float | None:
    """The sweep's seconds as a multiple of one full run (None when there is no full run to compare)."""
    if not full_seconds or not math.isfinite(full_seconds) or full_seconds <= 0:
        return None
    return sweep_seconds / full_seconds


def run_adaptive(runner: Any, jobs: list, plan: Any, store: Any, latest: list[Any], *,
                  stop_width: float | None, drop: float, console: Any, **run_args: Any) -> StopDecision | None:
    """Run the jobs seed by seed; after each seed, stop the data sweep once :func:`adaptive_stop` says so.

    Time jobs are never skipped (they are the time answer). Returns the last :class:`StopDecision`.
    """
    groups: list[list] = []
    for job in jobs:  # consecutive jobs of one seed (a separate time run is its own group)
        key = (job.seed, job.kind == "data" or job.data_point)
        if groups and (groups[-1][0].seed, groups[-1][0].kind == "data" or groups[-1][0].data_point) == key:
            groups[-1].append(job)
        else:
            groups.append([job])
    decision = None
    for i, group in enumerate(groups):
        runner.run(group, **run_args)
        rest = [j for g in groups[i + 1:] for j in g]
        if not any(j.kind == "data" or j.data_point for j in rest):
            continue
        decision = adaptive_stop(store.points(), plan.sizes, stop_width=stop_width, drop=drop,
                                 forecast=latest[0].forecast if latest else None)
        if decision.stop:
            skip = [j for j in rest if j.kind == "data" and not j.data_point]
            decision = replace(decision, skipped=[j.label for j in skip])
            console.print(f"[bold]adaptive:[/] stopping the data sweep: {decision.reason}; skipping {len(skip)} runs")
            remaining = [j for j in rest if j not in skip]
            if remaining:
                runner.run(remaining, **run_args)
            return decision
        console.print(f"adaptive: going on ({decision.reason})")
    return decision
