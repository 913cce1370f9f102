"""Learning rates and schedules shared by ``partial``, ``full``, ``lora`` and ``qlora``.

- separate learning rates for a new head and the backbone (low for the pre-trained weights,
  higher for the fresh head: the usual BERT recipe);
- layer-wise learning-rate decay: the backbone learning rate times ``layer_decay ** d`` where
  d counts layers from the top (Clark et al. 2020, ELECTRA, arXiv:2003.10555; Bao et al. 2021,
  BEiT, arXiv:2106.08254): the embeddings move least;
- gradual unfreezing: train the head and the top layer group first, then unfreeze one more
  group from the top every ``unfreeze_every`` epochs or steps (Howard & Ruder 2018, ULMFiT,
  arXiv:1801.06146).

All of it goes through the Trainer: param groups become the optimizer the Trainer steps and
schedules; unfreezing is a :class:`transformers.TrainerCallback`. The options are the
``schedule`` part of those strategies' options (:mod:`tunewise.strategies.options`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError
from tunewise.strategies.base import add_head, backbone_of, head_modules_of
from tunewise.strategies.layers import layer_map


@dataclass
class ScheduleOptions:
    """Learning-rate options shared by the strategies whose backbone trains."""

    head_lr: float | None = field(default=None, metadata={"help": "Learning rate of the new head (default train.learning_rate)."})
    backbone_lr: float | None = field(default=None, metadata={"help": "Learning rate of the backbone (default train.learning_rate)."})
    layer_decay: float | None = field(default=None, metadata={"help": "Layer-wise decay in (0, 1]: layer d from the top gets "
                                                                                "backbone_lr * decay**d."})
    unfreeze_every: int | None = field(default=None, metadata={"help": "Gradual unfreezing: one more layer group from the top every N epochs (or "
        "steps)."})
    unfreeze_unit: str = field(default="epoch", metadata={"help": "epoch or steps: what unfreeze_every counts."})
    head_dim: int | None = field(default=None, metadata={"help": "Add a new trainable projection head with this output dimension."})

    def __post_init__(self) -> None:
        for name in ("head_lr", "backbone_lr"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise TunewiseError(f"strategy.{name}: must be positive, got {value}")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise TunewiseError(f"strategy.layer_decay: must be in (0, 1], got {self.layer_decay}; e.g. 0.9")
        if self.unfreeze_every is not None and self.unfreeze_every < 1:
            raise TunewiseError(f"strategy.unfreeze_every: must be at least 1, got {self.unfreeze_every}")
        if self.unfreeze_unit not in ("epoch", "steps"):
            raise TunewiseError(f"strategy.unfreeze_unit: use epoch or steps, got '{self.unfreeze_unit}'")
        if self.unfreeze_unit != "epoch" and self.unfreeze_every is None:
            raise TunewiseError("strategy.unfreeze_unit: set strategy.unfreeze_every too (e.g. unfreeze_every: 50)")
        if self.head_dim is not None and self.head_dim < 1:
            raise TunewiseError(f"strategy.head_dim: must be at least 1, got {self.head_dim}")


def prepare_head(model: Any, task: Any, options: ScheduleOptions) -> Any:
    """Add the head asked for with ``head_dim``; check that ``head_lr`` has a head to act on."""
    if options.head_dim is not None:
        model = add_head(task, model, options.head_dim)
    if options.head_lr is not None and not any(p.numel() for m in head_modules_of(task, model) for p in m.parameters()):
        raise TunewiseError(
            "strategy.head_lr: this model has no new head to train; add one with strategy.head_dim, "
            "or set strategy.backbone_lr / train.learning_rate instead"
        )
    return model


def _depth_index(task: Any, model: Any) -> tuple[dict[int, int], int]:
    """id(parameter) -> layer id (0 embeddings .. depth + 1 top) for the backbone's parameters."""
    backbone = backbone_of(task, model)
    lm = layer_map(backbone)
    params = dict(backbone.named_parameters())
    return {id(params[n]): lm.depth_of(n) for n in params}, lm.depth


