"""Strategies: how much of a pre-trained model trains. A registry keyed by the name users type.

Each strategy is a module with one validated options dataclass and a ``prepare`` function
that freezes, unfreezes or wraps the task's model before training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

from tunewise.config import RunConfig, from_dict
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


def resolve_strategy(config: RunConfig) -> tuple[Any, Any]:
    """The strategy object and its validated options, from ``config.strategy``."""
    strategy = STRATEGIES.get(config.strategy_name)
    raw = {k: v for k, v in config.strategy.items() if k != "name"}
    options = from_dict(strategy.options, raw, prefix="strategy")
    return strategy, options


def count_params(module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    return trainable, total
