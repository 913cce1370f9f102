"""k-fold cross-validation for small data: ``fit``, ``evaluate`` and ``compare`` with ``--folds K``.

With a few hundred items, one held-out split of 50-150 queries leaves the gain at the mercy
of which items landed in it. With ``eval.folds: K`` every item is held out exactly once:
the task splits its data into K groups that keep a query and its answers, or an item, on one
side (:class:`tunewise.tasks.base.SplitsFolds`, :mod:`tunewise.data.folds`), and each fold
trains from the same pre-trained model on the other K-1 folds and is scored before and after
on its own held-out fold. The steps are :mod:`tunewise.run`'s (``check_config``,
``evaluate_before``, ``train_with_strategy``), so a fold is exactly a ``fit``.

The report: one row per fold (before, after, gain), mean and standard deviation of each
across folds, and the pooled interval: every held-out item's before/after scores, pooled
over the folds, in one paired bootstrap (:func:`tunewise.evaluate.uncertainty.metric_intervals`).

No model is saved unless ``eval.final_fit`` (``--final-fit``): then a model trained on all the
data is saved too, labelled in metrics.json and its card as *not* evaluated on held-out data.

With ``strategy: head`` the backbone is loaded once and shared by the folds, and the feature
cache computes each text's backbone output once: K folds cost little more than one run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from tunewise.config import RunConfig, dump_config
from tunewise.data.folds import OPTION, FoldSplits
from tunewise.errors import TunewiseError
from tunewise.evaluate.uncertainty import mean_interval


def fold_splits(task: Any, cfg: RunConfig, k: int | None = None) -> FoldSplits:
    """The task's K folds (``k`` default ``cfg.eval.folds``); a task that cannot fold says so.

    Raises:
        TunewiseError: the task has no fold splitting, or K does not fit the data (one line).
    """
    from tunewise.tasks.base import SplitsFolds

    k = cfg.eval.folds if k is None else k
    if not isinstance(task, SplitsFolds):
        raise TunewiseError(f"{OPTION}: task '{cfg.task}' cannot split its data into folds (it does not declare which "
                            "items must stay together); run it without --folds")
    return task.folds(cfg, k)


def _fresh_model(task: Any, cfg: RunConfig, device: str, strategy: Any, shared: dict[str, Any]) -> Any:
    """A pre-trained model for one fold: loaded per fold, or (``head``: the body never changes) loaded once and reused."""
    from tunewise.run import no_weight_bars
    from tunewise.strategies.base import reuses_pretrained

    with no_weight_bars():
        if not reuses_pretrained(strategy):
            return task.load_model(cfg, device)
        if "model" not in shared:
            shared["model"] = task.load_model(cfg, device)
        return strategy.reuse_pretrained(shared["model"], task, cfg)


def _held_out(result: Any) -> int | None:
    """How many items an evaluation scored (its per-item scores, or per-item codes)."""
    for values in [*getattr(result, "items", {}).values(), getattr(result, "codes", None) or []]:
        if values:
            return len(values)
    return None


def _directions(cfg: RunConfig, names: Any) -> dict[str, bool]:
    """metric -> whether higher is better, as the task declares it (a fall in WER is a gain)."""
    from tunewise.budget.roi import metric_direction
    from tunewise.tasks import TASKS

    spec = TASKS.get(cfg.task).spec
    return {name: metric_direction(spec, name) for name in names}


def _gain(before: float, after: float, higher_is_better: bool) -> float:
    return after - before if higher_is_better else before - after


def _mean_std(values: list[float]) -> dict[str, float | None]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None}


def _pooled(results: list[Any]) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Per-item scores of every fold, concatenated (fold order), for the metrics every fold has;
    metrics that are not item means (macro F1) pool their per-item codes with their statistic."""
    from tunewise.evaluate.uncertainty import HasItems

    if not results or not all(isinstance(r, HasItems) for r in results):
        return {}, {}
    names = [n for n in results[0].items if all(n in r.items for r in results)]
    pooled = {n: [v for r in results for v in r.items[n]] for n in names}
    statistics_: dict[str, Any] = {}
    coded = [getattr(r, "resampled", {}) for r in results]
    for name in coded[0]:
        if name not in pooled and all(name in c for c in coded):
            pooled[name] = [v for c in coded for v in c[name][0]]
            statistics_[name] = coded[0][name][1]  # same classes in every fold: one statistic
    return pooled, statistics_


