"""What a budget sweep measures: the grid, the seeds, the time curve, and the jobs still to run.

:func:`plan_sweep` resolves the options against the data that exists (:class:`SweepPlan`);
:func:`plan_jobs` lists the :class:`PointJob` runs a store does not hold yet, seed by seed,
smallest size first; :func:`time_jobs` the separate time run, which under ``--time-size knee``
(the default) is planned once the data points are in (:func:`knee_time_size`).
:func:`tunewise.budget.sweep.run_budget` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunewise.budget.grid import check_grid, default_grid, nested_subsets
from tunewise.budget.roi import BudgetPoint
from tunewise.budget.store import ResultStore
from tunewise.config import RunConfig
from tunewise.errors import TunewiseError

SUBSET_SCHEME = "nested-prefix-v1"  # how indices are drawn; part of the store fingerprint


@dataclass(frozen=True)
class PointJob:
    """One training run of a sweep; self-contained so a Ray worker can run it from scratch.

    A data job gives one point; a time job (``kind="time"``) trains ``epochs`` and gives a
    point at every evaluation.
    """

    kind: str
    size: int
    seed: int
    indices: tuple[int, ...]
    epochs: float | None = None
    eval_steps: int | None = None
    data_point: bool = False  # a time job whose last evaluation is also the data point (size, seed)

    @property
    def label(self) -> str:
        if self.kind == "time":
            also = " (also the data point)" if self.data_point else ""
            return f"time curve: {self.size} items, {self.epochs:g} epochs, seed {self.seed}{also}"
        return f"{self.size} items, seed {self.seed}"


@dataclass
class SweepPlan:
    """What a sweep measures, resolved against the data (``time_size`` stays None under
    ``time_at_knee`` until the data sweep has named the size)."""

    sizes: list[int]
    seeds: int
    time_size: int | None  # None: no time sweep (or, with time_at_knee, not yet known)
    time_epochs: float
    eval_steps: int | None
    time_seeds: int = 1
    warnings: list[str] = field(default_factory=list)
    largest_seeds: int | None = None  # seeds at the largest size when it is all the data (None: ``seeds``)
    time_from_largest: bool = False  # the time curve is the largest size's data run, evaluated every epoch
    time_at_knee: bool = False  # the time curve runs at the recommended size, once the data sweep has found it

    def seeds_at(self, size: int) -> int:
        """Seeds planned at ``size``."""
        if self.largest_seeds is not None and self.sizes and size == self.sizes[-1]:
            return min(self.largest_seeds, self.seeds)
        return self.seeds

    def fingerprint_part(self) -> dict[str, Any]:
        """Settings that change a point's value. Sizes and seeds are left out on purpose:
        a point does not depend on them, so a grid can grow and reuse its finished points."""
        timed = self.time_size is not None or self.time_at_knee
        time_part = None if not timed else {
            "size": "knee" if self.time_at_knee else self.time_size, "epochs": self.time_epochs,
            "eval_steps": self.eval_steps, **({"from_largest": True} if self.time_from_largest else {})}
        return {"subsets": SUBSET_SCHEME, "time": time_part}


def plan_sweep(n_available: int, cfg: RunConfig, *, sizes=None, seeds: int = 3, time_size: int | str | None = None,
               epochs: float | None = None, eval_steps: int | None = None, time_sweep: bool = True,
               time_seeds: int = 1, largest_seeds: int | None = None, time_from_largest: bool = False) -> SweepPlan:
    """Resolve the grid and the time sweep against the data that exists.

    ``largest_seeds`` applies only where the largest size is all the data: every seed's nested
    subset is then the same items, so its seeds differ in training noise only. ``time_from_largest``
    makes the time curve the largest size's seed-0 data run (``train.epochs`` long), evaluated every
    epoch: the time sweep then costs evaluations, not a training run.

    Raises:
        TunewiseError: naming the option (``--seeds``, ``--sizes``, ``--time-size``,
            ``--epochs``, ``--eval-steps``, ``--largest-seeds``) on bad values. Sizes above the
            data are capped with a warning.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise TunewiseError(f"--seeds: must be a whole number of at least 1; got {seeds!r}")
    if time_seeds < 1:
        raise TunewiseError(f"time_seeds: must be at least 1; got {time_seeds}")
    warnings: list[str] = []
    if sizes is None:
        grid = default_grid(n_available)
    else:
        grid, warnings = check_grid(sizes, n_available, cap=True)
    if epochs is not None and not epochs > 0:
        raise TunewiseError(f"--epochs: must be positive; got {epochs}")
    if eval_steps is not None and eval_steps < 1:
        raise TunewiseError(f"--eval-steps: must be at least 1; got {eval_steps}")
    t_size, at_knee = None, False
    if time_sweep:
        at_knee, t_size = _time_size_option(time_size, grid, time_from_largest)
    if t_size is not None:
        if t_size < 1:
            raise TunewiseError(f"--time-size: must be at least 1; got {time_size}")
        if t_size > n_available:
            warnings.append(f"--time-size: {t_size} is larger than the {n_available} labeled items available; "
                            f"capped to {n_available}")
            t_size = n_available
    if largest_seeds is not None:
        if isinstance(largest_seeds, bool) or not isinstance(largest_seeds, int) or largest_seeds < 1:
            raise TunewiseError(f"--largest-seeds: must be a whole number of at least 1; got {largest_seeds!r}")
        if grid[-1] != n_available:
            warnings.append(f"--largest-seeds: the largest size ({grid[-1]}) is not all {n_available} items, so its "
                            f"seeds draw different subsets; running {seeds} seeds there")
            largest_seeds = None
    if time_from_largest and t_size is not None:
        if epochs is not None and float(epochs) != float(cfg.train.epochs):
            raise TunewiseError(f"--epochs: the time curve reuses the largest size's run of train.epochs "
                                f"({cfg.train.epochs:g}); drop --epochs, or set train.epochs={epochs:g}, or drop "
                                "--time-from-largest")
        if t_size != grid[-1]:
            raise TunewiseError(f"--time-size: the time curve reuses the largest size's run ({grid[-1]} items); "
                                "drop --time-size or --time-from-largest")
        return SweepPlan(grid, seeds, t_size, float(cfg.train.epochs), eval_steps, time_seeds, warnings,
                         largest_seeds, True)
    # Default: twice the configured training, to show whether training longer would pay.
    t_epochs = float(epochs) if epochs is not None else 2.0 * cfg.train.epochs
    return SweepPlan(grid, seeds, t_size, t_epochs, eval_steps, time_seeds, warnings, largest_seeds,
                     time_at_knee=at_knee)


