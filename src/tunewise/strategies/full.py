"""``full``: every parameter trains (the default).

Takes the shared learning-rate options (:mod:`tunewise.strategies.schedule`): a new head
with its own learning rate, layer-wise decay and gradual unfreezing. With none of them set
it behaves exactly as before: the Trainer's optimizer over every parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunewise.config import RunConfig
from tunewise.strategies.base import DEFAULT_LR, STRATEGIES
from tunewise.strategies.options import WiseFTOptions, part
from tunewise.strategies.schedule import ScheduleOptions, callbacks_hook, param_groups_hook, prepare_head


@dataclass
class FullOptions:
    """Full fine-tuning: everything trains; learning-rate and WiSE-FT options are optional."""

    schedule: ScheduleOptions = part(ScheduleOptions)
    wiseft: WiseFTOptions = part(WiseFTOptions)


@STRATEGIES.register("full")
class FullStrategy:
    name = "full"
    default_learning_rate = DEFAULT_LR  # train.learning_rate when the config leaves it empty
    options = FullOptions

    @staticmethod
    def prepare(model: Any, task: Any, options: FullOptions, config: RunConfig) -> Any:
        model = prepare_head(model, task, options.schedule)
        for p in task.modules(model).parameters():
            p.requires_grad_(True)
        return model

    param_groups = staticmethod(param_groups_hook)
    callbacks = staticmethod(callbacks_hook)
