"""``head``: the backbone stays frozen; only a head trains, on cached backbone outputs.

Transfer learning in its cheapest form: the pre-trained model is a fixed feature extractor.
Because the backbone never changes, its outputs for the training inputs are computed once and
cached on disk (:mod:`tunewise.models.feature_cache`, keyed by weights, preprocessing and
data), so the epochs after the first, and later runs on the same data, never run it again.
The head then trains with the transformers ``Trainer`` on a tiny module over the cached
features. The saved model is backbone + head and loads with the ecosystem's own loader.

What is cached and which head trains is the task's to say: its ``spec.head``
(:class:`~tunewise.tasks.base.HeadSupport`) names the kind of features, the head options it
refuses and the losses it supports; a task that refuses the strategy outright says so in
``spec.refused`` and is stopped when the config loads. Each kind of features has one module
here, found through :data:`FEATURE_KINDS`:

| ``HeadSupport.features`` | module | the head |
|---|---|---|
| ``pooled-text`` | :mod:`.pooled_text` | a projection the task appends, ranking loss over sentence embeddings |
| ``classifier-inputs`` | :mod:`.classifier_inputs` | the classifier's final linear layer, cross-entropy |
| ``pooled-image`` | :mod:`.pooled_image` | a projection the task appends, the task's metric loss |
| ``clip-towers`` | :mod:`.clip_towers` | CLIP's two projections, symmetric contrastive loss |

:mod:`.training` holds what they share (the Trainer run over cached features, the statistics).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError
from tunewise.strategies.base import DEFAULT_LR, STRATEGIES, add_head, head_modules_of
from tunewise.strategies.head import classifier_inputs, clip_towers, pooled_image, pooled_text
from tunewise.strategies.head.training import FeatureKind
from tunewise.tasks.base import TASKS, TrainStats

FEATURE_KINDS: dict[str, FeatureKind] = {
    "pooled-text": pooled_text.KIND,
    "classifier-inputs": classifier_inputs.KIND,
    "pooled-image": pooled_image.KIND,
    "clip-towers": clip_towers.KIND,
}


@dataclass
class HeadOptions:
    """A new trainable head over a frozen, cached backbone."""

    dim: int | None = field(default=None, metadata={"help": "Output dimension of the head (default: the backbone's)."})
    activation: str = field(default="identity", metadata={"help": "identity (a linear projection) or tanh."})
    head_lr: float = field(default=1e-3, metadata={"help": "Learning rate of the head (a fresh layer wants more than a backbone)."})
    scale: float = field(default=20.0, metadata={"help": "Ranking loss: similarity scale (inverse temperature)."})
    cache: bool = field(default=True, metadata={"help": "Cache backbone outputs on disk; false re-runs the backbone every epoch (benchmarks)."})

    def __post_init__(self) -> None:
        if self.dim is not None and self.dim < 1:
            raise TunewiseError(f"strategy.dim: must be at least 1, got {self.dim}")
        if self.activation not in ("identity", "tanh"):
            raise TunewiseError(f"strategy.activation: use identity or tanh, got '{self.activation}'")
        if self.head_lr <= 0:
            raise TunewiseError(f"strategy.head_lr: must be positive, got {self.head_lr}")
        if self.scale <= 0:
            raise TunewiseError(f"strategy.scale: must be positive, got {self.scale}")


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(HeadOptions)}


def check_head(options: HeadOptions, config: RunConfig) -> None:
    """What the task says about the head strategy, checked before any data is read."""
    support = TASKS.get(config.task).spec.head
    if support is None or support.features not in FEATURE_KINDS:
        raise TunewiseError(f"strategy head: not available for task '{config.task}'; use strategy: partial or full")
    for name in support.refused_options:
        if getattr(options, name) != _DEFAULTS[name]:
            raise TunewiseError(f"strategy.{name}: {support.why}; drop strategy.{name}")
    if support.losses is not None and config.train.loss not in support.losses:
        loss = support.losses[0]
        raise TunewiseError(f"train.loss: strategy head trains on cached features with {loss}; '{config.train.loss}' "
                            f"is not supported there (use train.loss: {loss} or strategy: partial)")


def _kind(task: Any) -> FeatureKind:
    return FEATURE_KINDS[task.spec.head.features]


@STRATEGIES.register("head")
class HeadStrategy:
    name = "head"
    default_learning_rate = DEFAULT_LR  # train.learning_rate when the config leaves it empty
    options = HeadOptions
    check = staticmethod(check_head)

    @staticmethod
    def prepare(model: Any, task: Any, options: HeadOptions, config: RunConfig) -> Any:
        for p in task.modules(model).parameters():
            p.requires_grad_(False)
        if _kind(task).adds_head:  # classifiers and CLIP train the heads they have
            model = add_head(task, model, options.dim, activation=options.activation, option="strategy.dim")
        for m in head_modules_of(task, model):
            for p in m.parameters():
                p.requires_grad_(True)
        return model

    @staticmethod
    def train(model: Any, task: Any, data: Any, options: HeadOptions, config: RunConfig, *, workdir: Path,
              callbacks: list | None = None) -> TrainStats:
        """Train the head on cached features; with early stopping, every evaluation scores the task's
        validation set with the model as it stands (its head is the one training), and the best head
        is restored (a kind may score from cached features instead: ``classifier-inputs``)."""
        validate = None
        if config.train.early_stopping_patience is not None:
            view = HeadStrategy.eval_model(model, task, options, config)
            validate = lambda: task.evaluate(view, data, config, split="validation").metrics  # noqa: E731
        # the backbone's features are computed in the run's precision (cached apart from fp32 ones);
        # the head itself trains in fp32 (train_head_module switches autocast off)
        from tunewise.precision import evaluation_autocast

        with evaluation_autocast(config, model):
            return _kind(task).train(model, task, data, options, config, workdir=workdir, callbacks=callbacks, validate=validate)

    @staticmethod
    def eval_model(model: Any, task: Any, options: HeadOptions, config: RunConfig) -> Any:
        """What evaluation encodes with (text: the model, its body's outputs read from the feature cache)."""
        view = _kind(task).eval_model
        return view(model, options) if view is not None else model

    @staticmethod
    def reuse_pretrained(model: Any, task: Any, config: RunConfig) -> Any:
        """A fresh model for another budget-sweep point from one loaded once: the frozen body is
        shared where the kind allows (it never changes), else a copy (classifiers train their own head)."""
        reuse = _kind(task).reuse_pretrained
        return reuse(model) if reuse is not None else copy.deepcopy(model)
