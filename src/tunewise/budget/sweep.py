"""The budget sweep: fine-tune at several data sizes and along one long run, then report.

:func:`run_budget` is what ``tunewise budget`` calls. It talks to tasks and strategies only
through their registries, as :func:`tunewise.run.fit` does:

1. prepare the data ONCE (every point is scored on the same evaluation set);
2. evaluate the pre-trained model ONCE: the "before" of every relative improvement;
3. **data sweep**: for each seed, nested subsets (:func:`~tunewise.budget.grid.nested_subsets`)
   at every grid size; each (size, seed) point loads a fresh pre-trained model, applies the
   strategy, trains on ``task.subset(data, indices)`` and is evaluated;
4. **time sweep**: one run at one size, evaluated after every epoch (and every K steps) by
   :class:`~tunewise.budget.timecurve.TimeCurveCallback`;
5. every finished point goes to the :class:`~tunewise.budget.store.ResultStore` at once, so a
   killed sweep resumes where it stopped; then the report is written
   (:mod:`tunewise.budget.results`).

Points run on a backend (:mod:`tunewise.budget.backends`): in this process, or as Ray tasks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from tunewise.budget.advice import check_price_per_hour
from tunewise.budget.grid import MIN_POINTS
from tunewise.budget.intervals import point_items
from tunewise.budget.plan import PointJob, SweepPlan, knee_time_size, plan_jobs, plan_sweep, time_jobs
from tunewise.budget.roi import BudgetPoint, check_knee_drop
from tunewise.budget.store import ResultStore, config_fingerprint
from tunewise.budget.timecurve import CurvePoint, TimeCurveCallback
from tunewise.config import RunConfig
from tunewise.errors import TunewiseError

INTERIM_SHARE = 0.2  # at most this share of a sweep's time goes to the reports written while it runs
Progress = Callable[[int, int, str], None]  # (finished jobs, total jobs, what runs now)


def point_config(cfg: RunConfig, seed: int, epochs: float | None = None) -> RunConfig:
    """The config one point trains with: its own training seed (data split unchanged)."""
    train = dataclasses.replace(cfg.train, epochs=epochs) if epochs is not None else cfg.train
    return dataclasses.replace(cfg, seed=cfg.seed + seed, train=train)


_PRETRAINED: dict[tuple, Any] = {}


def _pretrained(task: Any, cfg: RunConfig, device: str, strategy: Any) -> Any:
    """A fresh pre-trained model for one point.

    A strategy that never changes the pre-trained weights (``head``) reuses the pre-trained
    model: it is then loaded once per process and each point gets a fresh model from it.
    """
    from tunewise.strategies.base import reuses_pretrained

    if not reuses_pretrained(strategy):
        return task.load_model(cfg, device)
    key = (cfg.task, cfg.model, device)
    if key not in _PRETRAINED:
        _PRETRAINED.clear()  # one model at a time
        _PRETRAINED[key] = task.load_model(cfg, device)
    return strategy.reuse_pretrained(_PRETRAINED[key], task, cfg)


def equal_labels_probe(task: Any, model: Any, subset: Any, cfg: RunConfig) -> tuple[float, float | None, float]:
    """A classifier's transfer-learning baseline at this point's labeled size, and where fine-tuning starts.

    The sweep's "before" of a classifier (:class:`~tunewise.tasks.base.HasBaseline`) is the
    frozen-feature probe fitted on *all* training items: small budgets then show as losses even
    where they beat a probe given the same labels. So each point also scores the probe fitted
    on its own subset (``metric_before_equal_labels``). As in ``fit``, fine-tuning starts from
    that probe (``classify.init_head``); with ``init_head`` off the task puts the old head back.

    Returns:
        ``(fit_seconds, score, eval_seconds)``: the probe's fit counts as training time when
        fine-tuning starts from it (it is part of what the budget costs); the score is None and
        the seconds 0 for tasks without a baseline.
    """
    from tunewise.tasks.base import HasBaseline, HasInitHead

    if not isinstance(task, HasBaseline):
        if isinstance(task, HasInitHead) and cfg.classify.init_head:
            return task.init_head(model, subset, cfg), None, 0.0
        return 0.0, None, 0.0
    primary = cfg.eval.primary
    if isinstance(task, HasInitHead) and cfg.classify.init_head:
        fit_seconds = task.init_head(model, subset, cfg)
        result = task.evaluate(model, subset, cfg)
        return fit_seconds, float(result.metrics[primary]), float(result.seconds)
    result = task.baseline(model, subset, cfg)  # fits, scores, and restores the head (init_head off)
    return 0.0, float(result.metrics[primary]), float(result.seconds)


_POINT_ROOT: list[Path] = []  # run_budget's <budget folder>/.points while an in-process backend runs its jobs
# A data point expected to train for less than this is not checkpointed (with the default
# checkpoint_every: epoch): a kill then loses at most this, while a checkpoint of a full MiniLM
# costs ~0.75 s of a 2-core CPU (weights, optimizer, RNG), as long as a small point's training.
POINT_CHECKPOINT_SECONDS = 120.0
_POINT_PACE: dict[str, float] = {}  # training seconds per item-epoch of the sweep's last data point, by .points folder


def point_name(job: PointJob) -> str:
    return f"{job.kind}-{job.size}-seed{job.seed}"


@contextlib.contextmanager
def point_folder(job: PointJob, cfg: RunConfig):
    """Where a point trains: ``(folder, earlier)``.

    A data point of a sweep run in this process trains in ``<budget folder>/.points/<point>``, a
    work folder (:mod:`tunewise.checkpoints`) that the Trainer checkpoints into as
    ``train.checkpoint_every`` says; a sweep killed mid-point continues that point from its last
    checkpoint on the next run (``earlier``: that checkpoint, for the seconds it already trained)
    and the folder goes once the point is stored. Time curves (they evaluate as they train), Ray
    workers, ``checkpoint_every: off`` and, with ``checkpoint_every: epoch``, a point that the
    sweep's last point says will train for under :data:`POINT_CHECKPOINT_SECONDS` train in a
    temporary folder.
    """
    from tunewise.checkpoints import RUN_FILE, is_work_folder, latest_checkpoint, parse_every

    every = parse_every(cfg.train.checkpoint_every).unit
    folder = _POINT_ROOT[-1] / point_name(job) if _POINT_ROOT else None
    started = folder is not None and is_work_folder(folder)  # a killed run of this point left checkpoints
    if folder is None or job.kind != "data" or every == "off" or (
            every == "epoch" and not started and _expected_seconds(job, cfg) < POINT_CHECKPOINT_SECONDS):
        with tempfile.TemporaryDirectory(prefix="tunewise-budget-") as tmp:
            yield tmp, None
        return
    earlier = None
    if started:
        point = latest_checkpoint(folder)
        earlier = point if point.checkpoint is not None else None
    else:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        from tunewise.files import write_json

        write_json(folder / RUN_FILE, {"budget_point": job.label})
    yield str(folder), earlier


def _expected_seconds(job: PointJob, cfg: RunConfig) -> float:
    """Training seconds of ``job`` at the pace of the sweep's last data point (inf before the first)."""
    pace = _POINT_PACE.get(str(_POINT_ROOT[-1])) if _POINT_ROOT else None
    return math.inf if pace is None else pace * job.size * float(cfg.train.epochs)


