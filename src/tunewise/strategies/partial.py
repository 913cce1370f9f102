"""``partial``: the embeddings and the first N transformer layers stay frozen; the rest trains.

Lower layers hold general features and move little in fine-tuning anyway (Zeiler & Fergus 2013;
Howard & Ruder 2018), so freezing them saves optimizer memory and backward compute and guards
the pre-trained knowledge. N is a count (``frozen_layers``) or a share of the depth
(``frozen_fraction``, default 0.5); the layers are found by :mod:`tunewise.strategies.layers`.
Their outputs never change, so they are computed once per text and cached (``cache``, on by
default; :mod:`tunewise.strategies.partial_cache`): training, evaluation and budget points start
at the first trainable layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError
from tunewise.strategies.base import DEFAULT_LR, STRATEGIES, backbone_of, head_modules_of
from tunewise.strategies.layers import layer_map, n_frozen_layers
from tunewise.strategies.options import WiseFTOptions, part
from tunewise.strategies.partial_cache import CachedLayersView, cache_callback, layer_cache_for
from tunewise.strategies.schedule import ScheduleOptions, callbacks_hook, param_groups_hook, prepare_head


@dataclass
class FreezeOptions:
    """Which bottom layers stay frozen."""

    frozen_layers: int | None = field(default=None, metadata={"help": "Freeze the embeddings and this many bottom layers (0..depth)."})
    frozen_fraction: float | None = field(default=None, metadata={"help": "Or: freeze this share of the layers, in [0, 1] (default 0.5)."})
    cache: bool = field(default=True, metadata={"help": "Cache the frozen layers' outputs per text (memory + disk, "
                                                "fp16) so training and evaluation start above them; false runs them every step."})

    def __post_init__(self) -> None:
        if self.frozen_layers is not None and self.frozen_fraction is not None:
            raise TunewiseError("strategy.frozen_layers and strategy.frozen_fraction: give one of them, not both")
        if self.frozen_layers is not None and self.frozen_layers < 0:
            raise TunewiseError(f"strategy.frozen_layers: must be 0 or more, got {self.frozen_layers}")
        if self.frozen_fraction is not None and not 0.0 <= self.frozen_fraction <= 1.0:
            raise TunewiseError(f"strategy.frozen_fraction: must be in [0, 1], got {self.frozen_fraction}")


@dataclass
class PartialOptions:
    """Freeze the embeddings and the bottom layers; the rest trains with the shared learning-rate options."""

    schedule: ScheduleOptions = part(ScheduleOptions)
    wiseft: WiseFTOptions = part(WiseFTOptions)
    freeze: FreezeOptions = part(FreezeOptions)


@STRATEGIES.register("partial")
class PartialStrategy:
    name = "partial"
    default_learning_rate = DEFAULT_LR  # train.learning_rate when the config leaves it empty
    options = PartialOptions

    @staticmethod
    def prepare(model: Any, task: Any, options: PartialOptions, config: RunConfig) -> Any:
        backbone = backbone_of(task, model)
        lm = layer_map(backbone)
        n = n_frozen_layers(lm.depth, options.freeze.frozen_layers, options.freeze.frozen_fraction)
        model = prepare_head(model, task, options.schedule)
        for p in task.modules(model).parameters():
            p.requires_grad_(True)
        frozen = set(lm.embeddings) | {name for block in lm.blocks[:n] for name in block}
        for name, p in backbone.named_parameters():
            if name in frozen:
                p.requires_grad_(False)
        if n == lm.depth and not any(p.numel() for m in head_modules_of(task, model) for p in m.parameters()):
            raise TunewiseError(
                f"strategy.frozen_layers: freezing all {lm.depth} layers leaves nothing to train; "
                f"use at most {lm.depth - 1}, or strategy: head"
            )
        return model

    param_groups = staticmethod(param_groups_hook)

    @staticmethod
    def callbacks(model: Any, task: Any, options: PartialOptions, config: RunConfig) -> list:
        """The schedule's callbacks, and one that reads the frozen layers from the cache while training runs."""
        cache = layer_cache_for(model, task, options, config)
        return [*callbacks_hook(model, task, options, config), *([cache_callback(cache)] if cache is not None else [])]

    @staticmethod
    def eval_model(model: Any, task: Any, options: PartialOptions, config: RunConfig) -> Any:
        """The model, with its frozen layers' outputs read from the cache while it evaluates."""
        cache = layer_cache_for(model, task, options, config)
        return CachedLayersView(model, cache) if cache is not None else model