def _time_size_option(time_size: int | str | None, grid: list[int], from_largest: bool) -> tuple[bool, int | None]:
    """``--time-size`` resolved: (run at the recommended size, fixed size or None until then).

    None means ``knee``, or ``largest`` with ``--time-from-largest`` (whose time curve is that run).
    """
    if time_size is None:
        return (False, grid[-1]) if from_largest else (True, None)
    text = str(time_size).strip().lower()
    if text == "knee":
        if from_largest:
            raise TunewiseError("--time-size: knee runs the time curve at the recommended size, --time-from-largest "
                                "at the largest; drop one of them")
        return True, None
    if text == "largest":
        return False, grid[-1]
    try:
        if isinstance(time_size, bool) or float(text) != int(float(text)):
            raise ValueError
        return False, int(float(text))
    except ValueError:
        raise TunewiseError(f"--time-size: expected a number of items, knee or largest; got {time_size!r}") from None


def knee_time_size(plan: SweepPlan, points: list[BudgetPoint], *, drop: float, unit: str = "items") -> int:
    """The size the time curve runs at under ``--time-size knee``: the data sweep's recommended
    size (its knee, or the largest measured size while more data still pays; the largest
    planned size when no size has gained), so "N items and E epochs (about S s of training)"
    is measured at the N it names."""
    from tunewise.budget.advice import recommend
    from tunewise.budget.results import planned_points
    from tunewise.budget.roi import summarize_points

    data, _ = planned_points(points, plan)
    rec = recommend(summarize_points(data, "data"), None, drop=drop, unit=unit)
    return int(rec.items) if rec.items else plan.sizes[-1]


def plan_jobs(plan: SweepPlan, n_available: int, cfg: RunConfig, store: ResultStore) -> tuple[list[PointJob], int]:
    """Jobs still to run, and how many planned points the store already holds."""
    done, points = store.done(), store.points()
    jobs: list[PointJob] = []
    subsets = {s: nested_subsets(n_available, [*plan.sizes, *([plan.time_size] if plan.time_size else [])],
                                 cfg.seed + s) for s in range(max(plan.seeds, plan.time_seeds))}
    reused = 0
    # Seed by seed, smallest size first: quick points land early, and a sweep stopped part-way
    # already has whole curves (what the knee and the forecast need) rather than many seeds
    # of the small sizes only.
    for s in range(plan.seeds):
        for size in plan.sizes:
            if s >= plan.seeds_at(size):
                continue
            if plan.time_from_largest and size == plan.time_size and s < plan.time_seeds:
                time_job = _time_job(plan, s, subsets[s], points, data_point=True)
                if time_job is None:
                    reused += 1 + sum(1 for p in points if p.kind == "time" and p.size == size and p.seed == s)
                else:
                    jobs.append(time_job)
            elif ("data", size, s, None) in done:
                reused += 1
            else:
                jobs.append(PointJob("data", size, s, tuple(subsets[s][size])))
    time, time_reused = time_jobs(plan, n_available, cfg, points)
    return jobs + time, reused + time_reused


def time_jobs(plan: SweepPlan, n_available: int, cfg: RunConfig, points: list[BudgetPoint]) -> tuple[list[PointJob], int]:
    """The separate time runs still to run, and how many time points of ``points`` (the store's)
    they reuse (none while ``--time-size knee`` waits for the data sweep, or with ``--time-from-largest``).
    A time run cannot restart mid-way: an unfinished one runs again, its points replace the old."""
    if plan.time_size is None or plan.time_from_largest:
        return [], 0
    jobs, reused = [], 0
    for s in range(plan.time_seeds):
        job = _time_job(plan, s, nested_subsets(n_available, [plan.time_size], cfg.seed + s), points, data_point=False)
        if job is None:
            reused += sum(1 for p in points if p.kind == "time" and p.size == plan.time_size and p.seed == s)
        else:
            jobs.append(job)
    return jobs, reused


def _time_job(plan: SweepPlan, seed: int, subsets: dict[int, list[int]], points: list[BudgetPoint], *,
              data_point: bool) -> PointJob | None:
    """The time job of ``seed`` (None: its run finished, every point stored)."""
    finished = [p for p in points if p.kind == "time" and p.size == plan.time_size and p.seed == seed]
    has_data = not data_point or any(p.kind == "data" and p.size == plan.time_size and p.seed == seed for p in points)
    if has_data and any(p.extra.get("final") for p in finished):
        return None
    return PointJob("time", plan.time_size, seed, tuple(subsets[plan.time_size]), plan.time_epochs, plan.eval_steps,
                    data_point=data_point)
