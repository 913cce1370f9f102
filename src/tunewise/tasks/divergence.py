"""Stop a run whose training diverged, before anything that looks like a result is written.

A learning rate far too high (or a half-precision overflow) turns the loss and then the
weights into NaN or infinity. The Trainer keeps going: it even hides a NaN loss from its log
(``logging_nan_inf_filter``). A diverged model then scores near chance and would be
published as a result. :class:`DivergenceGuard` checks the gradients before every optimizer
step (one fused norm over the trainable gradients, about the cost of gradient clipping) and
the weights at the end, and raises :class:`Diverged`; the runner's staging folder is then
removed, so no output folder appears.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from tunewise.errors import TunewiseError


class Diverged(TunewiseError):
    """Training produced non-finite gradients or weights."""


def _advice(args: Any) -> str:
    lr = getattr(args, "learning_rate", None)
    half = getattr(args, "fp16", False) or getattr(args, "bf16", False)
    # the rate the trainer used: train.learning_rate, or a strategy's own (head: strategy.head_lr)
    now = f" (now {lr:g})" if lr is not None else ""
    tips = [f"lower the learning rate{now}: train.learning_rate, or the strategy's own rate such as strategy.head_lr"]
    if half:
        tips.append("or set train.precision: fp32")
    return "; ".join(tips)


def nonfinite_gradients(model: torch.nn.Module) -> bool:
    """True when any trainable parameter's gradient holds a NaN or an infinity."""
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    if not grads:
        return False
    norms = torch._foreach_norm(grads)  # one kernel per dtype/device group, not per tensor
    return not bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())


def nonfinite_weights(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters holding a NaN or an infinity, all parameters), counted in elements."""
    bad = total = 0
    for p in model.parameters():
        if p.is_floating_point():
            bad += int((~torch.isfinite(p.detach())).sum())
        total += p.numel()
    return bad, total


@functools.cache
def _guard_class() -> type:
    # transformers' TrainerCallback module imports peft (seconds): built on first use, not when
    # the task registry is filled (every config load imports this package).
    from transformers import TrainerCallback

    class DivergenceGuard(TrainerCallback):
        """Raise :class:`Diverged` on non-finite gradients (every step) or weights (at the end)."""

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):  # noqa: D102 - see class
            if model is not None and nonfinite_gradients(model):
                raise Diverged(
                    f"training diverged: the gradients became NaN or infinite at step {state.global_step + 1} of "
                    f"{state.max_steps} (epoch {state.epoch or 0:.2f}); nothing was saved. {_advice(args).capitalize()}"
                )

        def on_train_end(self, args, state, control, model=None, **kwargs):  # noqa: D102 - see class
            if model is None:
                return
            bad, total = nonfinite_weights(model)
            if bad:
                raise Diverged(f"training diverged: {bad:,} of {total:,} weights are NaN or infinite after training; "
                               f"nothing was saved. {_advice(args).capitalize()}")

    return DivergenceGuard


def __getattr__(name: str) -> Any:
    if name == "DivergenceGuard":  # a TrainerCallback subclass: the class is made on first use
        return _guard_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
