"""Strategies: how much of a pre-trained model trains. A registry keyed by the name users type.

Each strategy is a module with one validated options dataclass and a ``prepare`` function
that freezes, unfreezes or wraps the task's model before training. Optional hooks let a
strategy change more of the run without the runner knowing which strategy it is:

| hook | called by | what for |
|---|---|---|
| ``check(options, config)`` | :func:`resolve_strategy` | stop before any work (qlora without CUDA) |
| ``param_groups(model, task, options, config)`` | the task's ``train`` | per-group learning rates |
| ``callbacks(model, task, options, config)`` | the task's ``train`` | gradual unfreezing |
| ``train(model, task, data, options, config, workdir=, callbacks=)`` | :func:`tunewise.run.fit` | replaces the task's training (``head``: cached features) |
| ``save(model, task, path, options, config)`` | :func:`tunewise.run.fit` | replaces ``task.save`` (LoRA: adapter + merged model) |

Tasks may offer ``backbone(model)`` (the pre-trained network whose layers are found by
:mod:`tunewise.strategies.layers`), ``head_modules(model)`` (new trainable heads) and
``add_head(model, dim)``; without them the whole of ``task.modules(model)`` is the backbone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

from tunewise.config import RunConfig, from_dict
from tunewise.errors import TunewiseError
from tunewise.registry import Registry


class Strategy(Protocol):
    name: str
    options: type  # a dataclass validated in __post_init__

    def prepare(self, model: Any, task: Any, options: Any, config: RunConfig) -> Any:
        """Return the model ready to train (parameters frozen or adapted)."""


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
    own = {f.name for f in dataclasses.fields(strategy.options)}
    for key in raw:
        if key in own:
            continue
        users = [n for n in STRATEGIES.names() if key in {f.name for f in dataclasses.fields(STRATEGIES.get(n).options)}]
        if users:
            raise TunewiseError(
                f"strategy.{key}: does not apply to strategy '{strategy.name}'; it is an option of {', '.join(users)}"
                + (f" (options of {strategy.name}: {', '.join(sorted(own))})" if own else f" ({strategy.name} has no options)")
            )
    options = from_dict(strategy.options, raw, prefix="strategy")
    check = getattr(strategy, "check", None)
    if check is not None:
        check(options, config)
    return strategy, options


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
    fn = getattr(task, "backbone", None)
    return fn(model) if fn is not None else task.modules(model)


def head_modules_of(task: Any, model: Any) -> list:
    """New trainable heads of the task's model (none when the task does not say)."""
    fn = getattr(task, "head_modules", None)
    return list(fn(model)) if fn is not None else []


def add_head(task: Any, model: Any, dim: int | None, option: str = "strategy.head_dim") -> Any:
    fn = getattr(task, "add_head", None)
    if fn is None:
        raise TunewiseError(f"{option}: task '{task.spec.name}' cannot add a head; drop {option}")
    return fn(model, dim)


def eval_model(strategy: Any, model: Any, task: Any, options: Any, config: Any) -> Any:
    """What evaluation should score: the strategy's view of ``model`` (``head``: cached body
    outputs plus the head), or the model itself."""
    view = getattr(strategy, "eval_model", None)
    return view(model, task, options, config) if view is not None else model