def pooled_intervals(befores: list[Any], afters: list[Any], cfg: RunConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Paired bootstrap of the gain over every held-out item of every fold (each item once).

    Returns:
        (metric -> interval dict as :func:`~tunewise.evaluate.uncertainty.paired_interval`,
        metric -> {"before": items, "after": items} of the pooled scores).
    """
    from tunewise.evaluate.uncertainty import metric_intervals

    b_items, b_stats = _pooled(befores)
    a_items, _ = _pooled(afters)
    intervals = metric_intervals(b_items, a_items, statistics=b_stats, confidence=cfg.eval.confidence,
                                 resamples=cfg.eval.resamples, seed=cfg.seed, directions=_directions(cfg, b_items))
    return intervals, {n: {"before": b_items[n], "after": a_items[n]} for n in intervals}


def summarize(rows: list[dict[str, Any]], directions: dict[str, bool] | None = None) -> dict[str, dict[str, dict[str, float | None]]]:
    """metric -> {"before", "after", "gain"} -> {"mean", "std"} across folds (sample std, ddof 1).

    The gain is the improvement: a fall for a lower-is-better metric (``directions``) counts positive.
    """
    directions = directions or {}
    names = [n for n in rows[0]["before"] if all(n in r["before"] and n in r["after"] for r in rows)]
    return {n: {"before": _mean_std([r["before"][n] for r in rows]),
                "after": _mean_std([r["after"][n] for r in rows]),
                "gain": _mean_std([_gain(r["before"][n], r["after"][n], directions.get(n, True)) for r in rows])} for n in names}


def fit_folds(cfg: RunConfig, *, console: Console | None = None, callbacks: list | None = None, resume: bool = False) -> Any:
    """``fit`` with ``eval.folds``: K fits from the same pre-trained model, one report (and the
    ``--final-fit`` model when asked).

    Returns:
        A :class:`tunewise.run.RunResult` whose metrics hold ``folds`` (rows, summary, pooled).

    Raises:
        TunewiseError: bad input, before anything is written.
    """
    from tunewise.budget.roi import relative_improvement
    from tunewise.memory.measure import PeakMemory
    from tunewise.memory.runs import memory_block
    from tunewise.models.loading import pick_device, resolve_model
    from tunewise.outputs import check_output_dir, library_versions, staged_dir, write_json, write_text
    from tunewise.run import (
        RunResult,
        chance_warnings,
        check_config,
        evaluate_before,
        is_main_process,
        no_weight_bars,
        quiet_libraries,
        train_with_strategy,
    )
    from tunewise.strategies import StrategyInfo, count_params
    from tunewise.strategies.base import eval_model, interpolation_options
    from tunewise.tasks.training import precision_flags, stopping_metric

    console = console or Console(stderr=True)
    quiet_libraries()
    task, strategy, options = check_config(cfg)
    if not is_main_process():
        raise TunewiseError(f"{OPTION}: folds run in one process; launch without torchrun / accelerate launch")
    if resume:
        raise TunewiseError(f"--resume: a k-fold run starts over ({OPTION} keeps no checkpoints); drop --resume")
    if cfg.train.early_stopping_patience is not None:
        stopping_metric(cfg)  # a metric the task does not report fails before any work
    if interpolation_options(options) is not None:
        raise TunewiseError(f"strategy.interpolate: WiSE-FT blends one fine-tuned model, not {cfg.eval.folds} folds; "
                            "drop strategy.interpolate or --folds")
    out = check_output_dir(cfg.output_dir, cfg.overwrite)
    device = pick_device(cfg.train.device)
    precision_flags(cfg.train.precision, device)
    if cfg.model:
        resolve_model(cfg.model)
    k, primary = cfg.eval.folds, cfg.eval.primary
    splits = fold_splits(task, cfg)
    console.print(f"folds: {k} over {splits.grouping}; each fold trains from the pre-trained model "
                  f"and is scored on its held-out items")
    shared: dict[str, Any] = {}
    rows, befores, afters, warnings = [], [], [], []
    info, started = None, time.perf_counter()
    with PeakMemory(device) as peak:
        for n, data in enumerate(splits.folds, 1):
            console.print(f"[bold]fold {n}/{k}[/]: {task.n_train(data)} training {task.spec.unit}, "
                          + ", ".join(f"{key.replace('_', ' ')} {v}" for key, v in task.data_report(data).items()
                                      if key.startswith("eval_")))
            model = _fresh_model(task, cfg, device, strategy, shared)
            before = evaluate_before(task, model, data, cfg, strategy, options)
            with no_weight_bars():  # qlora re-loads the weights in 4-bit
                model = strategy.prepare(model, task, options, cfg)
            if info is None:
                trainable, total = count_params(task.modules(model))
                info = StrategyInfo(cfg.strategy_name, trainable, total)
            with tempfile.TemporaryDirectory(prefix="tunewise-fold-") as workdir:
                stats, _ = train_with_strategy(strategy, options, task, model, data, cfg, workdir=Path(workdir),
                                               callbacks=callbacks)
            after = task.evaluate(eval_model(strategy, model, task, options, cfg), data, cfg)
            gain = _gain(before.metrics[primary], after.metrics[primary], _directions(cfg, [primary])[primary])
            console.print(f"  {primary}: before {before.metrics[primary]:.4f}, after {after.metrics[primary]:.4f}, gain {gain:+.4f}")
            warnings += [f"fold {n}: {w}" for w in chance_warnings(task, data, cfg, after.metrics)]
            held = _held_out(after)
            rows.append({"fold": n, "train_examples": task.n_train(data), "held_out": held,
                         "before": before.metrics, "after": after.metrics, "gain": gain,
                         "relative_improvement": relative_improvement(before.metrics[primary], after.metrics[primary],
                                                                      higher_is_better=_directions(cfg, [primary])[primary]),
                         "train_seconds": round(stats.seconds, 3), "steps": stats.steps, "epochs": stats.epochs,
                         "samples_per_second": round(stats.samples_per_second, 3),
                         "eval_seconds": round(before.seconds + after.seconds, 3)})
            befores.append(before)
            afters.append(after)
            del model
    wall = time.perf_counter() - started
    directions = _directions(cfg, rows[0]["before"])
    summary = summarize(rows, directions)
    pooled, items = pooled_intervals(befores, afters, cfg)
    before_mean = {name: s["before"]["mean"] for name, s in summary.items()}
    after_mean = {name: s["after"]["mean"] for name, s in summary.items()}
    train_seconds = [r["train_seconds"] for r in rows]
    metrics: dict[str, Any] = {
        "task": cfg.task,
        "base_model": cfg.model or task.spec.default_model,
        "primary_metric": primary,
        "evaluation": f"{k}-fold cross-validation",
        "before": before_mean,  # means over the folds
        "after": after_mean,
        "relative_improvement": {name: relative_improvement(v, after_mean[name], higher_is_better=directions.get(name, True))
                                 for name, v in before_mean.items()},
        "uncertainty": pooled,  # pooled over every held-out item of every fold
        "items": {primary: items[primary]} if primary in items else {},
        "folds": {"k": k, "grouping": splits.grouping, "groups": splits.groups, "stratified": splits.stratified, "unit": task.spec.unit,
                  "rows": rows, "summary": summary, "pooled": pooled, "wall_seconds": round(wall, 3)},
        "strategy": {**info.as_dict(), "options": dict(cfg.strategy)} if info else {},
        "train": {"seconds": round(statistics.fmean(train_seconds), 3), "seconds_all_folds": round(sum(train_seconds), 3),
                  "examples": round(statistics.fmean(r["train_examples"] for r in rows), 1),
                  "steps": rows[0]["steps"], "epochs": rows[0]["epochs"],
                  "samples_per_second": round(statistics.fmean(r["samples_per_second"] for r in rows), 3), "device": device},
        "memory": memory_block(None, "not estimated for k-fold runs (the peak is measured over all folds)", peak),
        "data": {**{key: v for key, v in splits.everything.report.items() if key not in ("fold", "folds") and not key.startswith("eval_")},
                 "folds": k, "held_out_pooled": sum(r["held_out"] or 0 for r in rows)},
        "warnings": warnings,
        "model_saved": bool(cfg.eval.final_fit),
        "final_fit": None,
        "config": cfg.to_dict(),
        "versions": library_versions(),
    }
    with staged_dir(out) as staging:
        if cfg.eval.final_fit:
            metrics["final_fit"] = _final_fit(task, cfg, strategy, options, device, shared, staging, console, callbacks)
        metrics["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        report = markdown(metrics)
        write_json(staging / "metrics.json", metrics)
        write_text(staging / "config.yaml", dump_config(cfg))
        write_text(staging / "folds.md", report)
        if cfg.eval.final_fit:
            write_text(staging / "README.md", final_card(metrics, task.card_info(splits.everything), report))
    return RunResult(out, metrics)


def _final_fit(task: Any, cfg: RunConfig, strategy: Any, options: Any, device: str, shared: dict[str, Any],
               staging: Path, console: Console, callbacks: list | None) -> dict[str, Any]:
    """Train on every item and save the model into ``staging``; nothing is held out, nothing scored."""
    from tunewise.run import no_weight_bars, train_with_strategy
    from tunewise.strategies.base import strategy_save
    from tunewise.tasks.base import HasInitHead

    everything = task.folds(cfg, cfg.eval.folds).everything  # fresh task state: no fold's scores go with the model
    n = task.n_train(everything)
    console.print(f"[bold]final fit[/]: training on all {n} {task.spec.unit} (not evaluated: nothing is held out)")
    model = _fresh_model(task, cfg, device, strategy, shared)
    probe_seconds = 0.0
    if isinstance(task, HasInitHead) and cfg.classify.init_head:  # as fit: start from the linear probe on the same items
        probe_seconds = task.init_head(model, everything, cfg)
    with no_weight_bars():
        model = strategy.prepare(model, task, options, cfg)
    stats, hooks = train_with_strategy(strategy, options, task, model, everything, cfg, workdir=staging / "_checkpoints",
                                       callbacks=callbacks)
    import shutil

    shutil.rmtree(staging / "_checkpoints", ignore_errors=True)
    with no_weight_bars():
        strategy_save(strategy, model, task, staging, options, cfg)
    return {"saved": True, "evaluated_on_held_out": False,
            "note": f"trained on all {n} {task.spec.unit}; not evaluated on held-out data (none is left): the "
                    f"{cfg.eval.folds}-fold numbers estimate how this recipe does on new data",
            "train_examples": n, "seconds": round(stats.seconds + probe_seconds, 3), "steps": stats.steps,
            "epochs": stats.epochs, "samples_per_second": round(stats.samples_per_second, 3), **hooks}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _pm(stats: dict[str, float | None], signed: bool = False) -> str:
    mean = f"{stats['mean']:+.4f}" if signed else f"{stats['mean']:.4f}"
    return mean if stats.get("std") is None else f"{mean} ± {stats['std']:.4f}"


def pooled_line(metric: str, interval: dict[str, Any] | None, k: int) -> str | None:
    """One line: the pooled gain over every held-out item, its interval, relative gain and p-value."""
    from tunewise.evaluate.uncertainty import describe, p_value_line

    line = p_value_line(metric, interval)
    if line is None:
        return None
    return f"pooled over {k} folds: {line}; relative {describe(interval.get('relative'), interval)}"


def markdown(metrics: dict[str, Any]) -> str:
    """The fold report (``folds.md``): the per-fold table, mean ± std, the pooled interval."""
    folds, p = metrics["folds"], metrics["primary_metric"]
    lines = [f"# tunewise {folds['k']}-fold cross-validation", "",
             f"Task {metrics['task']}, base model `{metrics['base_model']}`, strategy `{metrics['strategy'].get('name', '')}`; "
             f"folds over {folds['grouping']}. Each fold trained from the pre-trained model on the other folds and was scored "
             "on its own held-out items, before and after.", "",
             f"| fold | training {folds.get('unit', 'items')} | held out | {p} before | {p} after | gain |", "|---:|---:|---:|---:|---:|---:|"]
    for r in folds["rows"]:
        lines.append(f"| {r['fold']} | {r['train_examples']} | {r['held_out'] or 'n/a'} | {r['before'][p]:.4f} | "
                     f"{r['after'][p]:.4f} | {r['gain']:+.4f} |")
    s = folds["summary"].get(p)
    if s:
        lines.append(f"| mean ± std | | | {_pm(s['before'])} | {_pm(s['after'])} | {_pm(s['gain'], signed=True)} |")
    if (line := pooled_line(p, folds["pooled"].get(p), folds["k"])) is not None:
        lines += ["", line + "."]
    lines += ["", "| metric | before (mean ± std) | after (mean ± std) | gain (mean ± std) |", "|---|---:|---:|---:|"]
    for name, s in folds["summary"].items():
        lines.append(f"| {name} | {_pm(s['before'])} | {_pm(s['after'])} | {_pm(s['gain'], signed=True)} |")
    final = metrics.get("final_fit")
    lines += ["", (f"**Final model:** {final['note']}." if final else
                   "No model was saved (add --final-fit to also train on all the data and save that model).")]
    for warning in metrics.get("warnings", []):
        lines += ["", f"> **Warning:** {warning}"]
    return "\n".join(lines) + "\n"


def final_card(metrics: dict[str, Any], info: dict[str, Any], report: str) -> str:
    """The model card of a ``--final-fit`` model: labelled as not evaluated on held-out data."""
    final = metrics["final_fit"]
    k = metrics["folds"]["k"]
    lines = [
        "---", f"library_name: {info['library']}", f"pipeline_tag: {info['pipeline_tag']}", "tags:", "- tunewise",
        f"- {metrics['task']}", f"- strategy-{metrics['strategy'].get('name', '')}", "- k-fold", "---", "",
        f"# Fine-tuned with tunewise on all the data ({metrics['task']}, strategy `{metrics['strategy'].get('name', '')}`)", "",
        f"> **Not evaluated on held-out data.** This model was trained on all {final['train_examples']} training examples of "
        f"`{metrics['base_model']}`'s fine-tuning data, so no item was left to score it on. The numbers below come from "
        f"{k}-fold cross-validation of the same recipe (K models, each trained on the other folds and scored on its own): "
        "they estimate how this recipe does on new data, not this model's own score.", "",
        report.split("\n", 2)[2].strip(), "",
        "## Training of this model", "",
        f"- examples: {final['train_examples']}, epochs: {final['epochs']:g}, steps: {final['steps']}, "
        f"training time: {final['seconds']:.1f} s",
        "", "## Usage", "", "```python", info["usage"].strip(), "```", "",
        "The full configuration and every number above are in `metrics.json` and `config.yaml` beside this file.", "",
    ]
    return "\n".join(lines)


def evaluate_folds(cfg: RunConfig, *, model: str | None = None, console: Console | None = None) -> dict[str, Any]:
    """``evaluate`` with ``eval.folds``: the model scored on each fold's held-out items (no training).

    Every item is scored once; the folds give the spread over evaluation sets of the size one
    split would hold out, and the interval is a bootstrap of the mean over all items.

    Returns:
        ``{"model", "metrics" (means over folds), "seconds", "examples", "data", "folds"}``.
    """
    from tunewise.models.loading import pick_device
    from tunewise.run import no_weight_bars, quiet_libraries
    from tunewise.tasks import TASKS
    from tunewise.tasks.base import LoadsTrained

    if model is not None:
        cfg.model = model
    console = console or Console(stderr=True)
    quiet_libraries()
    task = TASKS.get(cfg.task)()
    splits = fold_splits(task, cfg)
    with console.status("loading the model"), no_weight_bars():
        load = task.load_trained if isinstance(task, LoadsTrained) else task.load_model
        loaded = load(cfg, pick_device(cfg.train.device))
    rows, results, seconds = [], [], 0.0
    for n, data in enumerate(splits.folds, 1):
        result = task.evaluate(loaded, data, cfg)
        seconds += result.seconds
        rows.append({"fold": n, "held_out": {k: v for k, v in task.data_report(data).items() if k.startswith("eval_")},
                     "metrics": result.metrics})
        results.append(result)
    names = [n for n in rows[0]["metrics"] if all(n in r["metrics"] for r in rows)]
    summary = {n: _mean_std([r["metrics"][n] for r in rows]) for n in names}
    pooled_items, stats = _pooled(results)
    intervals = {n: mean_interval(v, cfg, stats.get(n)) for n, v in pooled_items.items()}
    return {"model": cfg.model or task.spec.default_model, "metrics": {n: s["mean"] for n, s in summary.items()},
            "seconds": seconds, "examples": [], "data": {"folds": cfg.eval.folds, "groups": splits.groups},
            "folds": {"k": cfg.eval.folds, "grouping": splits.grouping, "rows": rows, "summary": summary,
                      "pooled": intervals}}


# -- the budget planner with folds: folds replace seeds as the repetition unit -----------------------


def budget_folds(task: Any, cfg: RunConfig, backend: Any) -> FoldSplits:
    """The folds of a budget sweep (``budget --folds K``): repetition ``s`` of every size trains on a
    subset of fold ``s``'s training side and is scored on fold ``s``'s held-out side.

    Raises:
        TunewiseError: K does not fit the data, or a backend other than local (a Ray worker
            rebuilds one split from the config, not a fold).
    """
    if getattr(backend, "name", "local") != "local":
        raise TunewiseError(f"{OPTION}: the budget planner runs folds on the local backend only; drop --backend "
                            f"{backend.name} or --folds")
    return fold_splits(task, cfg)


def check_fold_grid(sizes: list[int], k: int) -> None:
    """With folds, every grid size is drawn from each fold's training side: the smallest must be at least K.

    Raises:
        TunewiseError: naming ``--sizes``, ``--folds`` and the numbers.
    """
    if sizes and min(sizes) < k:
        raise TunewiseError(f"--sizes: the smallest size {min(sizes)} is smaller than --folds {k}; use sizes of at least "
                            f"{k} (e.g. --sizes {','.join(str(max(s, k)) for s in sorted(set(sizes)))}) or fewer folds")


def run_fold_jobs(runner: Any, jobs: list[Any], splits: FoldSplits, *, cfg: RunConfig, task: Any, strategy: Any,
                  options: Any, device: str, stored: dict[int, float], emit: Any, job_done: Any, console: Console) -> None:
    """Run a sweep's jobs fold by fold: job seed ``s`` is fold ``s``, scored against fold ``s``'s own "before".

    Args:
        stored: fold -> the pre-trained score already in the result store (a resumed sweep).
    """
    from tunewise.run import evaluate_before, no_weight_bars

    primary, k = cfg.eval.primary, len(splits.folds)
    for fold, data in enumerate(splits.folds):
        fold_jobs = [job for job in jobs if job.seed == fold]
        if not fold_jobs:
            continue
        before = stored.get(fold)
        if before is None:
            with console.status(f"fold {fold + 1}/{k}: evaluating the pre-trained model"):
                with no_weight_bars():
                    model = task.load_model(cfg, device)
                before = float(evaluate_before(task, model, data, cfg, strategy, options).metrics[primary])
                del model
        console.print(f"fold {fold + 1}/{k}: {task.n_train(data)} training {task.spec.unit}, before {primary} = {before:.4f}")
        runner.run(fold_jobs, cfg=cfg, task=task, data=data, device=device, metric_before=before, emit=emit, job_done=job_done)