def run_job(task: Any, data: Any, cfg: RunConfig, job: PointJob, *, metric_before: float, device: str,
            emit: Callable[[BudgetPoint], None]) -> None:
    """Train one job from a fresh pre-trained model and ``emit`` each finished point.

    Follows :func:`tunewise.run.fit`: strategy ``prepare``, then
    :func:`tunewise.run.train_with_strategy` (the strategy's own training, or the task's with
    the strategy's param groups and callbacks).
    """
    from tunewise.run import no_weight_bars, train_with_strategy
    from tunewise.strategies import resolve_strategy
    from tunewise.strategies.base import eval_model

    primary = cfg.eval.primary
    higher = task.spec.higher_is_better(primary)
    run_cfg = point_config(cfg, job.seed, job.epochs if job.kind == "time" else None)
    strategy, options = resolve_strategy(run_cfg)
    subset = task.subset(data, list(job.indices))
    with no_weight_bars():  # one weight-loading bar per point would bury the sweep's own progress
        model = _pretrained(task, run_cfg, device, strategy)
    probe_seconds, equal, probe_eval = equal_labels_probe(task, model, subset, run_cfg)
    with no_weight_bars():  # qlora re-loads the weights in 4-bit
        model = strategy.prepare(model, task, options, run_cfg)
    base = {"strategy": run_cfg.strategy_name, "device": device,
            **({"probe_eval_seconds": round(probe_eval, 3)} if equal is not None else {})}
    same = {"higher_is_better": higher, "metric_before_equal_labels": equal}
    with point_folder(job, run_cfg) as (workdir, earlier):
        if job.kind == "time":
            def on_curve(cp: CurvePoint) -> None:
                if cp.final and job.data_point:  # before the time point: a run killed in between runs again
                    emit(BudgetPoint(job.size, job.seed, metric_before, cp.metric, cp.train_seconds + probe_seconds,
                                     cp.eval_seconds, **same, extra={**base, "steps": cp.step, "epochs": cp.epoch,
                                                                     "from_time_curve": True, "metrics": cp.metrics}))
                emit(BudgetPoint(job.size, job.seed, metric_before, cp.metric, cp.train_seconds + probe_seconds, cp.eval_seconds,
                                 epoch=cp.epoch, kind="time", **same,
                                 extra={**base, "step": cp.step, "final": cp.final, "run_epochs": job.epochs,
                                        "metrics": cp.metrics}))

            curve = TimeCurveCallback(task, eval_model(strategy, model, task, options, run_cfg), subset, run_cfg,
                                      eval_steps=job.eval_steps, on_point=on_curve)
            curve.start()
            train_with_strategy(strategy, options, task, model, subset, run_cfg,
                                workdir=Path(workdir), callbacks=[curve])
            return
        stats, _ = train_with_strategy(strategy, options, task, model, subset, run_cfg,
                                       workdir=Path(workdir), callbacks=None)
        if earlier is not None:  # a killed point continued from its checkpoint: its earlier training counts
            stats.seconds += earlier.train_seconds
            base["resumed_from_step"] = earlier.step
        if _POINT_ROOT and stats.epochs:
            _POINT_PACE[str(_POINT_ROOT[-1])] = float(stats.seconds) / (job.size * float(stats.epochs))
    after = task.evaluate(eval_model(strategy, model, task, options, run_cfg), subset, run_cfg)
    emit(BudgetPoint(job.size, job.seed, metric_before, float(after.metrics[primary]), float(stats.seconds) + probe_seconds,
                     float(after.seconds), **same, extra={**base, "steps": stats.steps, "epochs": stats.epochs,
                                                  "samples_per_second": round(stats.samples_per_second, 3),
                                                  "metrics": after.metrics,
                                                  # per-item scores: each size's paired interval (budget.intervals)
                                                  **({"items": items} if (items := point_items(getattr(after, "items", None),
                                                                                              primary, after.metrics[primary]))
                                                     else {}),
                                                  # what the data levers did and cost (tunewise.budget.levers prices it)
                                                  **({"levers": stats.details["levers"]} if stats.details.get("levers") else {})}))
    if _POINT_ROOT:  # the point is stored: its checkpoints go
        shutil.rmtree(_POINT_ROOT[-1] / point_name(job), ignore_errors=True)


