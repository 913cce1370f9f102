"""The fine-tuning run: evaluate the pre-trained model, train, evaluate again, publish.

:func:`fit` is what ``tunewise fit`` and ``tunewise demo`` call; :func:`evaluate` is what
``tunewise evaluate`` calls. Both talk to tasks and strategies only through their registries
and capabilities.

The steps of a run are public so that the budget sweep and its Ray workers take the same ones:

| step | used by |
|---|---|
| :func:`quiet_libraries` | fit, evaluate, the sweep, a Ray worker |
| :func:`check_config` | fit, ``tunewise config`` |
| :func:`no_weight_bars` | every load of a pre-trained model |
| :func:`evaluate_before` | fit, the sweep (once per sweep; Ray workers get its number) |
| :func:`train_with_strategy` | fit, every sweep point (local or Ray) |
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from tunewise.budget.roi import metric_direction, relative_improvement
from tunewise.checkpoints import latest_checkpoint, open_work_folder, parse_every, plan_resume, remove_work_folder
from tunewise.config import RunConfig, dump_config, load_config
from tunewise.errors import TunewiseError
from tunewise.evaluate.uncertainty import HasItems, gain_intervals, p_value_line
from tunewise.flops import TokenCounter, run_flops
from tunewise.memory.measure import PeakMemory
from tunewise.memory.runs import choose_cpu_allocator, memory_block, preflight_run
from tunewise.models.loading import pick_device, resolve_model
from tunewise.outputs import check_output_dir, library_versions, model_card, staged_dir, write_json, write_text
from tunewise.precision import evaluation_precision, run_precision
from tunewise.strategies import StrategyInfo, count_params, resolve_strategy
from tunewise.strategies.base import (
    eval_model,
    interpolation_options,
    strategy_callbacks,
    strategy_param_groups,
    strategy_save,
    strategy_train,
)
from tunewise.tasks import TASKS
from tunewise.tasks.base import ChecksConfig, HasBaseline, LoadsTrained
from tunewise.tasks.divergence import Diverged
from tunewise.tasks.progress import training_console
from tunewise.tasks.training import precision_flags, stopping_metric
from tunewise.tracking import check_installed, track_fit


@dataclass
class RunResult:
    """What a run produced: the folder and the numbers written to its metrics.json."""

    output_dir: Path
    metrics: dict[str, Any]
    examples_before: list[dict[str, Any]] = field(default_factory=list)
    examples_after: list[dict[str, Any]] = field(default_factory=list)

    @property
    def before(self) -> dict[str, float]:
        return self.metrics["before"]

    @property
    def after(self) -> dict[str, float]:
        return self.metrics["after"]


def as_config(config: RunConfig | str | Path | dict | None, overrides: list[str] | None = None) -> RunConfig:
    """Accept a RunConfig, a YAML path or a dict of options (dotted keys allowed)."""
    if isinstance(config, RunConfig):
        if overrides:
            raise TunewiseError("overrides: apply them when loading the config (load_config(path, overrides))")
        return config
    if config is None or isinstance(config, dict):
        return load_config(None, overrides, values=_flatten(config or {}))
    return load_config(config, overrides)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and key != "columns" and key != "strategy":
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def quiet_libraries() -> None:
    """Silence transformers' warnings and the tokenizers fork warning (every process that trains)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()


def no_weight_bars():
    """Hide transformers' per-file "Loading weights" / "Writing model shards" bars; training bars stay."""
    from tunewise.tasks.progress import hidden_bars

    return hidden_bars("transformers")


def check_config(cfg: RunConfig) -> tuple[Any, Any, Any]:
    """Validate a loaded config exactly as ``fit`` does before any work: the task's own options,
    the strategy's options and its requirements (qlora: bitsandbytes).

    Returns:
        (task, strategy, strategy options).

    Raises:
        TunewiseError: the first problem, in one line naming the option.
    """
    task = TASKS.get(cfg.task)()
    if isinstance(task, ChecksConfig):
        task.check_config(cfg)
    strategy, options = resolve_strategy(cfg)
    check_installed(cfg.train.report_to)  # a tracker that is not installed fails before any work
    return task, strategy, options


