"""Trainer progress: keep the tqdm bar, drop the raw ``{'loss': ...}`` dict lines it prints.

The losses are still recorded in the trainer's log history; tunewise reports what matters
(metrics, seconds, memory) itself. Every task's Trainer should call :func:`quiet_progress`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Iterator
from typing import Any


@functools.cache
def _bar_only_progress() -> type:
    # transformers' trainer modules import peft (seconds): only when a trainer is built, not
    # when the task registry is filled (every config load imports this package).
    from transformers.trainer_callback import ProgressCallback

    class BarOnlyProgress(ProgressCallback):
        """ProgressCallback without the per-log dict printout (which goes to stdout)."""

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D102 - see class docstring
            return None

    return BarOnlyProgress


def __getattr__(name: str) -> Any:
    if name == "BarOnlyProgress":
        return _bar_only_progress()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def quiet_progress(trainer) -> None:
    """Swap the trainer's ProgressCallback for ``BarOnlyProgress`` (if it has one)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    BarOnlyProgress = _bar_only_progress()
    callbacks = trainer.callback_handler.callbacks
    if any(isinstance(cb, ProgressCallback) for cb in callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(BarOnlyProgress())
    if any(isinstance(cb, PrinterCallback) for cb in callbacks):  # used where tqdm is off (non-zero ranks)
        trainer.remove_callback(PrinterCallback)


@contextlib.contextmanager
def hidden_bars(*libraries: str) -> Iterator[None]:
    """Hide the library progress bars of ``libraries`` ("transformers": "Loading weights", "Writing
    model shards"; "datasets": map/filter passes) for the block; the Trainer's own bar stays."""
    modules = [importlib.import_module(f"{lib}.utils.logging") for lib in libraries]
    enabled = [m.is_progress_bar_enabled() for m in modules]
    for m in modules:
        m.disable_progress_bar()
    try:
        yield
    finally:
        for m, was in zip(modules, enabled):
            if was:
                m.enable_progress_bar()
