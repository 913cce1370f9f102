"""Strategies: how much of a pre-trained model trains. A registry keyed by the name users type.

Each strategy is a module with one validated options dataclass (parts composed by concept,
keys flat for users: :mod:`tunewise.strategies.options`) and a ``prepare`` function that
freezes, unfreezes or wraps the task's model before training. That much is the required
contract, :class:`Strategy`. Optional hooks let a strategy change more of the run without the
runner knowing which strategy it is; each is a small runtime-checkable :class:`typing.Protocol`
below, and callers go through the public function in the last column, never ``getattr``:

| hook (protocol) | default without it | called through, by |
|---|---|---|
| ``check(options, config)`` (:class:`Checks`) | nothing to check beyond the options' own ``__post_init__`` | :func:`resolve_strategy` (fit, compare, sweep, ``tunewise config``): stop before any work (qlora without CUDA) |
| ``param_groups(model, task, options, config)`` (:class:`HasParamGroups`) | the Trainer's optimizer over every trainable parameter | :func:`strategy_param_groups`, by ``run`` and the budget sweep, for the task's ``train`` |
| ``callbacks(model, task, options, config)`` (:class:`HasCallbacks`) | no extra callbacks | :func:`strategy_callbacks`, likewise (gradual unfreezing) |
| ``train(model, task, data, options, config, workdir=, callbacks=)`` (:class:`TrainsItself`) | the task's ``train`` | :func:`strategy_train` (``head``: cached features) |
| ``save(model, task, path, options, config)`` (:class:`SavesItself`) | ``task.save(model, path)`` | :func:`strategy_save`, by ``run.fit`` (LoRA: adapter + merged model) |
| ``eval_model(model, task, options, config)`` (:class:`HasEvalView`) | the model itself is evaluated | :func:`eval_model`, by ``run`` and the sweep (``head``: the body's outputs from the feature cache) |
| ``reuse_pretrained(model, task, config)`` (:class:`ReusesPretrained`) | every budget point loads the pre-trained model | :func:`reuses_pretrained`, by the budget sweep (load once, a fresh model per point) |

The options object says whether a run ends with a WiSE-FT sweep: :func:`interpolation_options`.

What a strategy asks of the task goes through the task's capabilities
(:mod:`tunewise.tasks.base`): :func:`backbone_of` and :func:`head_modules_of` (``HasBackbone``;
without it the whole of ``task.modules(model)`` is the backbone, with no head) and
:func:`add_head` (``CanAddHead``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError
from tunewise.registry import Registry
from tunewise.strategies.options import HasWiseFT, WiseFTOptions, option_names, options_from_dict
from tunewise.tasks.base import CanAddHead, HasBackbone, TrainStats


class Strategy(Protocol):
    """What every registered strategy has."""

    name: str
    options: type  # a dataclass validated in __post_init__ (see tunewise.strategies.options)
    default_learning_rate: float  # train.learning_rate when the config leaves it empty

    def prepare(self, model: Any, task: Any, options: Any, config: RunConfig) -> Any:
        """Return the model ready to train (parameters frozen or adapted)."""


@runtime_checkable
class Checks(Protocol):
    """Stops a run before any work (data read, model loaded) when the options cannot work here."""

    def check(self, options: Any, config: RunConfig) -> None: ...


@runtime_checkable
class HasParamGroups(Protocol):
    """Per-group learning rates (head, backbone, layer-wise decay) for the task's ``train``."""

    def param_groups(self, model: Any, task: Any, options: Any, config: RunConfig) -> list[dict[str, Any]] | None: ...


@runtime_checkable
class HasCallbacks(Protocol):
    """TrainerCallbacks added to the task's training (gradual unfreezing)."""

    def callbacks(self, model: Any, task: Any, options: Any, config: RunConfig) -> list: ...


@runtime_checkable
class TrainsItself(Protocol):
    """Replaces the task's training altogether (``head``: a small module over cached features)."""

    def train(self, model: Any, task: Any, data: Any, options: Any, config: RunConfig, *, workdir: Path,
              callbacks: list | None = None) -> TrainStats: ...


@runtime_checkable
class SavesItself(Protocol):
    """Replaces ``task.save`` (LoRA: the adapter, and the merged model)."""

    def save(self, model: Any, task: Any, path: Path, options: Any, config: RunConfig) -> None: ...


@runtime_checkable
class HasEvalView(Protocol):
    """What evaluation should score instead of the model itself."""

    def eval_model(self, model: Any, task: Any, options: Any, config: RunConfig) -> Any: ...


@runtime_checkable
class ReusesPretrained(Protocol):
    """The pre-trained weights never change: a fresh model per budget point from one loaded once."""

    def reuse_pretrained(self, model: Any, task: Any, config: RunConfig) -> Any: ...


@dataclass
class StrategyInfo:
    """Trainable and total parameter counts after a strategy prepared the model."""

    name: str
    trainable_params: int
    total_params: int

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / max(1, self.total_params)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "trainable_fraction": round(self.trainable_fraction, 6)}


STRATEGIES: Registry[Any] = Registry("strategy", "strategy")

