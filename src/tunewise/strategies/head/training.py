"""What every kind of cached head features shares: the record a kind fills, the Trainer run over
a tiny module on cached features, and the statistics it reports.

A kind (one module beside this one per :attr:`tunewise.tasks.base.HeadSupport.features`)
computes its features once per input through :func:`tunewise.models.feature_cache.cached_features`,
wraps the trainable head and the cached features in a small ``nn.Module`` whose inputs are row
indices, and hands it to :func:`train_head_module`; :func:`head_train_stats` turns the run
into :class:`~tunewise.tasks.base.TrainStats` with what the cache did in ``details``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunewise.config import RunConfig
from tunewise.models.feature_cache import tensors_fingerprint
from tunewise.strategies.base import head_modules_of
from tunewise.tasks.base import CachesFeatures, TrainStats


@dataclass(frozen=True)
class FeatureKind:
    """How strategy ``head`` trains on one kind of cached features.

    Args:
        train: ``(model, task, data, options, config, *, workdir, callbacks, validate) -> TrainStats``:
            cache the features of the training inputs, then train the head over them; ``validate``
            (early stopping: the task's validation metrics of the model as it is) goes to
            :func:`train_cached_head`.
        adds_head: the head is a projection the task appends (``CanAddHead``) when the model
            is prepared; otherwise the model's own head trains (a classifier's final layer,
            CLIP's two projections).
        eval_model: ``(model, options) -> what evaluation scores`` (None: the model itself).
        reuse_pretrained: ``(model) -> a fresh model for another budget point`` that shares the
            frozen body with ``model`` (None: a deep copy).
    """

    train: Callable[..., TrainStats]
    adds_head: bool = False
    eval_model: Callable[[Any, Any], Any] | None = None
    reuse_pretrained: Callable[[Any], Any] | None = None


def feature_inputs(task: Any) -> CachesFeatures:
    """The task's per-input keys, batches and preprocessing, which the kinds that cache per
    input need (a task declaring such head features without them is a programming error)."""
    if not isinstance(task, CachesFeatures):
        raise TypeError(f"task {task.spec.name} declares head features '{task.spec.head.features}' "
                        "but has no feature_keys / feature_batches / preprocessing (CachesFeatures)")
    return task


def body_fingerprint(model: nn.Module, task: Any) -> str:
    """Fingerprint of every weight of ``model`` but its heads' (``head_modules``): what frozen features depend on."""
    head_ids = {id(p) for m in head_modules_of(task, model) for p in m.parameters()}
    return tensors_fingerprint({n: t for n, t in model.state_dict(keep_vars=True).items() if id(t) not in head_ids})


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """``torch.set_num_threads(n)`` for the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _single_thread(device: str) -> Iterator[None]:
    """One intra-op thread on CPU: the head's matmuls are tiny, and thread hand-offs cost more than
    they save (measured 20x slower steps with 2 threads on a loaded 2-core machine)."""
    if device.startswith("cuda"):
        yield
        return
    with torch_threads(1):
        yield


def _epoch_timer(seconds: list[float]):
    """A TrainerCallback appending each epoch's wall seconds to ``seconds``."""
    from transformers import TrainerCallback

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            seconds.append(time.perf_counter() - self.start)

    return EpochTimer()


def train_head_module(module: nn.Module, dataset: Any, options: Any, config: RunConfig, *, device: str, workdir: Path,
                      epoch_seconds: list[float], callbacks: list | None = None, collator: Any = None,
                      validate: Callable[[], dict[str, float]] | None = None):
    """Train a head-over-cached-features module with the transformers Trainer; (trainer, output, seconds).

    One intra-op thread on CPU (see :func:`_single_thread`); each epoch's wall time goes to
    ``epoch_seconds`` (callbacks run inside it). Checkpoints (a run's work folder) and early
    stopping on ``validate()`` (the task's validation metrics) are the tasks' own
    (:mod:`tunewise.tasks.training`); the best head is restored at the end.
    """
    from transformers import Trainer, TrainingArguments

    from tunewise.tasks.progress import quiet_progress
    from tunewise.tasks.training import early_stopping_callback, metric_key, schedule_kwargs, train_resumable, validating, watched_metric

    metric, higher = watched_metric(config)
    args = TrainingArguments(
        output_dir=str(workdir), num_train_epochs=config.train.epochs, per_device_train_batch_size=config.train.batch_size,
        learning_rate=options.head_lr, warmup_steps=config.train.warmup_ratio, weight_decay=config.train.weight_decay,
        seed=config.seed, data_seed=config.seed, logging_strategy="epoch", report_to=list(config.train.report_to) or "none",
        use_cpu=not device.startswith("cuda"), dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
        **schedule_kwargs(config, workdir, best_metric=metric_key(metric) if validate else None, greater_is_better=higher),
    )
    trainer_cls = validating(Trainer, validate) if validate is not None else Trainer
    trainer = trainer_cls(model=module, args=args, train_dataset=dataset, data_collator=collator,
                          eval_dataset=["validation"] if validate is not None else None,  # validate() scores; the Trainer wants one
                          callbacks=[_epoch_timer(epoch_seconds), *(callbacks or []), *early_stopping_callback(config)])
    quiet_progress(trainer)  # tunewise's bar or per-epoch lines, no raw log dicts
    start = time.perf_counter()
    from tunewise.precision import training_autocast_off

    with _single_thread(device), training_autocast_off(device):  # tiny fp32 matmuls; features may be bf16-computed
        output = train_resumable(trainer, config, workdir)
    return trainer, output, time.perf_counter() - start


def head_train_stats(cache, key: str, options: Any, trainer: Any, output: Any, train_seconds: float,
                     epoch_seconds: list[float], config: RunConfig, *, examples: int, inputs: dict[str, int]) -> TrainStats:
    """TrainStats of a head trained on cached features, with what the cache did per epoch in ``details``
    (metrics.json ``strategy.details``)."""
    seconds = cache.seconds + train_seconds
    epochs = float(output.metrics.get("epoch", config.train.epochs))
    later = epoch_seconds[1:]
    details = {
        "feature_cache": {"status": cache.status, "path": str(cache.path) if options.cache else None,
                          # the folder's key: the backbone's, plus the precision when features were computed under autocast
                          "fingerprint": cache.path.name if key else key, **inputs, "encoded": cache.encoded,
                          "build_seconds": round(cache.seconds, 4)},
        "epoch_seconds": [round(s, 4) for s in epoch_seconds],
        "epoch_losses": [round(float(h["loss"]), 5) for h in trainer.state.log_history if "loss" in h],
        "first_epoch_seconds": round(cache.seconds + (epoch_seconds[0] if epoch_seconds else 0.0), 4),
        "later_epoch_seconds_mean": round(sum(later) / len(later), 5) if later else None,
    }
    from tunewise.tasks.training import early_stopping_record, watched_metric

    evaluations = [h for h in trainer.state.log_history if "eval_runtime" in h]
    return TrainStats(seconds=seconds, examples=examples, steps=int(output.global_step), epochs=epochs,
                      samples_per_second=examples * epochs / max(seconds, 1e-9), details=details, history=evaluations,
                      best=early_stopping_record(trainer, config, watched_metric(config)[0] or ""))


def train_cached_head(module: nn.Module, dataset: Any, cache: Any, key: str, options: Any, config: RunConfig, *,
                      device: str, workdir: Path, callbacks: list | None, examples: int, inputs: dict[str, int],
                      collator: Any = None, validate: Callable[[], dict[str, float]] | None = None) -> TrainStats:
    """:func:`train_head_module` then :func:`head_train_stats`: what every kind ends with."""
    epoch_seconds: list[float] = []
    trainer, output, seconds = train_head_module(module, dataset, options, config, device=device, workdir=workdir,
                                                 epoch_seconds=epoch_seconds, callbacks=callbacks, collator=collator,
                                                 validate=validate)
    return head_train_stats(cache, key, options, trainer, output, seconds, epoch_seconds, config,
                            examples=examples, inputs=inputs)
