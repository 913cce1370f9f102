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
from tunewise.files import write_text


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
    adaptive: dict[str, Any] | None = None  # --adaptive: whether it stopped early, why, what it skipped
    interim: bool = False  # written after a point while the sweep still runs (no plots, no validation)
    size_intervals: list[dict[str, Any]] = field(default_factory=list)  # each size's paired bootstrap (budget.intervals)

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


def sweep_cost(data: list[BudgetPoint], time: list[BudgetPoint], price_per_hour: float | None,
               n_available: int | None = None) -> dict[str, Any]:
    """Training and evaluation seconds the sweep spent (the time run counted once), and that as a
    multiple of one full run (:func:`~tunewise.budget.adaptive.full_run_cost`) when ``n_available`` is given.

    A data point taken from the time run (``from_time_curve``) is the time run's last evaluation:
    its seconds are counted with the time run, not twice.
    """
    from tunewise.budget.adaptive import cost_multiple, full_run_cost

    shared = [p for p in data if p.extra.get("from_time_curve")]
    own = [p for p in data if not p.extra.get("from_time_curve")]
    train = sum(p.train_seconds for p in own)
    runs: dict[int, float] = {}
    for p in time:
        runs[p.seed] = max(runs.get(p.seed, 0.0), p.train_seconds)
    train += sum(runs.values())
    # Classifiers also score the probe fitted on each point's subset: evaluation time too.
    probes = {(p.kind, p.size, p.seed): p.extra.get("probe_eval_seconds", 0.0) or 0.0 for p in [*own, *time]}
    evaluation = sum(p.eval_seconds for p in [*own, *time]) + sum(probes.values())
    cost = {"train_seconds": round(train, 2), "eval_seconds": round(evaluation, 2), "runs": len(own) + len(runs)}
    if shared:
        cost["data_points_from_time_run"] = len(shared)
    if n_available is not None:
        full, how = full_run_cost(data, n_available)
        multiple = cost_multiple(train + evaluation, full)
        cost.update(full_run_seconds=None if full is None else round(full, 2), full_run=how,
                    full_run_multiple=None if multiple is None else round(multiple, 2))
    if price_per_hour is not None:
        cost["price_per_hour"] = price_per_hour
        cost["money"] = round((train + evaluation) / 3600 * price_per_hour, 4)
    return cost


def _forecast_parts(data: list[BudgetPoint], *, forecast_sizes, validate: bool, target, warnings: list[str],
                    n_boot: int | None = None):
    sizes = sorted({p.size for p in data})  # a lower-is-better metric: the forecast reads the points' direction
    if len(sizes) < 3:
        warnings.append(f"no forecast: it needs at least 3 grid sizes with finished points, got {len(sizes)}")
        return None, None, None
    fc = val = tgt = None
    try:
        fc = forecast(data, sorted({*sizes, *map(int, forecast_sizes)}) if forecast_sizes else None,
                      **({} if n_boot is None else {"n_boot": n_boot}))
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
    if (line := cost_line(cost)) is not None:
        notes.append(line)
    return notes


def cost_line(cost: dict[str, Any]) -> str | None:
    """``sweep cost = 2.4x one full run (...)``: the sweep against one fit of the config at the full size."""
    if cost.get("full_run_multiple") is None:
        return None
    return (f"sweep cost = {cost['full_run_multiple']:.1f}x one full run ({cost['full_run_seconds']:,.0f} s training "
            f"+ evaluation, {cost['full_run']}; model loading and the report are not counted)")


INTERIM_BOOT = 50  # bootstrap fits of the forecast in a report written while the sweep runs (final: 200)