# train.learning_rate when the config leaves it empty, declared by each strategy. Adapters start
# from zero and need a larger step: on the demo FAQ, LoRA at 5e-5 gained +3% MRR@20 in an epoch
# where full fine-tuning gained +63% (benchmarks/results/strategies.md); 1e-3 is the LoRA paper's range.
DEFAULT_LR = 5e-5
ADAPTER_LR = 1e-3


def resolve_strategy(config: RunConfig) -> tuple[Any, Any]:
    """The strategy object and its validated options, from ``config.strategy``.

    An option that belongs to another strategy gets a message saying so (not just "unknown key").
    """
    strategy = STRATEGIES.get(config.strategy_name)
    raw = {k: v for k, v in config.strategy.items() if k != "name"}
    own = set(option_names(strategy.options))
    for key in raw:
        if key in own:
            continue
        users = [n for n in STRATEGIES.names() if key in option_names(STRATEGIES.get(n).options)]
        if users:
            raise TunewiseError(
                f"strategy.{key}: does not apply to strategy '{strategy.name}'; it is an option of {', '.join(users)}"
                + (f" (options of {strategy.name}: {', '.join(sorted(own))})" if own else f" ({strategy.name} has no options)")
            )
    options = options_from_dict(strategy.options, raw)
    if isinstance(strategy, Checks):
        strategy.check(options, config)
    return strategy, options


# -- the optional hooks, for callers (run, budget sweep) ---------------------------------


def strategy_param_groups(strategy: Any, model: Any, task: Any, options: Any, config: RunConfig) -> list[dict[str, Any]] | None:
    """Optimizer param groups for the task's ``train``, or None for the Trainer's default."""
    return strategy.param_groups(model, task, options, config) if isinstance(strategy, HasParamGroups) else None


def strategy_callbacks(strategy: Any, model: Any, task: Any, options: Any, config: RunConfig) -> list:
    """TrainerCallbacks the strategy adds to the task's training ([] without the hook)."""
    return list(strategy.callbacks(model, task, options, config)) if isinstance(strategy, HasCallbacks) else []


def strategy_train(strategy: Any, model: Any, task: Any, data: Any, options: Any, config: RunConfig, *, workdir: Path,
                   callbacks: list | None = None) -> TrainStats | None:
    """The strategy's own training, or None when the task's ``train`` should run (with the
    strategy's param groups and callbacks)."""
    if not isinstance(strategy, TrainsItself):
        return None
    return strategy.train(model, task, data, options, config, workdir=workdir, callbacks=callbacks)


def strategy_save(strategy: Any, model: Any, task: Any, path: Path, options: Any, config: RunConfig) -> None:
    """Write the trained model to ``path``: the strategy's ``save``, else ``task.save``."""
    if isinstance(strategy, SavesItself):
        strategy.save(model, task, path, options, config)
    else:
        task.save(model, path)


def eval_model(strategy: Any, model: Any, task: Any, options: Any, config: Any) -> Any:
    """What evaluation should score: the strategy's view of ``model`` (``head``: cached body
    outputs plus the head), or the model itself."""
    return strategy.eval_model(model, task, options, config) if isinstance(strategy, HasEvalView) else model


def reuses_pretrained(strategy: Any) -> bool:
    """True when the budget sweep may load the pre-trained model once and get each point's
    model from ``strategy.reuse_pretrained(loaded, task, config)``."""
    return isinstance(strategy, ReusesPretrained)


def interpolation_options(options: Any) -> WiseFTOptions | None:
    """The WiSE-FT part of a strategy's options when the run asks for a blend sweep
    (``strategy.interpolate``), else None."""
    return options.wiseft if isinstance(options, HasWiseFT) and options.wiseft.interpolate else None


# -- what strategies ask of the task -----------------------------------------------------


def count_params(module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a 4-bit weight counts its logical shape, not its packed bytes."""
    trainable = sum(_numel(p) for p in module.parameters() if p.requires_grad)
    total = sum(_numel(p) for p in module.parameters())
    return trainable, total


def _numel(p) -> int:
    state = getattr(p, "quant_state", None)  # bitsandbytes Params4bit: two weights per stored byte
    return int(state.shape.numel()) if state is not None and hasattr(state, "shape") else p.numel()


def backbone_of(task: Any, model: Any):
    """The pre-trained network inside the task's model (the whole model when the task does not say)."""
    return task.backbone(model) if isinstance(task, HasBackbone) else task.modules(model)


def head_modules_of(task: Any, model: Any) -> list:
    """New trainable heads of the task's model (none when the task does not say)."""
    return list(task.head_modules(model)) if isinstance(task, HasBackbone) else []


def add_head(task: Any, model: Any, dim: int | None, activation: str = "identity", option: str = "strategy.head_dim") -> Any:
    """Append the task's projection head; ``option`` is what the error names when the task has none."""
    if not isinstance(task, CanAddHead):
        raise TunewiseError(f"{option}: task '{task.spec.name}' cannot add a head; drop {option}")
    return task.add_head(model, dim, activation=activation)