def _check_options(*, price_per_hour, target, drop, bounded: bool = True) -> None:
    """Options that need neither the data nor the grid: checked before anything is read.

    ``bounded``: the primary metric is a score in [0, 1] (higher is better); a lower-is-better
    metric (WER, loss, perplexity) may exceed 1, and the forecast checks its upper end later.
    """
    check_price_per_hour(price_per_hour)
    number = isinstance(target, (int, float)) and not isinstance(target, bool)
    if target is not None and not (number and 0 <= target and (target <= 1 or not bounded)):
        hint = f" (for {target:g}% write {target / 100:g})" if number and 1 < target <= 100 else ""
        allowed = "in [0, 1]" if bounded else "of 0 or more"
        raise TunewiseError(f"--target: must be a metric value {allowed}; got {target}{hint}")
    check_knee_drop(drop)


def _bounded(cfg: RunConfig) -> bool:
    """Whether the run's primary metric is a higher-is-better score in [0, 1] (unknown: assume so)."""
    from tunewise.tasks import TASKS

    try:
        return bool(TASKS.get(cfg.task).spec.higher_is_better(cfg.eval.primary))
    except TunewiseError:  # an unknown task or metric fails in check_config, with its own message
        return True


def _check_report_options(plan: SweepPlan, *, target, forecast_sizes, validate) -> None:
    """Fail before any training when the report cannot do what was asked of the grid."""
    wants = [name for name, on in (("--target", target is not None), ("--forecast-sizes", bool(forecast_sizes)),
                                   ("--validate", validate)) if on]
    if wants and len(plan.sizes) < MIN_POINTS:
        raise TunewiseError(f"--sizes: {wants[0]} needs a forecast, which needs at least {MIN_POINTS} grid sizes; "
                            f"got {len(plan.sizes)} ({', '.join(map(str, plan.sizes))}). Add sizes, e.g. "
                            "--sizes 25,50,100,200")
    if forecast_sizes:
        limit = 10 * plan.sizes[-1]
        if bad := [s for s in forecast_sizes if not 1 <= int(s) <= limit]:
            raise TunewiseError(f"--forecast-sizes: {bad} outside 1..{limit} (10x the largest grid size, "
                                f"{plan.sizes[-1]}); measure larger sizes to forecast further")
    if validate:
        small = [s for s in plan.sizes if s <= plan.sizes[-1] / 4]
        if len(small) < MIN_POINTS:
            raise TunewiseError(f"--validate: fits only on sizes up to a quarter of the largest ({plan.sizes[-1]} / 4)"
                                f" and needs {MIN_POINTS} of them; the grid has {len(small)}. Add small sizes, "
                                f"e.g. --sizes {','.join(str(max(1, plan.sizes[-1] // d)) for d in (16, 8, 4))},"
                                f"{plan.sizes[-1]}")


