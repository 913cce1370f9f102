"""Strategy ``partial``'s frozen-layer cache, wired into a run: the training callback and the evaluation view.

:mod:`tunewise.models.layer_cache` does the caching; this module builds the cache for a task's
model (its backbone, the frozen block count, the run's precision and sequence length) and
switches it on while training runs (:func:`cache_callback`) and while the task evaluates
(:class:`CachedLayersView`). The evaluation before training fills the cache for the eval
corpus; training fills it for the training texts; the evaluation after, and every budget
point, read it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from tunewise.config import RunConfig
from tunewise.strategies.base import backbone_of
from tunewise.strategies.layers import layer_map, n_frozen_layers


def layer_cache_for(model: Any, task: Any, options: Any, config: RunConfig):
    """The :class:`~tunewise.models.layer_cache.FrozenLayerCache` of ``model``'s frozen layers, or
    None (``strategy.cache: false``, no frozen block, or an architecture it does not cover)."""
    if not options.freeze.cache:
        return None
    import torch

    from tunewise.models.layer_cache import frozen_layer_cache
    from tunewise.precision import run_precision

    backbone = backbone_of(task, model)
    if not isinstance(backbone, torch.nn.Module):
        return None
    try:
        depth = layer_map(backbone).depth
    except Exception:  # not a layered model: the plain forward
        return None
    n = n_frozen_layers(depth, options.freeze.frozen_layers, options.freeze.frozen_fraction)
    param = next(backbone.parameters(), None)
    device = str(param.device) if param is not None else "cpu"
    max_length = getattr(model, "max_seq_length", None) or config.train.max_seq_length
    # fp32 rows: the cached forward equals the plain one, so "before" is the same evaluation under every strategy
    return frozen_layer_cache(backbone, n, precision=run_precision(config, device), max_length=max_length, storage=torch.float32)


def cache_callback(cache: Any):
    """A TrainerCallback that reads the frozen layers from ``cache`` between train begin and end."""
    from transformers import TrainerCallback

    class FrozenLayerCacheCallback(TrainerCallback):
        def __init__(self) -> None:
            self.stack = contextlib.ExitStack()
            self.cache = cache

        def on_train_begin(self, args, state, control, **kwargs):
            self.stack.enter_context(cache.active())

        def on_train_end(self, args, state, control, **kwargs):
            self.stack.close()

    return FrozenLayerCacheCallback()


class CachedLayersView:
    """``model`` for evaluation: every attribute is the model's, and ``encode`` / calls run with the
    frozen layers read from the cache."""

    def __init__(self, model: Any, cache: Any) -> None:
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "layer_cache", cache)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._model, name, value)

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        with self.layer_cache.active():
            return self._model.encode(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.layer_cache.active():
            return self._model(*args, **kwargs)
