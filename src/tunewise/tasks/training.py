"""Trainer arguments every task shares: one place for seeds, schedule, precision, checkpoints,
early stopping and safety.

Each task adds what is its own (samplers, packing) on top of :func:`common_training_kwargs`,
builds its Trainer family's arguments class with them, and trains with :func:`train_resumable`.
That is all a task does to get:

- **resumable checkpoints** (``train.checkpoint_every``, ``train.keep_checkpoints``): when
  ``workdir`` is a run's work folder (:func:`tunewise.checkpoints.is_work_folder`: ``fit`` makes
  one; the budget planner's temporary folders are not), the Trainer saves full checkpoints
  there and :func:`train_resumable` continues from the newest complete one;
- **early stopping with the best checkpoint restored** (``train.early_stopping_patience``): pass
  ``best_metric`` (the Trainer's metric key, e.g. ``eval_accuracy``) and evaluate on a
  validation set, with the Trainer's own ``eval_dataset``/``compute_metrics`` or any scoring
  function through :func:`validating` (which makes ``Trainer.evaluate`` call it); then
  :func:`early_stopping_record` says which step was kept and why (metrics.json ``early_stopping``).

A task that cannot early-stop says why in one line (:func:`refuse_early_stopping`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunewise.checkpoints import checkpoint_clock, is_work_folder, latest_checkpoint, parse_every
from tunewise.config import RunConfig
from tunewise.errors import TunewiseError


def precision_flags(precision: str, device: str) -> dict[str, bool]:
    """Trainer flags for a precision setting (:func:`tunewise.precision.effective_precision`:
    ``auto`` is bf16 on CUDA with bf16 or on a CPU with native bf16, fp16 on older GPUs, else
    fp32); fp16 without CUDA raises TunewiseError."""
    from tunewise.precision import effective_precision, trainer_flags

    return trainer_flags(effective_precision(precision, device))


def early_stopping(config: RunConfig) -> bool:
    """True when the run early-stops (and so needs a validation set carved from its training data)."""
    return config.train.early_stopping_patience is not None


def stopping_metric(config: RunConfig) -> tuple[str, bool]:
    """The validation metric early stopping watches (``train.early_stopping_metric``, else
    ``eval.primary``) and whether higher is better.

    Raises:
        TunewiseError: the task does not report that metric.
    """
    from tunewise.tasks.base import TASKS

    spec = TASKS.get(config.task).spec
    name = config.train.early_stopping_metric or config.eval.primary
    try:
        if spec.ranking:
            from tunewise.evaluate.metrics import parse_metric_name
            from tunewise.evaluate.retrieval import metric_names

            metric, k = parse_metric_name(name)
            if f"{metric}@{k}" not in (reported := metric_names(config.eval)):
                raise TunewiseError(f"the evaluation reports {', '.join(reported)} (eval.k)")
            return f"{metric}@{k}", True
        return spec.metric(name).name, spec.higher_is_better(name)
    except TunewiseError as err:
        reason = str(err).split(": ", 1)[-1]
        raise TunewiseError(f"train.early_stopping_metric: '{name}' is not a metric of task {spec.name} ({reason})") from None


def watched_metric(config: RunConfig) -> tuple[str | None, bool]:
    """:func:`stopping_metric` when the run early-stops, else ``(None, True)``."""
    return stopping_metric(config) if early_stopping(config) else (None, True)


def metric_key(name: str | None) -> str | None:
    """The Trainer's key of a validation metric: ``eval_<name>`` (``eval_loss`` stays as it is)."""
    if name is None:
        return None
    return name if name.startswith("eval_") else f"eval_{name}"