def fit(config: RunConfig | str | Path | dict | None = None, *, overrides: list[str] | None = None,
        console: Console | None = None, callbacks: list | None = None, resume: bool = False) -> RunResult:
    """Fine-tune a model as the config says and publish it with before/after metrics.

    Args:
        config: a RunConfig, a YAML path, or a dict of options (``{"data": {"train": ...}}``).
        overrides: dotted ``key=value`` strings applied on top of a YAML config.
        console: where progress and messages go (a quiet Console silences them).
        callbacks: extra transformers TrainerCallbacks.
        resume: continue an interrupted run of this output folder from its last complete checkpoint
            (:mod:`tunewise.checkpoints`); with none, start from the beginning.

    Returns:
        The output folder and the metrics written to ``metrics.json``.

    Raises:
        TunewiseError: bad input (before anything is written).
    """
    cfg = as_config(config, overrides)
    console = console or Console(stderr=True)
    if cfg.eval.folds is not None:  # k-fold cross-validation: K fits and one report (tunewise.folds)
        from tunewise.folds import fit_folds

        return fit_folds(cfg, console=console, callbacks=callbacks, resume=resume)
    quiet_libraries()
    task, strategy, options = check_config(cfg)
    out = check_output_dir(cfg.output_dir, cfg.overwrite)
    checkpoints = plan_resume(out, cfg, resume=resume, overwrite=cfg.overwrite)  # a changed config is refused here
    if distributed() and checkpoints.enabled and parse_every(cfg.train.checkpoint_every).unit == "minutes":
        raise TunewiseError("train.checkpoint_every: every N minutes would let the ranks of a distributed run save at "
                            "different steps; use epoch or a number of steps with torchrun / accelerate launch")
    if cfg.train.early_stopping_patience is not None:
        stopping_metric(cfg)  # a metric the task does not report fails before any work
    device = pick_device(cfg.train.device)
    precision_flags(cfg.train.precision, device)  # fp16 without CUDA fails before any work
    primary = cfg.eval.primary
    if cfg.model:
        resolve_model(cfg.model)  # a wrong path fails before any data is read

    data = task.prepare_data(cfg)
    report = task.data_report(data)
    if report.get("leaked_queries"):
        action = "removed from train" if report.get("leaked_removed") else "KEPT in train (data.drop_leaked: false)"
        console.print(f"[yellow]leakage:[/] {report['leaked_queries']} training queries also appear in the evaluation set; {action}")
    if report.get("truncated"):
        console.print(f"[yellow]truncated:[/] {report['truncated']} training sequences were longer than the limit "
                      "and were cut (raise llm.max_length to keep them whole)")
    console.print(f"data: {task.n_train(data)} training {task.spec.unit}, " + ", ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in report.items() if k.startswith("eval_")))

    with console.status("loading the pre-trained model"), no_weight_bars():
        model = task.load_model(cfg, device)
    if not is_main_process():
        # torchrun / accelerate launch: other ranks only take part in (distributed) training;
        # rank 0 evaluates, saves and publishes. All ranks checkpoint into the run's work folder,
        # which rank 0 opens (ranks_meet) before anyone trains.
        model = strategy.prepare(model, task, options, cfg)
        shared = ranks_meet(checkpoints)
        with tempfile.TemporaryDirectory() as workdir:
            train_with_strategy(strategy, options, task, model, data, cfg, workdir=shared or Path(workdir), callbacks=callbacks)
        return RunResult(out, {})
    console.print("evaluating the pre-trained model")
    before = evaluate_before(task, model, data, cfg, strategy, options)
    console.print(f"  before: {primary} = {before.metrics[primary]:.4f} ({before.seconds:.1f} s)")

    with no_weight_bars():  # qlora re-loads the weights in 4-bit
        model = strategy.prepare(model, task, options, cfg)
    trainable, total = count_params(task.modules(model))
    info = StrategyInfo(cfg.strategy_name, trainable, total)
    estimate, estimate_note = preflight_run(cfg, model, device, data)  # stops here if it cannot fit
    allocator, estimate = choose_cpu_allocator(cfg, estimate, device)
    if estimate is not None:
        console.print(f"memory: estimated peak {estimate.total_bytes / 2**20:,.0f} MiB on {device}")
    precision = run_precision(cfg, device)  # what train.precision resolves to here (tunewise.precision)
    console.print(f"training ({cfg.strategy_name}: {trainable:,} of {total:,} parameters train) on {device}, {precision}")
    for note in checkpoints.notes:
        console.print(f"[yellow]checkpoints:[/] {note}")

    resume_from = checkpoints.folder if checkpoints.resumed else None
    with staged_dir(out) as staging, track_fit(cfg, staging, out, console, resume_from=resume_from) as tracker, \
            training_console(console):
        workdir = open_work_folder(checkpoints, cfg)
        ranks_meet(checkpoints, workdir)
        tracker.remember(workdir)
        workdir = workdir or staging / "_checkpoints"
        try:
            with PeakMemory(device) as peak, TokenCounter(task.modules(model)) as seen:
                stats, hooks = train_with_strategy(strategy, options, task, model, data, cfg, workdir=workdir,
                                                   callbacks=[*(callbacks or []), *tracker.callbacks])
        except BaseException as err:
            # kept for --resume unless resuming would diverge again or there is nothing to resume from
            if isinstance(err, Diverged) or latest_checkpoint(checkpoints.folder, remove_broken=False).checkpoint is None:
                remove_work_folder(checkpoints.folder)
            raise
        _remove_tree(staging / "_checkpoints")
        console.print("evaluating the fine-tuned model")
        after = task.evaluate(eval_model(strategy, model, task, options, cfg), data, cfg)
        console.print(f"  after: {primary} = {after.metrics[primary]:.4f}")
        uncertainty = gain_intervals(before, after, confidence=cfg.eval.confidence, resamples=cfg.eval.resamples,
                                     seed=cfg.seed, directions={name: metric_direction(task.spec, name) for name in after.metrics})
        if (line := p_value_line(primary, uncertainty.get(primary))) is not None:
            console.print(f"  {line}")
        warnings = chance_warnings(task, data, cfg, after.metrics)
        for warning in warnings:
            console.print(f"[bold red]warning:[/] {warning}")
        with no_weight_bars():
            strategy_save(strategy, model, task, staging, options, cfg)
        interpolation = None
        if (wise := interpolation_options(options)) is not None:
            from tunewise import wiseft

            console.print("WiSE-FT: blending pre-trained and fine-tuned weights")
            interpolation = wiseft.after_run(task, cfg, data, staging, wise, console)
        metrics = {
            "task": cfg.task,
            "base_model": cfg.model or task.spec.default_model,
            "primary_metric": primary,
            "before": before.metrics,
            "after": after.metrics,
            "relative_improvement": {name: relative_improvement(value, after.metrics[name],
                                                                higher_is_better=metric_direction(task.spec, name))
                                     for name, value in before.metrics.items() if name in after.metrics},
            "uncertainty": uncertainty,
            "items": primary_items(before, after, primary),
            "strategy": {**info.as_dict(), "options": dict(cfg.strategy), **hooks},
            "train": {
                "seconds": round(stats.seconds, 3),
                "examples": stats.examples,
                "steps": stats.steps,
                "epochs": stats.epochs,
                "samples_per_second": round(stats.samples_per_second, 3),
                "device": device,
                "precision": precision,
                # model FLOPs per sample, achieved vs a measured peak, MFU (tunewise.flops); None: not counted
                "flops": run_flops(task, model, stats, seen.tokens, device, precision),
                "history": stats.history,
                "best": stats.best,
            },
            # the step kept and why (None: no early stopping); resumed: from which checkpoint, what the kill cost
            "early_stopping": stats.best,
            "resumed": checkpoints.point.as_dict(checkpoints.attempt) if checkpoints.resumed else None,
            "eval": {"seconds_before": round(before.seconds, 3), "seconds_after": round(after.seconds, 3),
                     "precision": evaluation_precision(cfg, device)},
            "memory": {**memory_block(estimate, estimate_note, peak), "cpu_allocator": allocator},
            "data": report,
            "examples": {"before": before.examples, "after": after.examples},
            "warnings": warnings,
            "config": cfg.to_dict(),
            "versions": library_versions(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        card = model_card(metrics, **task.card_info(data))
        if interpolation is not None:
            from tunewise import wiseft

            metrics["interpolation"] = interpolation
            card += "\n" + wiseft.markdown(interpolation)
        write_json(staging / "metrics.json", metrics)
        write_text(staging / "config.yaml", dump_config(cfg))
        write_text(staging / "README.md", card)
        tracker.finish(metrics)  # training curve; train.report_to: what the Trainer does not know
    remove_work_folder(checkpoints.folder)  # published: the checkpoints have served
    return RunResult(out, metrics, before.examples, after.examples)


def primary_items(before: Any, after: Any, primary: str) -> dict[str, dict[str, list[float]]]:
    """The primary metric's per-item scores before and after (metrics.json ``items``: what
    ``compare`` tests strategies with); the other metrics' items are left out to keep the file small."""
    if not isinstance(before, HasItems) or not isinstance(after, HasItems):
        return {}
    if primary not in before.items or primary not in after.items:
        return {}
    return {primary: {"before": list(before.items[primary]), "after": list(after.items[primary])}}


def chance_warnings(task: Any, data: Any, cfg: RunConfig, after: dict[str, float]) -> list[str]:
    """A warning when the fine-tuned primary score is at or below the task's chance level on this data."""
    from tunewise.evaluate.chance import at_or_below_chance
    from tunewise.tasks.base import KnowsChance

    if not isinstance(task, KnowsChance):
        return []
    primary = cfg.eval.primary
    chance = task.chance(data, cfg).get(primary)
    if not at_or_below_chance(after.get(primary), chance, task.spec.higher_is_better(primary)):
        return []
    return [f"the fine-tuned model scores {primary} = {after[primary]:.4f}, at or below chance ({chance:.4f} on this "
            "evaluation set): it learned nothing usable; check the learning rate, the labels and the data"]


def evaluate_before(task: Any, model: Any, data: Any, cfg: RunConfig, strategy: Any, options: Any) -> Any:
    """Score the pre-trained model: the "before" of every relative improvement.

    A task whose pre-trained model cannot be scored as is (:class:`~tunewise.tasks.base.HasBaseline`:
    a classifier needs a head) scores its baseline instead, e.g. a head fitted on frozen features,
    the transfer-learning baseline. Otherwise the strategy's view of the model is evaluated
    (``head``: the pre-trained model is the frozen body, so this also fills the feature cache).

    Returns:
        The task's evaluation result (``metrics``, ``seconds``, ``examples``).
    """
    if isinstance(task, HasBaseline):
        return task.baseline(model, data, cfg)
    return task.evaluate(eval_model(strategy, model, task, options, cfg), data, cfg)


def train_with_strategy(strategy: Any, options: Any, task: Any, model: Any, data: Any, cfg: RunConfig, *,
                        workdir: Path, callbacks: list | None = None) -> tuple[Any, dict[str, Any]]:
    """Train through the strategy's hooks; returns the stats and what the hooks report for metrics.json.

    A strategy that trains itself (``head``: cached features) replaces the task's training;
    otherwise the task trains with the strategy's param groups (per-group learning rates) and
    callbacks (gradual unfreezing).
    """
    from tunewise.tasks.divergence import DivergenceGuard

    callbacks = [DivergenceGuard(), *(callbacks or [])]  # a diverged run stops here, before any result is written
    stats = strategy_train(strategy, model, task, data, options, cfg, workdir=workdir, callbacks=callbacks)
    if stats is not None:
        return stats, _levers({"details": stats.details} if stats.details else {}, stats)
    groups = strategy_param_groups(strategy, model, task, options, cfg)
    extra_callbacks = strategy_callbacks(strategy, model, task, options, cfg)
    stats = task.train(model, data, cfg, workdir=workdir, callbacks=[*callbacks, *extra_callbacks],
                       param_groups=groups or None)
    hooks: dict[str, Any] = {}
    if groups:
        hooks["param_groups"] = [{"name": g["name"], "lr": g["lr"], "weight_decay": g["weight_decay"],
                                  "params": sum(p.numel() for p in g["params"])} for g in groups]
    unfreezing = [cb.log for cb in extra_callbacks if hasattr(cb, "log")]
    if unfreezing:
        hooks["unfreezing"] = unfreezing[0]
    return stats, _levers(hooks, stats)


def _levers(hooks: dict[str, Any], stats: Any) -> dict[str, Any]:
    """``hooks`` plus what the data levers did and cost (tunewise.data.training_rows), when any ran."""
    return {**hooks, "levers": stats.details["levers"]} if stats.details.get("levers") else hooks


def evaluate(config: RunConfig | str | Path | dict | None = None, *, model: str | None = None,
             overrides: list[str] | None = None, console: Console | None = None) -> dict[str, Any]:
    """Evaluate a model (default: the config's model) on the config's evaluation set.

    Returns:
        ``{"model", "metrics", "seconds", "examples", "data"}``.
    """
    cfg = as_config(config, overrides)
    if model is not None:
        cfg.model = model
    console = console or Console(stderr=True)
    if cfg.eval.folds is not None:  # every item scored once, fold by fold (tunewise.folds)
        from tunewise.folds import evaluate_folds

        return evaluate_folds(cfg, console=console)
    quiet_libraries()
    task = TASKS.get(cfg.task)()
    data = task.prepare_data(cfg)
    with console.status("loading the model"), no_weight_bars():
        load = task.load_trained if isinstance(task, LoadsTrained) else task.load_model  # no random classifier head
        loaded = load(cfg, pick_device(cfg.train.device))
    result = task.evaluate(loaded, data, cfg)
    intervals: dict[str, Any] = {}
    if isinstance(result, HasItems):  # how far each score on this evaluation set can be trusted (bootstrap, BCa)
        from tunewise.evaluate.uncertainty import mean_interval

        intervals = {name: mean_interval(list(values), cfg) for name, values in result.items.items() if name in result.metrics}
        for name, (codes, statistic) in getattr(result, "resampled", {}).items():  # macro F1: not a mean of items
            if name in result.metrics and name not in intervals:
                intervals[name] = mean_interval(list(codes), cfg, statistic)
    return {"model": cfg.model or task.spec.default_model, "metrics": result.metrics, "intervals": intervals,
            "seconds": result.seconds, "examples": result.examples, "data": task.data_report(data)}


def distributed() -> bool:
    """A torchrun / accelerate launch of several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def ranks_meet(plan: Any, opened: Path | None = None) -> Path | None:
    """Distributed runs: every rank waits here until rank 0 has opened the run's work folder.

    Rank 0 passes the folder it opened (None: checkpoints are off); the others get it back. The
    Trainer then saves each checkpoint there (weights and optimizer from rank 0, every rank's RNG
    state) and ``--resume`` continues all ranks from the same one. Single-process runs return
    ``opened`` at once.
    """
    if not distributed():
        return opened
    from accelerate import PartialState

    PartialState().wait_for_everyone()  # the process group the Trainer would open anyway
    if is_main_process():
        return opened
    from tunewise.checkpoints import is_work_folder

    return plan.folder if is_work_folder(plan.folder) else None  # rank 0 removed it when checkpoints are off


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a torchrun / accelerate launch."""
    return int(os.environ.get("RANK", "0")) == 0


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