def param_groups(model: Any, task: Any, options: ScheduleOptions, config: RunConfig) -> list[dict[str, Any]] | None:
    """Optimizer param groups for the trainable parameters, or None for the Trainer's default.

    Weight decay follows the Trainer's rule (none on biases and norms). Each group carries a
    ``name`` ("head", "layer 3", ...) so its learning rate can be read back.
    """
    if options.head_lr is None and options.backbone_lr is None and options.layer_decay is None:
        return None
    from transformers import Trainer

    base_lr = options.backbone_lr or config.train.learning_rate
    head_lr = options.head_lr or config.train.learning_rate
    modules = task.modules(model)
    head_ids = {id(p) for m in head_modules_of(task, model) for p in m.parameters()}
    depth_of, depth = _depth_index(task, model) if options.layer_decay is not None else ({}, 0)
    decay_names = set(Trainer.get_decay_parameter_names(None, modules))
    groups: dict[tuple[str, float, float], list] = {}
    for name, p in modules.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in head_ids:
            label, lr = "head", head_lr
        elif options.layer_decay is not None:
            d = depth_of.get(id(p), depth + 1)
            label, lr = f"layer {d}", base_lr * options.layer_decay ** (depth + 1 - d)
        else:
            label, lr = "backbone", base_lr
        wd = config.train.weight_decay if name in decay_names else 0.0
        groups.setdefault((label, lr, wd), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd, "name": label} for (label, lr, wd), ps in groups.items()]


def unfreeze_stages(model: Any, task: Any) -> list[list]:
    """Trainable parameters in unfreezing order: [head + top + last block], [the block below], ..., [embeddings]."""
    head = [p for m in head_modules_of(task, model) for p in m.parameters() if p.requires_grad]
    head_ids = {id(p) for p in head}
    depth_of, depth = _depth_index(task, model)
    by_depth: dict[int, list] = {}
    rest = []
    for p in task.modules(model).parameters():
        if not p.requires_grad or id(p) in head_ids:
            continue
        if id(p) in depth_of:
            by_depth.setdefault(depth_of[id(p)], []).append(p)
        else:
            rest.append(p)  # outside the backbone and not a head (e.g. a task's own layers): trains from the start
    # Stage 0 is the head with the top block: a head alone may be empty (a plain encoder) or
    # get no gradient (BERT's unused pooler), and an epoch that trains nothing is wasted.
    stages = [head + rest + by_depth.pop(depth + 1, [])]
    for d in range(depth, -1, -1):
        if d not in by_depth:
            continue
        if d == depth or not stages[-1]:
            stages[-1] = stages[-1] + by_depth[d]
        else:
            stages.append(by_depth[d])
    return [s for s in stages if s]


def make_unfreezing_callback(model: Any, task: Any, options: ScheduleOptions):
    """A TrainerCallback that unfreezes one layer group from the top every ``unfreeze_every`` epochs/steps."""
    from transformers import TrainerCallback

    stages = unfreeze_stages(model, task)
    every, unit = options.unfreeze_every, options.unfreeze_unit

    class GradualUnfreezing(TrainerCallback):
        """Stage k trains stages[0..k]; parameters of later stages keep requires_grad False."""

        def __init__(self) -> None:
            self.stages = stages
            self.active = -1
            self.log: list[dict[str, Any]] = []

        def _set(self, stage: int, state) -> None:
            stage = min(stage, len(self.stages) - 1)
            if stage == self.active:
                return
            for i, params in enumerate(self.stages):
                for p in params:
                    p.requires_grad_(i <= stage)
            self.active = stage
            self.log.append({"step": state.global_step, "epoch": state.epoch, "stage": stage,
                             "trainable_params": sum(p.numel() for s in self.stages[: stage + 1] for p in s)})

        def on_train_begin(self, args, state, control, **kwargs):
            self._set(0, state)

        def on_epoch_begin(self, args, state, control, **kwargs):
            if unit == "epoch":
                self._set(int(round(state.epoch or 0)) // every, state)

        def on_step_begin(self, args, state, control, **kwargs):
            if unit == "steps":
                self._set(state.global_step // every, state)

        def on_train_end(self, args, state, control, **kwargs):
            for params in self.stages:  # the model leaves training as prepared
                for p in params:
                    p.requires_grad_(True)

    return GradualUnfreezing()


def schedule_callbacks(model: Any, task: Any, options: ScheduleOptions, config: RunConfig) -> list:
    if options.unfreeze_every is None:
        return []
    return [make_unfreezing_callback(model, task, options)]


# The HasParamGroups and HasCallbacks hooks (tunewise.strategies.base) of every strategy whose
# options have a ``schedule`` part: full, partial, lora, qlora.


def param_groups_hook(model: Any, task: Any, options: Any, config: RunConfig) -> list[dict[str, Any]] | None:
    """``param_groups`` of a strategy whose options have a ``schedule`` part."""
    return param_groups(model, task, options.schedule, config)


def callbacks_hook(model: Any, task: Any, options: Any, config: RunConfig) -> list:
    """``callbacks`` of a strategy whose options have a ``schedule`` part."""
    return schedule_callbacks(model, task, options.schedule, config)
