"""The training-curve plot of a run: loss and the evaluation metric per step, from the
Trainer's log history (``trainer.state.log_history``).

Drawn with the budget report's plotting helpers (:mod:`tunewise.report.plots`: a matplotlib
Figure on an Agg canvas, written atomically).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CURVE_FILE = "training_curve.png"


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` over the log entries that carry it as a finite number."""
    pairs = [(float(h["step"]), float(h[key])) for h in history
             if isinstance(h.get(key), (int, float)) and isinstance(h.get("step"), (int, float)) and math.isfinite(h[key])]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def metric_keys(history: Sequence[dict[str, Any]], metric: str | None) -> list[str]:
    """The log keys holding evaluations of ``metric`` during training (``eval_accuracy``,
    ``eval_val_mrr@20``: sentence-transformers names its evaluator), in order of appearance."""
    if not metric:
        return []
    keys: list[str] = []
    for entry in history:
        for key in entry:
            if key.startswith("eval_") and key != "eval_loss" and (key == f"eval_{metric}" or key.endswith(f"_{metric}")):
                if key not in keys:
                    keys.append(key)
    return keys


def plot_training_curve(history: Sequence[dict[str, Any]], path: str | os.PathLike[str], *,
                        metric: str | None = None) -> Path | None:
    """Write the loss (training, and validation when evaluated) and ``metric``'s evaluations
    against the optimizer step.

    Args:
        history: the Trainer's ``state.log_history`` (dicts with ``step`` and logged values).
        path: the PNG to write.
        metric: the evaluation metric to draw on a second axis (the run's primary metric).

    Returns:
        The written path, or None when the history holds no loss or metric to draw (nothing is written).
    """
    from tunewise.report.plots import _figure, _save

    loss = _series(history, "loss")
    eval_loss = _series(history, "eval_loss")
    metrics = [(key, _series(history, key)) for key in metric_keys(history, metric)]
    metrics = [(key, s) for key, s in metrics if s[0]]
    if not loss[0] and not eval_loss[0] and not metrics:
        return None
    fig, ax = _figure()
    lines = []
    if loss[0]:
        lines += ax.plot(*loss, marker="o", color="tab:blue", label="training loss")
    if eval_loss[0]:
        lines += ax.plot(*eval_loss, marker="s", linestyle="--", color="tab:cyan", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if metrics:
        right = ax.twinx()
        for (key, series), color in zip(metrics, ("tab:orange", "tab:red", "tab:green")):
            lines += right.plot(*series, marker="^", color=color, label=f"{key.removeprefix('eval_')} (validation)")
        right.set_ylabel(metric)
    ax.legend(lines, [line.get_label() for line in lines], loc="best", fontsize=8)
    epochs = [h.get("epoch") for h in history if isinstance(h.get("epoch"), (int, float))]
    title = "training curve" + (f" ({max(epochs):g} epochs)" if epochs else "")
    ax.set_title(title)
    return _save(fig, path)