def common_training_kwargs(config: RunConfig, workdir: Path, device: str, *, best_metric: str | None = None,
                           greater_is_better: bool = True, evaluate: bool = False) -> dict[str, Any]:
    """TrainingArguments fields shared by every task (transformers, sentence-transformers, TRL).

    Args:
        best_metric: the Trainer's key of the validation metric early stopping watches
            (``eval_accuracy``, ``eval_val_mrr@20``, ``eval_loss``); None: the task does not
            evaluate a validation set, and early stopping must have been refused before.
        greater_is_better: that metric's direction.
        evaluate: evaluate every epoch even without early stopping (the budget planner's time curve).

    Returns:
        The keyword arguments, with the evaluation / save schedule: tasks set none of
        ``eval_strategy``, ``save_strategy``, ``save_total_limit``, ``load_best_model_at_end``
        themselves.
    """
    tc = config.train
    from dataclasses import fields

    from transformers import TrainingArguments

    # transformers 5 renamed gradient_checkpointing (the old name warns on every run)
    names = {f.name for f in fields(TrainingArguments)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return dict(
        output_dir=str(workdir),
        **{checkpointing: tc.gradient_checkpointing},
        num_train_epochs=tc.epochs,
        per_device_train_batch_size=tc.batch_size,
        learning_rate=tc.learning_rate,
        warmup_steps=tc.warmup_ratio,  # a float < 1 is a ratio of the total steps
        weight_decay=tc.weight_decay,
        seed=config.seed,
        data_seed=config.seed,
        logging_strategy="epoch",
        logging_nan_inf_filter=False,  # a NaN loss is logged as NaN (the Trainer would hide it)
        report_to=list(tc.report_to) or "none",  # the trackers of train.report_to (tunewise.tracking)
        use_cpu=not device.startswith("cuda"),
        dataloader_num_workers=0,
        **_trainer_precision(config, device),
        **schedule_kwargs(config, workdir, best_metric=best_metric, greater_is_better=greater_is_better, evaluate=evaluate),
    )


def _trainer_precision(config: RunConfig, device: str) -> dict[str, bool]:
    from tunewise.precision import run_precision, trainer_flags

    return trainer_flags(run_precision(config, device))


def schedule_kwargs(config: RunConfig, workdir: Path | None, *, best_metric: str | None = None,
                    greater_is_better: bool = True, evaluate: bool = False) -> dict[str, Any]:
    """When the Trainer evaluates and saves: checkpoints for resuming, early stopping, or neither.

    Early stopping evaluates and saves at the same points (the Trainer restores the best of
    them): every epoch, or every ``train.checkpoint_every`` steps. Resumable checkpoints keep the
    optimizer, scheduler and RNG states (``save_only_model=False``); without them only weights
    are written (safetensors).
    """
    tc = config.train
    every = parse_every(tc.checkpoint_every)
    resumable = _resumable(workdir) and every.unit != "off"
    if resumable and every.unit == "minutes" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TunewiseError("train.checkpoint_every: every N minutes would let the ranks of a distributed run save at "
                            "different steps; use epoch or a number of steps with torchrun / accelerate launch")
    early = early_stopping(config)
    if early and best_metric is None:
        raise TunewiseError("train.early_stopping_patience: this training loop has no validation metric; leave it out")
    kwargs: dict[str, Any] = {"save_only_model": not resumable}  # no optimizer state on disk unless resuming needs it
    interval: dict[str, Any] = {"strategy": "epoch"}
    if resumable and every.unit == "steps":
        interval = {"strategy": "steps", "steps": int(every.value)}
    if early:
        if resumable and every.unit == "minutes":
            raise TunewiseError("train.checkpoint_every: with early stopping, checkpoints follow the validation "
                                "evaluations; use epoch or a number of steps, not minutes")
        kwargs.update(eval_strategy=interval["strategy"], save_strategy=interval["strategy"], load_best_model_at_end=True,
                      metric_for_best_model=best_metric, greater_is_better=greater_is_better,
                      save_total_limit=tc.keep_checkpoints if resumable else 1)
        if "steps" in interval:
            kwargs.update(eval_steps=interval["steps"], save_steps=interval["steps"])
        return kwargs
    kwargs["eval_strategy"] = "epoch" if evaluate else "no"
    if resumable and every.unit in ("epoch", "steps"):
        kwargs.update(save_strategy=interval["strategy"], save_total_limit=tc.keep_checkpoints)
        if "steps" in interval:
            kwargs["save_steps"] = interval["steps"]
    else:  # no checkpoints, or every N minutes (saved by the CheckpointClock callback)
        kwargs.update(save_strategy="no", save_total_limit=tc.keep_checkpoints if resumable else None)
    return kwargs


def _resumable(workdir: Path | None) -> bool:
    """A run's work folder (``fit`` opens it; in a distributed run every rank trains in the same one)."""
    return is_work_folder(workdir)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def train_resumable(trainer: Any, config: RunConfig, workdir: Path | None) -> Any:
    """``trainer.train()``, continuing from the newest complete checkpoint of a run's work folder.

    Outside a work folder (budget points, tests) this is ``trainer.train()``. Inside one, a
    callback marks each checkpoint complete once the Trainer has written it, notes progress
    (the seconds a kill loses) and saves every N minutes when ``train.checkpoint_every`` says so.

    Returns:
        The Trainer's ``TrainOutput``.
    """
    if not _resumable(workdir):
        return trainer.train()
    folder = Path(workdir)  # type: ignore[arg-type]
    point = latest_checkpoint(folder, remove_broken=_rank() == 0)  # every rank picks the same one; rank 0 tidies
    trainer.add_callback(checkpoint_clock(folder, parse_every(config.train.checkpoint_every), point.train_seconds))
    return trainer.train(resume_from_checkpoint=str(point.checkpoint) if point.checkpoint is not None else None)


def early_stopping_callback(config: RunConfig) -> list:
    """``[EarlyStoppingCallback]`` when the run early-stops, else ``[]``."""
    if not early_stopping(config):
        return []
    from transformers import EarlyStoppingCallback

    return [EarlyStoppingCallback(early_stopping_patience=config.train.early_stopping_patience)]


def early_stopping_record(trainer: Any, config: RunConfig, metric: str) -> dict[str, Any] | None:
    """metrics.json ``early_stopping``: the step kept, its validation score, where training stopped and why.

    Args:
        metric: the metric's name as users know it (``eval.primary``, or ``eval_loss``).
    """
    state = trainer.state
    if not early_stopping(config) or state.best_metric is None:
        return None
    evaluations = [h for h in state.log_history if any(k.startswith("eval_") and k != "eval_runtime" for k in h)]
    best_step = getattr(state, "best_global_step", None)
    best_epoch = next((h.get("epoch") for h in evaluations if h.get("step") == best_step), None)
    patience = config.train.early_stopping_patience
    stopped_early = state.global_step < state.max_steps
    if stopped_early:
        reason = (f"validation {metric} did not improve for {patience} evaluation{'s' if patience != 1 else ''} "
                  f"after step {best_step}; stopped at step {state.global_step} of {state.max_steps} and restored step {best_step}")
    elif best_step == state.global_step:
        reason = f"validation {metric} was best at the last evaluation; all {state.max_steps} steps kept"
    else:
        reason = (f"trained all {state.max_steps} steps; validation {metric} was best at step {best_step}, "
                  "which was restored")
    return {"metric": metric, "value": float(state.best_metric), "best_step": best_step,
            "best_epoch": round(float(best_epoch), 4) if best_epoch is not None else None,
            "stopped_at_step": int(state.global_step), "planned_steps": int(state.max_steps),
            "stopped_early": stopped_early, "evaluations": len(evaluations), "patience": patience,
            "reason": reason, "checkpoint_step": best_step}


def validating(trainer_cls: type, validate: Callable[[], dict[str, float]]) -> type:
    """A subclass of ``trainer_cls`` whose ``evaluate()`` returns ``validate()``'s metrics as ``eval_<name>``.

    For tasks whose validation score is not a Trainer ``compute_metrics`` over logits (search
    metrics over embeddings, generation metrics): the Trainer's early stopping and best-checkpoint
    selection then work on it unchanged. Give the Trainer some ``eval_dataset`` (it insists on one
    when it evaluates); ``validate`` ignores it.
    """

    class Validating(trainer_cls):  # type: ignore[misc, valid-type]
        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", **_: Any):
            start = time.perf_counter()
            metrics = {(k if k.startswith(f"{metric_key_prefix}_") else f"{metric_key_prefix}_{k}"): float(v)
                       for k, v in validate().items()}
            metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - start, 4)
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    Validating.__name__ = Validating.__qualname__ = f"Validating{trainer_cls.__name__}"
    return Validating


def refuse_early_stopping(config: RunConfig, why: str) -> None:
    """One-line refusal for a task or training loop that genuinely cannot early-stop."""
    if early_stopping(config):
        raise TunewiseError(f"train.early_stopping_patience: {why}; leave it out")
