"""``full``: every parameter trains (the default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunewise.config import RunConfig
from tunewise.strategies.base import STRATEGIES


@dataclass
class FullOptions:
    """Full fine-tuning has no options: everything trains."""


@STRATEGIES.register("full")
class FullStrategy:
    name = "full"
    options = FullOptions

    @staticmethod
    def prepare(model: Any, task: Any, options: FullOptions, config: RunConfig) -> Any:
        for p in task.modules(model).parameters():
            p.requires_grad_(True)
        return model