def run_budget(
    config: RunConfig | str | Path | dict | None = None,
    *,
    sizes: list[int] | None = None,
    seeds: int = 3,
    time_size: int | str | None = None,
    epochs: float | None = None,
    eval_steps: int | None = None,
    time_sweep: bool = True,
    backend: str | Any = "local",
    ray_address: str | None = None,
    price_per_hour: float | None = None,
    target: float | None = None,
    forecast_sizes: list[int] | None = None,
    validate: bool = False,
    drop: float = 0.70,
    output_dir: str | Path | None = None,
    fresh: bool = False,
    overrides: list[str] | None = None,
    console: Console | None = None,
    progress: Progress | None = None,
    largest_seeds: int | None = None,
    time_from_largest: bool = False,
    adaptive: bool = False,
    stop_width: float | None = None,
    interim_reports: bool = True,
):
    """Measure what labeled data and training time buy, and write the budget report.

    Args:
        config: anything :func:`tunewise.fit` accepts (RunConfig, YAML path, dict).
        sizes: data-sweep grid (default: geometric from about 25 items to all available);
            sizes above the data are capped with a warning.
        seeds: repeats per size (nested subsets and training seed differ per seed).
        time_size: items of the time sweep: a number, ``"largest"`` (the largest grid size), or
            ``"knee"`` (default; the largest with ``time_from_largest``): the size the data sweep
            recommends, timed once the data points are in, so the advised epochs and seconds are
            measured at the advised size.
        epochs: length of the time-sweep run (default: twice ``train.epochs``).
        eval_steps: also evaluate the time sweep every this many steps.
        time_sweep: False skips the time sweep.
        backend: "local" (sequential, this process), "ray", or a backend object.
        ray_address: Ray cluster address (default: an already initialised Ray, else a local one).
        price_per_hour: machine price; money is shown next to seconds.
        target: metric value to reach; the report says how many labels the curve needs.
        forecast_sizes: sizes to forecast (default: measured, 2x, 4x and 8x the largest).
        validate: also fit the curve on sizes up to a quarter of the largest and check it there.
        drop: ROI drop from the peak that defines the knee (0.70 = 70%).
        output_dir: the budget folder (default: ``<config output_dir>-budget``).
        fresh: start the result store over (the old file is kept beside it).
        overrides: dotted ``key=value`` strings applied on top of a YAML config.
        console: where messages go.
        progress: called as ``progress(finished_jobs, total_jobs, description)``.
        largest_seeds: seeds at the largest size when it is all the data (its seeds then train
            on the same items; None: ``seeds``).
        time_from_largest: the time curve is the largest size's seed-0 data run (``train.epochs``,
            evaluated every epoch and every ``eval_steps``) instead of a separate, longer run.
        adaptive: after each seed, stop the data sweep once the knee is confirmed or the forecast
            is sharp enough (:func:`~tunewise.budget.adaptive.adaptive_stop`); the report says what
            was skipped and why.
        stop_width: with ``adaptive``: also stop once the forecast interval at the largest size is
            at most this wide (metric units, e.g. 0.02).
        interim_reports: rewrite the report (text, tables, forecast; no plots) after every point
            and print the current answer, so a stopped or killed sweep leaves a valid report.

    Returns:
        :class:`~tunewise.budget.results.BudgetResult`.

    Raises:
        TunewiseError: bad input or options, a store from a different config, Ray missing.
    """
    from tunewise.budget.backends import get_backend
    from tunewise.budget.results import build_result
    from tunewise.models.loading import pick_device
    from tunewise.run import as_config, check_config, evaluate_before, no_weight_bars, quiet_libraries

    wall = time.perf_counter()
    from tunewise.tracking import log_sweep, sweep_trackers

    cfg, trackers = sweep_trackers(as_config(config, overrides))  # points report to nothing; the sweep is logged at the end
    console = console or Console(stderr=True)
    runner = get_backend(backend, address=ray_address)  # Ray missing fails before any work
    _check_options(price_per_hour=price_per_hour, target=target, drop=drop, bounded=_bounded(cfg))
    from tunewise.budget.adaptive import check_stop_width

    check_stop_width(stop_width)
    if stop_width is not None and not adaptive:
        raise TunewiseError("--stop-width: only used with --adaptive; add --adaptive or drop --stop-width")
    out = Path(output_dir if output_dir is not None else f"{str(cfg.output_dir).rstrip('/')}-budget").expanduser()
    if out.exists() and not out.is_dir():
        raise TunewiseError(f"--output-dir: {out} is a file; choose a folder path")
    from tunewise.outputs import check_output_dir

    check_output_dir(out, overwrite=True)  # a folder that cannot be written fails before any work
    quiet_libraries()
    task, strategy, options = check_config(cfg)  # as fit: bad task or strategy options fail before data is read
    splits = None
    if cfg.eval.folds:  # k-fold: folds replace seeds, so evaluation-set variance enters the error bars (tunewise.folds)
        from tunewise.folds import budget_folds

        splits, seeds = budget_folds(task, cfg, runner), cfg.eval.folds
        data, n = splits.folds[0], min(task.n_train(d) for d in splits.folds)
    else:
        data = task.prepare_data(cfg)
        n = task.n_train(data)
    plan = plan_sweep(n, cfg, sizes=sizes, seeds=seeds, time_size=time_size, epochs=epochs,
                      eval_steps=eval_steps, time_sweep=time_sweep, largest_seeds=largest_seeds,
                      time_from_largest=time_from_largest)
    _check_report_options(plan, target=target, forecast_sizes=forecast_sizes, validate=validate)
    if splits is not None:
        from tunewise.folds import check_fold_grid

        check_fold_grid(plan.sizes, cfg.eval.folds)
    for w in plan.warnings:
        console.print(f"[yellow]warning:[/] {w}")

    resolved = {k: v for k, v in cfg.to_dict().items() if k not in ("output_dir", "overwrite")}
    fp_input = {"config": resolved, "sweep": plan.fingerprint_part(), "n_train": n}
    store = ResultStore(out / "results.jsonl", config_fingerprint(fp_input), config=fp_input, fresh=fresh)
    if fresh:  # starting over: an interrupted point's checkpoints start over too
        shutil.rmtree(out / ".points", ignore_errors=True)
    if store.torn_lines:
        console.print("[yellow]note:[/] the last point of the interrupted sweep was half-written; it runs again")
    jobs, reused = plan_jobs(plan, n, cfg, store)
    device = pick_device(cfg.train.device)
    primary = cfg.eval.primary

    previous = [p for p in store.points()]
    if previous:  # same config, same evaluation set: the stored "before" is this one
        before = previous[0].metric_before
        console.print(f"resuming {out / 'results.jsonl'}: {reused} planned points done, {len(jobs)} runs to go")
    elif jobs and splits is not None:
        console.print(f"data: {n} training {task.spec.unit} per fold; grid {plan.sizes} x {plan.seeds} folds (folds replace seeds: "
                      "each size trains on a subset of a fold's training side and is scored on its held-out side)")
        before = None
    elif jobs:
        largest = (f" ({plan.seeds_at(plan.sizes[-1])} at {plan.sizes[-1]}: all the data, the same items every seed)"
                   if plan.seeds_at(plan.sizes[-1]) != plan.seeds else "")
        where = "the recommended size (after the data sweep)" if plan.time_at_knee else f"{plan.time_size} items"
        console.print(f"data: {n} training {task.spec.unit}; grid {plan.sizes} x {plan.seeds} seeds{largest}"
                      + (f"; time curve at {where} over {plan.time_epochs:g} epochs"
                         + (" (the largest size's run)" if plan.time_from_largest else "")
                         if plan.time_size or plan.time_at_knee else ""))
        with console.status("evaluating the pre-trained model"):
            with no_weight_bars():
                model = task.load_model(cfg, device)
            result = evaluate_before(task, model, data, cfg, strategy, options)
            del model
        before = float(result.metrics[primary])
        from tunewise.budget.intervals import save_before_items

        save_before_items(out, primary, getattr(result, "items", {}).get(primary), before)  # each size's interval
        console.print(f"  before: {primary} = {before:.4f} ({result.seconds:.1f} s)")
    else:
        before = None
    if before is not None and not before > 0:
        console.print(f"  the pre-trained model scores {before:g} on {primary}: no ratio to measure, so improvements "
                      "are absolute gains in the metric")

    finished = 0
    knee_pending = plan.time_at_knee and plan.time_size is None
    total = len(jobs) + (plan.time_seeds if knee_pending else 0)  # the knee's time run is planned after the data
    if progress is not None:
        progress(0, total, jobs[0].label if jobs else "nothing to run")

    def emit(point: BudgetPoint) -> None:
        store.append(point)  # durable before anything else happens

    report_args = dict(price_per_hour=price_per_hour, target=target, forecast_sizes=forecast_sizes, validate=validate,
                       drop=drop, backend=runner.name, n_available=n)
    latest: list[Any] = []  # the last interim result: the adaptive rule reads its forecast
    report_seconds = 0.0

    def job_done(job: PointJob) -> None:
        nonlocal finished, report_seconds
        finished += 1
        # Cheap points (head) would spend more on reports than on training: an interim report is
        # skipped while reports have taken more than INTERIM_SHARE of the sweep's time so far.
        due = finished == 1 or report_seconds <= INTERIM_SHARE * (time.perf_counter() - wall) or adaptive_due(job)
        if interim_reports and finished < total and due:
            start = time.perf_counter()
            latest[:] = [build_result(out, store, plan, cfg, task, ran=finished, reused=reused, interim=True,
                                      wall_seconds=time.perf_counter() - wall, **report_args)]
            report_seconds += time.perf_counter() - start
        if interim_reports and finished < total and latest:
            console.print(point_line(job.label, job.kind, job.size, job.seed, latest[0], finished, total))
        if progress is not None:
            nxt = (jobs[finished].label if finished < len(jobs) else
                   "time curve at the recommended size" if finished < total else "writing the report")
            progress(finished, total, nxt)

    def adaptive_due(job: PointJob) -> bool:  # the stop rule reads the forecast at the end of each seed
        return adaptive and finished < len(jobs) and jobs[finished].seed != job.seed

    from tunewise.budget.adaptive import run_adaptive
    from tunewise.budget.results import point_line

    def dispatch(batch: list[PointJob]) -> None:
        if splits is not None:
            from tunewise.folds import run_fold_jobs

            run_fold_jobs(runner, batch, splits, cfg=cfg, task=task, strategy=strategy, options=options, device=device,
                          stored={p.seed: p.metric_before for p in previous}, emit=emit, job_done=job_done, console=console)
        else:
            runner.run(batch, cfg=cfg, task=task, data=data, device=device, metric_before=before,
                       emit=emit, job_done=job_done)

    decision = None
    if jobs or knee_pending:
        _POINT_ROOT.append(out / ".points")  # in-process data points checkpoint there (point_folder)
        # The data, tokenizers and libraries live all sweep long: frozen, the full collection the
        # Trainer runs after every point (accelerate's free_memory) skips them. Measured on the
        # demo's head sweep: 0.4 s per point -> 0.005 s, the whole sweep 9.2 s -> 5.4 s.
        freeze = gc.get_freeze_count() == 0  # a caller that froze objects itself keeps its own arrangement
        if freeze:
            gc.collect()
            gc.freeze()
        try:
            if jobs and adaptive and splits is None:
                decision = run_adaptive(runner, jobs, plan, store, latest, stop_width=stop_width, drop=drop,
                                         console=console, cfg=cfg, task=task, data=data, device=device,
                                         metric_before=before, emit=emit, job_done=job_done)
            elif jobs:
                dispatch(jobs)
            if knee_pending:  # --time-size knee: the data sweep has said which size to time
                points = store.points()
                plan.time_size = knee_time_size(plan, points, drop=drop, unit=task.spec.unit)
                later, time_reused = time_jobs(plan, n, cfg, points)
                reused += time_reused
                total = finished + len(later)
                if later:
                    console.print(f"time curve at {plan.time_size} {task.spec.unit}, the recommended size: "
                                  f"{plan.time_epochs:g} epochs, evaluated after every epoch")
                    jobs.extend(later)
                    dispatch(later)
        finally:
            if freeze:
                gc.unfreeze()
            _POINT_PACE.pop(str(_POINT_ROOT.pop()), None)
            _PRETRAINED.clear()
            with contextlib.suppress(OSError):  # gone when every point finished (a killed point's folder stays)
                (out / ".points").rmdir()
    result = build_result(out, store, plan, cfg, task, ran=finished, reused=reused,
                          wall_seconds=time.perf_counter() - wall,
                          adaptive=None if decision is None else decision.as_dict(), **report_args)
    log_sweep(trackers, cfg, result, console)  # train.report_to: one parent run, one child per point
    return result
