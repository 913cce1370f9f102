"""From finished points to the budget report: summaries, knees, advice, forecast, files.

Everything here is derived from the points in the result store (and the sweep plan), never
from this process's clock, so rerunning a finished sweep rewrites the same report.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.budget.advice import Recommendation, recommend
from tunewise.budget.forecast import ForecastResult, TargetEstimate, ValidationResult, forecast, labels_for_target, validate_forecast
from tunewise.budget.roi import BudgetPoint, SizeSummary, summarize_points
from tunewise.budget.stability import KneeStability, knee_stability
from tunewise.errors import TunewiseError


@dataclass
class BudgetResult:
    """What a budget sweep measured and advised; the files are in ``output_dir``."""

    output_dir: Path
    metric: str
    metric_before: float | None
    points: list[BudgetPoint]
    data_summary: list[SizeSummary]
    time_summary: list[SizeSummary]
    recommendation: Recommendation
    forecast: ForecastResult | None = None
    validation: ValidationResult | None = None
    target: TargetEstimate | None = None
    cost: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    ran: int = 0  # training runs made by this call
    reused: int = 0  # planned points found finished in the store
    wall_seconds: float = 0.0
    backend: str = "local"
    higher_is_better: bool = True
    knee_stability: KneeStability | None = None

    @property
    def equal_labels(self) -> bool:
        """Whether the points carry a probe fitted at each point's own size (classifiers)."""
        return any(p.metric_before_equal_labels is not None for p in self.points)

    @property
    def report_path(self) -> Path:
        return self.output_dir / "report.html"

    @property
    def summary_path(self) -> Path:
        return self.output_dir / "summary.json"

    @property
    def store_path(self) -> Path:
        return self.output_dir / "results.jsonl"


def planned_points(points: list[BudgetPoint], plan) -> tuple[list[BudgetPoint], list[BudgetPoint]]:
    """The data and time points this plan asked for (a store may hold more, e.g. a larger grid)."""
    data = [p for p in points if p.kind == "data" and p.size in plan.sizes and p.seed < plan.seeds]
    time = [p for p in points if p.kind == "time" and p.size == plan.time_size and p.seed < plan.time_seeds]
    return sorted(data, key=lambda p: (p.size, p.seed)), sorted(time, key=lambda p: (p.seed, p.epoch))


def sweep_cost(data: list[BudgetPoint], time: list[BudgetPoint], price_per_hour: float | None) -> dict[str, Any]:
    """Training and evaluation seconds the sweep spent (the time run counted once)."""
    train = sum(p.train_seconds for p in data)
    runs: dict[int, float] = {}
    for p in time:
        runs[p.seed] = max(runs.get(p.seed, 0.0), p.train_seconds)
    train += sum(runs.values())
    # Classifiers also score the probe fitted on each point's subset: evaluation time too.
    probes = {(p.kind, p.size, p.seed): p.extra.get("probe_eval_seconds", 0.0) or 0.0 for p in [*data, *time]}
    evaluation = sum(p.eval_seconds for p in [*data, *time]) + sum(probes.values())
    cost = {"train_seconds": round(train, 2), "eval_seconds": round(evaluation, 2), "runs": len(data) + len(runs)}
    if price_per_hour is not None:
        cost["price_per_hour"] = price_per_hour
        cost["money"] = round((train + evaluation) / 3600 * price_per_hour, 4)
    return cost


def _forecast_parts(data: list[BudgetPoint], *, forecast_sizes, validate: bool, target, warnings: list[str]):
    sizes = sorted({p.size for p in data})  # a lower-is-better metric: the forecast reads the points' direction
    if len(sizes) < 3:
        warnings.append(f"no forecast: it needs at least 3 grid sizes with finished points, got {len(sizes)}")
        return None, None, None
    fc = val = tgt = None
    try:
        fc = forecast(data, sorted({*sizes, *map(int, forecast_sizes)}) if forecast_sizes else None)
    except TunewiseError as err:
        warnings.append(f"no forecast: {err}")
        return None, None, None
    if validate:
        try:
            val = validate_forecast(data)
        except TunewiseError as err:
            warnings.append(f"no forecast validation: {err}")
    if target is not None:
        tgt = labels_for_target(fc, target)
    return fc, val, tgt


def _notes(cfg, task, plan, before: float | None, cost: dict[str, Any], backend: str) -> list[str]:
    primary = cfg.eval.primary
    money = f" ≈ {cost['money']:.2f} at {cost['price_per_hour']:.2f}/hour" if "money" in cost else ""
    notes = [
        f"task {cfg.task}, model {cfg.model or task.spec.default_model}, strategy {cfg.strategy_name}, "
        f"loss {cfg.train.loss}, {cfg.train.epochs:g} epochs per data point, batch size {cfg.train.batch_size}, "
        f"learning rate {cfg.train.learning_rate:g}, seed {cfg.seed}",
        f"pre-trained model: {primary} = {before:.4f} on the evaluation set every point is scored on"
        if before is not None else "pre-trained model: not evaluated (no points)",
        *([] if task.spec.higher_is_better(primary) else
          [f"{primary} is lower-is-better: improvements are relative reductions ((before - after) / before), "
           "so a fall is a positive improvement"]),
        f"data sweep: nested seeded subsets, sizes {plan.sizes} x {plan.seeds} seeds",
    ]
    if plan.time_size:
        notes.append(f"time sweep: one run of {plan.time_epochs:g} epochs at {plan.time_size} {task.spec.unit}, "
                     f"evaluated after every epoch{f' and every {plan.eval_steps} steps' if plan.eval_steps else ''}; "
                     "seconds exclude evaluation; the learning rate decays over the whole run")
    notes.append(f"sweep cost: {cost['runs']} training runs, {cost['train_seconds']:,.0f} s training + "
                 f"{cost['eval_seconds']:,.0f} s evaluation{money} (backend {backend})")
    return notes


