"""Training progress you can see: one bar in a terminal, one line per epoch in a log.

Every task's Trainer calls :func:`quiet_progress`, which swaps the Trainer's own progress
callbacks (a tqdm bar that also prints raw ``{'loss': ...}`` dicts, or, where tqdm is off
because transformers' logging is quieted, a printer of those dicts) for
:class:`TrainingProgress`:

- on a terminal, a rich bar with steps, epoch, the last logged loss, elapsed time and ETA
  (and an evaluation bar while the Trainer evaluates); inside another live display (the
  budget sweep's bar) it nests under it;
- elsewhere (a log file, CI), one line per epoch: step, loss, the epoch's evaluation, ETA.

The console is the run's (:func:`training_console`: ``fit`` passes its own, so a quiet
console silences the bar too); without one, standard error.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console


@dataclass(frozen=True)
class _Target:
    console: Console
    transient: bool  # the bar disappears when training ends (a sweep point under the sweep's bar)
    views: list = field(default_factory=list)  # open bars: closed when the block ends (an exception skips on_train_end)


_TARGET: contextvars.ContextVar[_Target | None] = contextvars.ContextVar("tunewise_training_console", default=None)

# logged keys that are bookkeeping, not a result worth a place on the line
_NOT_SHOWN = ("runtime", "samples_per_second", "steps_per_second", "total_flos", "epoch", "learning_rate", "grad_norm")


@functools.cache
def stderr_console() -> Console:
    """The console training bars use when nobody set one: standard error, shared so that a
    bar started while another live display runs on it nests under that one."""
    return Console(stderr=True)


@contextlib.contextmanager
def training_console(console: Console, *, transient: bool = False) -> Iterator[None]:
    """Show the training bars of the block on ``console`` (a quiet console: no bar, no lines).

    Args:
        transient: remove each finished bar (sweep points under the sweep's bar); otherwise the
            finished bar stays as the record of the run.
    """
    target = _Target(console, transient)
    token = _TARGET.set(target)
    try:
        yield
    finally:
        _TARGET.reset(token)
        for view in list(target.views):  # training stopped by an exception: give the terminal back
            view.close()


def _target() -> _Target:
    return _TARGET.get() or _Target(stderr_console(), True)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def evaluation_text(logs: dict[str, Any]) -> str:
    """``accuracy 0.81, loss 0.42`` from a Trainer evaluation log (``eval_accuracy``...; bookkeeping left out)."""
    shown = [(k.removeprefix("eval_"), v) for k, v in logs.items()
             if k.startswith("eval_") and not k.endswith(_NOT_SHOWN) and isinstance(v, (int, float))]
    return ", ".join(f"{k} {_number(v)}" for k, v in shown)


class _Bar:
    """A rich bar on a terminal: steps, epoch, loss, elapsed, ETA; evaluations as a second bar."""

    def __init__(self, target: _Target, total_steps: int, epochs: float) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.epochs = epochs
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
            TextColumn("{task.fields[epoch]}"), TextColumn("{task.fields[loss]}"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=target.console, transient=target.transient)
        self.task = self.progress.add_task("training", total=max(total_steps, 1), epoch=self._epoch(0.0), loss="loss -")
        self.eval_task: Any = None
        self.progress.start()

    def _epoch(self, epoch: float) -> str:
        return f"epoch {epoch:.2f}/{self.epochs:g}"

    def step(self, step: int, epoch: float) -> None:
        self.progress.update(self.task, completed=step, epoch=self._epoch(epoch))

    def log(self, logs: dict[str, Any], step: int, epoch: float) -> None:
        if "loss" in logs:
            self.progress.update(self.task, loss=f"loss {_number(logs['loss'])}")

    def eval_step(self, total: int) -> None:
        if self.eval_task is None:
            self.eval_task = self.progress.add_task("evaluating", total=max(total, 1), epoch="", loss="")
        self.progress.advance(self.eval_task)

    def eval_done(self) -> None:
        if self.eval_task is not None:
            self.progress.remove_task(self.eval_task)
            self.eval_task = None

    def new_epoch(self) -> None:
        return None

    def close(self) -> None:
        self.eval_done()
        self.progress.stop()


class _Lines:
    """No terminal: one line per epoch (step, loss, the epoch's evaluation, elapsed, ETA)."""

    def __init__(self, target: _Target, total_steps: int, epochs: float) -> None:
        self.console, self.total, self.epochs = target.console, max(total_steps, 1), epochs
        self.start = time.perf_counter()
        self.pending: list[str] = []  # the epoch's line, waiting for the evaluation that follows its loss
        self.step_now = 0

    def step(self, step: int, epoch: float) -> None:
        self.step_now = step

    def log(self, logs: dict[str, Any], step: int, epoch: float) -> None:
        if "loss" in logs and not any(k.startswith("eval_") for k in logs):
            self.flush()
            elapsed = time.perf_counter() - self.start
            eta = elapsed / max(step, 1) * (self.total - step)
            self.pending = [f"training: epoch {epoch:.4g}/{self.epochs:g}, step {step}/{self.total}, "
                            f"loss {_number(logs['loss'])}", f"{_clock(elapsed)} elapsed, ETA {_clock(eta)}"]
        elif text := evaluation_text(logs):
            if self.pending:
                self.pending.insert(1, f"validation ({text})")
            else:
                self.console.print(f"training: validation at step {step} ({text})", markup=False, highlight=False, soft_wrap=True)

    def flush(self) -> None:
        if self.pending:
            self.console.print(", ".join(self.pending), markup=False, highlight=False, soft_wrap=True)
            self.pending = []

    def eval_step(self, total: int) -> None:
        return None

    def eval_done(self) -> None:
        return None

    def new_epoch(self) -> None:
        self.flush()

    def close(self) -> None:
        self.flush()


@functools.cache
def _training_progress() -> type:
    # transformers' trainer modules import peft (seconds): only when a trainer is built, not
    # when the task registry is filled (every config load imports this package).
    from transformers.trainer_callback import TrainerCallback
    from transformers.trainer_utils import has_length

    class TrainingProgress(TrainerCallback):
        """One bar (terminal) or one line per epoch (log) for a Trainer's run; see the module docstring."""

        def __init__(self) -> None:
            self.view: _Bar | _Lines | None = None
            self.target: _Target | None = None
            self.bars_were_on = False

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: D102 - see class docstring
            from transformers.utils import logging as hf_logging

            target = _target()
            if not state.is_world_process_zero or target.console.quiet:
                return
            # checkpoint saves draw "Writing model shards" bars mid-training: this bar is the one shown
            self.bars_were_on = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            epochs = float(state.num_train_epochs or args.num_train_epochs)
            view = _Bar if target.console.is_terminal else _Lines
            self.view, self.target = view(target, int(state.max_steps), epochs), target
            target.views.append(self.view)

        def on_step_end(self, args, state, control, **kwargs):  # noqa: D102
            if self.view is not None:
                self.view.step(state.global_step, float(state.epoch or 0.0))

        def on_epoch_begin(self, args, state, control, **kwargs):  # noqa: D102
            if self.view is not None:
                self.view.new_epoch()

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D102
            if self.view is not None and logs:
                self.view.log(logs, state.global_step, float(logs.get("epoch", state.epoch or 0.0)))

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):  # noqa: D102
            if self.view is not None and has_length(eval_dataloader):
                self.view.eval_step(len(eval_dataloader))

        def on_evaluate(self, args, state, control, **kwargs):  # noqa: D102
            if self.view is not None:
                self.view.eval_done()

        def on_train_end(self, args, state, control, **kwargs):  # noqa: D102
            from transformers.utils import logging as hf_logging

            if self.view is not None:
                self.view.close()
                self.target.views.remove(self.view)
                self.view = None
                if self.bars_were_on:
                    hf_logging.enable_progress_bar()

    return TrainingProgress


def __getattr__(name: str) -> Any:
    if name == "TrainingProgress":
        return _training_progress()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def quiet_progress(trainer) -> None:
    """Give the trainer tunewise's :class:`TrainingProgress` in place of its own progress callbacks
    (the tqdm bar that prints raw log dicts, and the dict printer used where tqdm is off).

    Every task calls this once on each Trainer it builds.
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    progress = _training_progress()
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if not any(isinstance(cb, progress) for cb in trainer.callback_handler.callbacks):
        trainer.add_callback(progress())


@contextlib.contextmanager
def work_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A bar for a loop that is not a Trainer's (evaluation, generation, prediction) on the run's
    console: ``advance(n)`` after each batch. Shown on a terminal only, and gone when the loop ends.

    Example::

        with work_progress("generating", len(examples)) as advance:
            for batch in batches:
                ...
                advance(len(batch))
    """
    console = _target().console
    if console.quiet or not console.is_terminal or total <= 0:
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


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
