"""The time curve: improvement against training seconds from ONE training run.

Training the same model for 1, 2, ... 10 epochs costs 55 epochs of compute; evaluating one
10-epoch run after every epoch costs 10 epochs plus 10 evaluations. :class:`TimeCurveCallback`
is a transformers ``TrainerCallback`` that does the latter for any task: at every epoch end
(and every ``eval_steps`` optimizer steps when asked) it calls ``task.evaluate(model, data,
config)`` on the same evaluation set as the "before" score and records

    (epoch, training seconds so far with evaluation time taken out, metric).

The clock is stopped while evaluating, so the seconds are training only; evaluation seconds
are kept beside them. It works through ``task.train(..., callbacks=[cb])`` and through a
strategy's own ``train`` hook (``head`` trains a small module over cached features: the
callback holds the task's model, which shares the head's parameters, and evaluates that).

Caveat: epoch ``e`` of an ``E``-epoch run is not the same as a separate ``e``-epoch run,
because the learning-rate schedule decays over ``E`` epochs. The curve answers "when could I
have stopped this run", which is the question a time budget asks.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback


@dataclass
class CurvePoint:
    """One evaluation during training."""

    epoch: float
    step: int
    train_seconds: float  # since training began, evaluation excluded
    eval_seconds: float  # this evaluation alone
    metric: float
    metrics: dict[str, float]
    final: bool = False  # the run's last evaluation: the time run is complete


class TimeCurveCallback(TrainerCallback):
    """Evaluate the task's model at every epoch end (and every ``eval_steps`` steps).

    Args:
        task: the task object (its ``evaluate`` scores the model).
        model: the task's model being trained in place (not the Trainer's wrapper).
        data: the prepared data whose evaluation split is scored.
        config: the run config (``config.eval.primary`` is recorded as ``metric``).
        eval_steps: also evaluate every this many optimizer steps (None: epochs only).
        on_point: called with each :class:`CurvePoint` as soon as it exists (the sweep
            writes it to the result store at once).

    Call :meth:`start` just before training begins so that work a strategy does before the
    Trainer loop (``head`` builds its feature cache) counts as training time; without it the
    clock starts at ``on_train_begin``.
    """

    def __init__(self, task: Any, model: Any, data: Any, config: Any, *, eval_steps: int | None = None,
                 on_point: Callable[[CurvePoint], None] | None = None) -> None:
        if eval_steps is not None and eval_steps < 1:
            from tunewise.errors import TunewiseError

            raise TunewiseError(f"--eval-steps: must be at least 1, got {eval_steps}")
        self.task, self.model, self.data, self.config = task, model, data, config
        self.eval_steps = eval_steps
        self.on_point = on_point
        self.points: list[CurvePoint] = []
        self.eval_total = 0.0  # seconds spent in evaluations (taken out of training time)
        self._start: float | None = None
        self._last_step = -1

    def start(self) -> None:
        """Start the training clock now (before the task's or strategy's ``train``)."""
        self._start = time.perf_counter()
        self.eval_total = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        if self._start is None:
            self.start()

    def on_step_end(self, args, state, control, **kwargs):
        if self.eval_steps and state.global_step % self.eval_steps == 0:
            self._record(state)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._record(state)

    def on_train_end(self, args, state, control, **kwargs):
        if self.points and state.global_step == self._last_step:
            # Already evaluated at this step: send it again marked final (the store keeps one).
            self.points[-1] = dataclasses.replace(self.points[-1], final=True)
            if self.on_point is not None:
                self.on_point(self.points[-1])
            return
        self._record(state, final=True)  # e.g. a fractional last epoch that stopped on max_steps

    @property
    def loop_seconds(self) -> float:
        """Training seconds inside the Trainer loop so far (evaluation excluded)."""
        if self._start is None:
            return 0.0
        return time.perf_counter() - self._start - self.eval_total

    def _record(self, state, final: bool = False) -> None:
        if state.global_step == self._last_step:  # epoch end coinciding with a step evaluation
            return
        self._last_step = state.global_step
        seconds = self.loop_seconds
        was_training = getattr(self.model, "training", False)
        start = time.perf_counter()
        result = self.task.evaluate(self.model, self.data, self.config)
        took = time.perf_counter() - start
        self.eval_total += took
        if was_training and hasattr(self.model, "train"):
            self.model.train()
        point = CurvePoint(epoch=round(float(state.epoch or 0.0), 4), step=int(state.global_step),
                           train_seconds=seconds, eval_seconds=took,
                           metric=float(result.metrics[self.config.eval.primary]),
                           metrics={k: float(v) for k, v in result.metrics.items()}, final=final)
        self.points.append(point)
        if self.on_point is not None:
            self.on_point(point)