def build_result(out: Path, store, plan, cfg, task, *, ran: int, reused: int, wall_seconds: float,
                 price_per_hour: float | None, target: float | None, forecast_sizes, validate: bool,
                 drop: float, backend: str) -> BudgetResult:
    """Summarise the store's points for ``plan`` and write ``report.html``, ``plots/``, ``summary.json``."""
    from tunewise.outputs import write_json
    from tunewise.report import write_report

    primary = cfg.eval.primary
    data, time = planned_points(store.points(), plan)
    before = (data or time)[0].metric_before if (data or time) else None
    data_summary, time_summary = summarize_points(data, "data"), summarize_points(time, "time")
    higher = (data or time)[0].higher_is_better if (data or time) else task.spec.higher_is_better(primary)
    # k-fold sweeps run fold s as seed s (tunewise.folds): the resampled repetitions are folds
    stability = knee_stability(data, drop, seed=cfg.seed, unit_name="folds" if getattr(cfg.eval, "folds", None) else None)
    warnings = list(plan.warnings)
    fc, val, tgt = _forecast_parts(data, forecast_sizes=forecast_sizes, validate=validate, target=target,
                                   warnings=warnings)
    rec = recommend(data_summary, time_summary, price_per_hour, metric_name=primary, drop=drop,
                    knee_stability=stability if data_summary and max(r.mean_rel_improvement for r in data_summary) > 0
                    else None, forecast=fc, unit=task.spec.unit)
    cost = sweep_cost(data, time, price_per_hour)
    notes = _notes(cfg, task, plan, before, cost, backend) + [f"warning: {w}" for w in warnings]
    if any(p.metric_before_equal_labels is not None for p in data + time):
        notes.insert(2, "classifier baselines: 'before' is the frozen-feature probe fitted on all training items "
                        "(do labels beat features?); each point is also compared with the probe fitted on its own "
                        "subset (is fine-tuning worth it at this budget?)")
    write_report(out, data_summary=data_summary, time_summary=time_summary, recommendation=rec, forecast=fc,
                 validation=val, target=tgt, metric_name=primary, drop=drop,
                 title=f"tunewise budget report: {cfg.task}, {primary}", notes=notes, knee_stability=stability)
    result = BudgetResult(out, primary, before, data + time, data_summary, time_summary, rec, fc, val, tgt,
                          cost, warnings, ran, reused, wall_seconds, backend, higher, stability)
    write_json(out / "summary.json", summary_dict(result, drop))
    return result


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def summary_dict(result: BudgetResult, drop: float = 0.70) -> dict[str, Any]:
    """The numbers of the report as JSON (``summary.json``)."""
    fc = result.forecast
    data_knee, time_knee = result.recommendation.data_knee, result.recommendation.time_knee  # as advised
    out = {
        "metric": result.metric,
        "metric_before": result.metric_before,
        "higher_is_better": result.higher_is_better,
        # What the improvements compare with: classifiers add the probe fitted at each point's size.
        "baselines": (["probe on all training items (metric_before)", "probe on the same labeled items "
                       "(mean_metric_before_equal_labels)"] if result.equal_labels else ["pre-trained model (metric_before)"]),
        "recommendation": dataclasses.asdict(result.recommendation),
        "knee_drop": drop,
        "data_knee_items": result.data_summary[data_knee].size if data_knee is not None else None,
        "data_knee_stability": None if result.knee_stability is None else dataclasses.asdict(result.knee_stability),
        "time_knee_epoch": result.time_summary[time_knee].epoch if time_knee is not None else None,
        "data": [dataclasses.asdict(r) for r in result.data_summary],
        "time": [dataclasses.asdict(r) for r in result.time_summary],
        "forecast": None if fc is None else {
            "form": fc.form, "formula": fc.formula, "params": fc.params, "cv_rmse": fc.cv_rmse,
            "weights": fc.weights, "level": fc.level, "sizes": fc.sizes, "mean": fc.mean, "low": fc.low,
            "high": fc.high, "warnings": fc.warnings},
        "validation": None if result.validation is None else dataclasses.asdict(result.validation),
        "target": None if result.target is None else dataclasses.asdict(result.target),
        "cost": result.cost,
        "warnings": result.warnings,
        "backend": result.backend,
    }
    return _clean(out)
