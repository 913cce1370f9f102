"""Strategies register on import: import this package to fill STRATEGIES."""

from tunewise.strategies import contrastive, full, head, lora, partial, qlora  # noqa: F401
from tunewise.strategies.base import STRATEGIES, StrategyInfo, count_params, resolve_strategy

__all__ = ["STRATEGIES", "StrategyInfo", "count_params", "resolve_strategy"]