def build_result(out: Path, store, plan, cfg, task, *, ran: int, reused: int, wall_seconds: float,
                 price_per_hour: float | None, target: float | None, forecast_sizes, validate: bool,
                 drop: float, backend: str, interim: bool = False, n_available: int | None = None,
                 adaptive: dict[str, Any] | None = None) -> BudgetResult:
    """Summarise the store's points for ``plan`` and write ``report.html``, ``plots/``, ``summary.json``, ``summary.md``.

    With ``interim`` (after each point while the sweep runs) the report is the cheap part only:
    tables, recommendation and a forecast with :data:`INTERIM_BOOT` bootstrap fits; no plots and
    no forecast validation (measured: those are most of a report's seconds, see
    ``benchmarks/results/budget_cost.md``). Every file is replaced atomically.
    """
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
    fc, val, tgt = _forecast_parts(data, forecast_sizes=forecast_sizes, validate=validate and not interim,
                                   target=target, warnings=warnings, n_boot=INTERIM_BOOT if interim else None)
    rec = recommend(data_summary, time_summary, price_per_hour, metric_name=primary, drop=drop,
                    knee_stability=stability if data_summary and max(r.mean_rel_improvement for r in data_summary) > 0
                    else None, forecast=fc, unit=task.spec.unit)
    cost = sweep_cost(data, time, price_per_hour, n_available if n_available is not None else
                      (plan.sizes[-1] if plan.sizes else None))
    notes = _notes(cfg, task, plan, before, cost, backend) + [f"warning: {w}" for w in warnings]
    if adaptive is not None:
        notes.insert(0, adaptive_line(adaptive))
    if interim:
        notes.insert(0, f"interim report: the sweep is still running ({len(data) + len(time)} points so far); plots and "
                        "the forecast check are drawn when it finishes")
    if any(p.metric_before_equal_labels is not None for p in data + time):
        notes.insert(2, "classifier baselines: 'before' is the frozen-feature probe fitted on all training items "
                        "(do labels beat features?); each point is also compared with the probe fitted on its own "
                        "subset (is fine-tuning worth it at this budget?)")
    from tunewise.budget.intervals import interval_lines, load_before_items, size_intervals

    gains = [] if getattr(cfg.eval, "folds", None) else size_intervals(
        data, load_before_items(out, primary), confidence=cfg.eval.confidence,
        resamples=min(cfg.eval.resamples, 500) if interim else cfg.eval.resamples, seed=cfg.seed)
    if gains:
        notes.append(f"each size's gain against the pre-trained model, paired over the {gains[0]['n']} evaluation items "
                     "(seeds averaged; the interval is evaluation-set noise, the seed spread is the other half): "
                     + "; ".join(interval_lines(gains, primary)))
    write_report(out, data_summary=data_summary, time_summary=time_summary, recommendation=rec, forecast=fc,
                 validation=val, target=tgt, metric_name=primary, drop=drop,
                 title=f"tunewise budget report: {cfg.task}, {primary}", notes=notes, knee_stability=stability,
                 plots=not interim)
    result = BudgetResult(out, primary, before, data + time, data_summary, time_summary, rec, fc, val, tgt,
                          cost, warnings, ran, reused, wall_seconds, backend, higher, stability, adaptive, interim,
                          size_intervals=gains)
    write_json(out / "summary.json", summary_dict(result, drop))
    write_text(out / "summary.md", summary_markdown(result, notes))
    return result


def adaptive_line(adaptive: dict[str, Any]) -> str:
    """What ``--adaptive`` did, in one sentence."""
    if not adaptive.get("stopped"):
        return f"adaptive: ran every planned point ({adaptive.get('reason')})"
    skipped = adaptive.get("skipped") or []
    return (f"adaptive: stopped after {adaptive.get('seeds')} seeds because the {adaptive.get('reason')}; skipped "
            f"{len(skipped)} runs ({'; '.join(skipped) or 'none'})")


def summary_markdown(result: BudgetResult, notes: list[str]) -> str:
    """``summary.md``: the recommendation, the data table and the cost, for a README or a pull request."""
    from tunewise.budget.advice import gain_text

    lines = [f"# Budget sweep: {result.metric}", "", result.recommendation.text, ""]
    if result.data_summary:
        lines += ["| items | seeds | mean | improvement | train s |", "|---:|---:|---:|---:|---:|"]
        lines += [f"| {r.size} | {r.n} | {r.mean_metric:.4f} | {gain_text(r.mean_rel_improvement, r.absolute)} | "
                  f"{r.mean_seconds:.1f} |" for r in result.data_summary]
        lines.append("")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def point_line(label: str, kind: str, size: int, seed: int, result: BudgetResult, finished: int, total: int) -> str:
    """The console line after a point: what it scored and the sweep's answer so far."""
    from tunewise.budget.advice import gain_text

    pts = [p for p in result.points if p.size == size and p.seed == seed and p.kind == kind]
    last = pts[-1] if pts else None
    scored = " (answer as of an earlier point)" if last is None else (
        f": {result.metric} {last.metric_after:.4f} ({gain_text(last.relative_improvement, result.metric_before == 0)})")
    rec = result.recommendation
    answer = "no answer yet" if rec.items is None else (
        f"about {rec.items} items" + ("" if rec.data_knee is not None else " (no knee yet: more data still pays)")
        + (f", {rec.epochs:g} epochs" if rec.epochs is not None else ""))
    fc = result.forecast
    if fc is not None and result.data_summary:
        size = result.data_summary[-1].size
        if size in fc.sizes:
            i = fc.sizes.index(size)
            answer += f"; forecast at {size}: {fc.mean[i]:.3f} [{fc.low[i]:.3f}, {fc.high[i]:.3f}]"
    multiple = result.cost.get("full_run_multiple")
    cost = "" if multiple is None else f"; cost so far {multiple:.1f}x one full run"
    return f"[{finished}/{total}] {label}{scored} | now: {answer}{cost}"


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
        "data_intervals": result.size_intervals,
        "time": [dataclasses.asdict(r) for r in result.time_summary],
        "forecast": None if fc is None else {
            "form": fc.form, "formula": fc.formula, "params": fc.params, "cv_rmse": fc.cv_rmse,
            "weights": fc.weights, "level": fc.level, "sizes": fc.sizes, "mean": fc.mean, "low": fc.low,
            "high": fc.high, "warnings": fc.warnings},
        "validation": None if result.validation is None else dataclasses.asdict(result.validation),
        "target": None if result.target is None else dataclasses.asdict(result.target),
        "cost": result.cost,
        "adaptive": result.adaptive,
        "interim": result.interim,
        "warnings": result.warnings,
        "backend": result.backend,
    }
    return _clean(out)
