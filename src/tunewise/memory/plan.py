"""A memory plan: the one function behind ``tunewise memory`` and :func:`tunewise.memory.estimate_memory`.

:func:`plan` takes a run described by its options and a registered task name. It asks the
task registry for the task's memory profile (``spec.memory``: the step model, inputs per
example) and where its model comes from, reads the architecture the way that task loads its
model (a config, or for image backbones without one the image tasks' own loader), picks the
device, estimates, says whether the run fits and which changes would, and on CPU applies the
allocator a run would choose (``train.cpu_allocator``). The command line only parses and
prints, so it reports the same total as the library for the same run.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields, replace
from typing import Any

from tunewise.errors import TunewiseError, did_you_mean
from tunewise.memory.advise import (
    DEFAULT_HEADROOM,
    Advice,
    advise,
    available_memory,
    parse_memory_size,
)
from tunewise.memory.allocator import (
    CPU_ALLOCATORS,
    cpu_allocator_choice,
    with_cpu_allocator,
)
from tunewise.memory.architecture import ArchSpec, load_arch
from tunewise.memory.estimate import DEFAULT_LORA_DROPOUT, MemoryEstimate
from tunewise.memory.steps import StepModel, check_family, step_model

DEFAULT_SEQ_LEN = 128
DEFAULT_IMAGE_SIZE = 224  # image.size's default


@dataclass(frozen=True)
class MemoryPlan:
    """A run's estimate, whether it fits, and the allocator it assumes.

    Attributes:
        task: the registered task name.
        spec: the architecture read.
        settings: the estimator's keyword arguments (:func:`tunewise.memory.estimate.estimate`).
        advice: the estimate, the memory it was compared with, and alternatives that fit.
        cpu_allocator: "trim" or "default" on CPU (the estimate includes glibc's retention
            for "default"); "n/a (cuda)" on a GPU.
    """

    task: str
    spec: ArchSpec
    settings: dict
    advice: Advice
    cpu_allocator: str

    @property
    def estimate(self) -> MemoryEstimate:
        return self.advice.estimate

    def as_dict(self) -> dict:
        return {"task": self.task, "model": self.spec.source, "cpu_allocator": self.cpu_allocator,
                "estimate": self.estimate.as_dict(), "advice": self.advice.as_dict()}


def task_memory(task: str) -> tuple[str, Any, Any]:
    """(registered name, task object, its :class:`~tunewise.tasks.base.MemoryProfile`) of ``task``.

    Raises:
        TunewiseError: an unknown task, or one whose runs are measured but not estimated.
    """
    from tunewise.tasks import TASKS

    name = TASKS.canonical(task)
    task_obj = TASKS.get(name)()
    profile = task_obj.spec.memory
    if profile is None:
        raise TunewiseError(f"task: {name} declares no memory profile; its runs are measured, not estimated")
    return name, task_obj, profile


def default_task() -> str:
    """The task of a run config that names none."""
    from tunewise.config import RunConfig

    return next(f.default for f in fields(RunConfig) if f.name == "task")


def tasks_for(family: str) -> list[str]:
    """The registered tasks whose step model trains a ``family`` model."""
    from tunewise.tasks import TASKS

    out = []
    for name in TASKS:
        profile = TASKS.get(name).spec.memory
        if profile is not None and family in step_model(profile.step).families:
            out.append(name)
    return out


def model_source(task_obj: Any, task: str, model: Any) -> Any:
    """Where ``task`` loads ``model`` from: the task's own answer when it has one (a packaged default)."""
    from tunewise.tasks.base import HasModelSource

    if not isinstance(task_obj, HasModelSource) or not (model is None or isinstance(model, str)):
        return model
    from tunewise.config import load_config

    return task_obj.model_source(load_config(None, values={"task": task, "model": model}))


def arch_for_step(model: Any, step: StepModel, image_size: int | None = None, **overrides: Any) -> ArchSpec:
    """The architecture of ``model`` as a task training with ``step`` loads it.

    Image steps name backbones as :mod:`tunewise.models.vision` does (None: the packaged
    EfficientNet-Lite0); those without a config are loaded and traced
    (:mod:`tunewise.memory.traced`). Everything else is read from its config
    (:func:`~tunewise.memory.architecture.load_arch`).
    """
    from tunewise.memory.traced import is_vision_backbone, load_vision_arch

    image_only = set(step.families) <= {"vit", "cnn"}
    if image_only and overrides.get("family") is None and is_vision_backbone(model):
        spec = load_vision_arch(model, image_size or DEFAULT_IMAGE_SIZE)
        return load_arch(spec, **overrides)
    return load_arch(model, **overrides)


def default_seq_len(spec: ArchSpec) -> int:
    """128 tokens, or the text tower's limit when it has fewer positions (CLIP's 77)."""
    text = [t for t in (spec.towers or (spec,)) if t.family in ("encoder", "decoder")]
    return min([DEFAULT_SEQ_LEN] + [t.max_positions for t in text if t.max_positions])


def resolve_device(device: str, budget_given: bool) -> str:
    """``auto``: cuda when present, or when a device memory is given (planning for a GPU elsewhere)."""
    if device not in ("auto", "cpu") and not str(device).startswith("cuda"):
        raise TunewiseError(f"--device: unknown '{device}'; use auto, cpu or cuda")
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() or budget_given else "cpu"


def plan(
    model: Any = None,
    *,
    task: str | None = None,
    strategy: str = "full",
    precision: str = "fp32",
    optimizer: str = "adamw",
    batch_size: int = 16,
    seq_len: int | None = None,
    gradient_checkpointing: bool = False,
    lora_rank: int = 8,
    lora_targets: tuple[str, ...] | None = None,
    lora_dropout: float | None = None,
    image_size: int | None = None,
    texts_per_example: int | None = None,
    trainable_layers: int | None = None,
    num_labels: int = 2,
    device: str = "auto",
    device_memory: str | int | None = None,
    headroom: float = DEFAULT_HEADROOM,
    cpu_allocator: str = "auto",
    overhead_bytes: int | None = None,
    fused_lm_head: bool = True,
    **arch_overrides: Any,
) -> MemoryPlan:
    """Plan the memory of fine-tuning ``model`` for ``task`` (weights are never loaded, except
    image backbones without a config, which are loaded once and traced).

    Args:
        model: local folder, hub id, transformers config object, :class:`ArchSpec`, or None
            (the task's default: the packaged MiniLM, EfficientNet-Lite0 for image tasks, the
            packaged LM for LLM tasks; nothing when ``family=`` is given).
        task: a registered task name or alias (``tunewise.tasks.TASKS``; None: a run config's default).
        strategy, precision, optimizer, batch_size, gradient_checkpointing, lora_rank,
            lora_targets, image_size, trainable_layers, num_labels,
            overhead_bytes, fused_lm_head: see :func:`tunewise.memory.estimate.estimate`.
        seq_len: tokens per text (default 128, or the text tower's limit when lower).
        lora_dropout: LoRA's dropout (None: tunewise's default, 0.05).
        texts_per_example: inputs per example (default: the task's profile, else its step's).
        device: "auto" (cuda when present or when ``device_memory`` is given), "cpu" or "cuda".
        device_memory: memory to fit in ("24GB", "24GiB" or bytes; default: what is free).
        headroom: fraction of the memory kept free.
        cpu_allocator: "auto" (as ``train.cpu_allocator``: trim when the estimate is over half
            the memory, else glibc's default, whose retention is added), "trim" or "default".
        **arch_overrides: :class:`ArchSpec` fields (``family``, ``hidden``, ``n_layers``,
            ``heads``, ``intermediate``, ``vocab``, ``n_params`` ...) that win over the config
            or describe an architecture the config reader does not know.

    Returns:
        The :class:`MemoryPlan`.

    Raises:
        TunewiseError: an unknown task, argument or architecture (naming the missing fields),
            a model the task cannot train, impossible values.
    """
    known = [f.name for f in fields(ArchSpec) if f.name not in ("towers", "traced")]  # those come from configs and traces
    for key in arch_overrides:
        if key not in known:
            choices = known + [k for k in inspect.signature(plan).parameters if k != "arch_overrides"]
            raise TunewiseError(f"memory: unknown argument '{key}'{did_you_mean(key, choices)}; "
                                f"architecture fields are {', '.join(known)}")
    if cpu_allocator not in CPU_ALLOCATORS:
        raise TunewiseError(f"cpu-allocator: unknown '{cpu_allocator}'; use {', '.join(CPU_ALLOCATORS)}")
    name, task_obj, profile = task_memory(task or default_task())
    task_obj.spec.check_strategy(strategy)  # as fit and `tunewise config`: a strategy the task refuses
    step = step_model(profile.step)
    budget = parse_memory_size(device_memory) if device_memory is not None else None
    device = resolve_device(device, budget is not None)
    described = model is None and arch_overrides.get("family") is not None  # explicit values, no model to find
    spec = arch_for_step(model if described else model_source(task_obj, name, model), step, image_size, **arch_overrides)
    if spec.family not in step.families:  # an image task given a text model ...: say which tasks fit it
        check_family(step, spec.family, spec.source, needed_by=f"task {name}", fitting=tuple(tasks_for(spec.family)))
    settings = {
        "step": step.name, "strategy": strategy, "precision": precision, "optimizer": optimizer, "batch_size": batch_size,
        "seq_len": default_seq_len(spec) if seq_len is None else seq_len, "gradient_checkpointing": gradient_checkpointing,
        "lora_rank": lora_rank, "lora_targets": lora_targets or (("all",) if task_obj.spec.lora_all_linear else None),
        "lora_dropout": DEFAULT_LORA_DROPOUT if lora_dropout is None else lora_dropout, "image_size": image_size,
        "texts_per_example": texts_per_example or profile.texts_per_example, "trainable_layers": trainable_layers,
        "num_labels": num_labels, "device": device, "overhead_bytes": overhead_bytes, "fused_lm_head": fused_lm_head,
    }
    budget, source = (budget, "--device-memory") if budget is not None else available_memory(device)
    advice = advise(spec, settings, budget, budget_source=source, headroom=headroom)
    if device.startswith("cuda"):
        return MemoryPlan(name, spec, settings, advice, "n/a (cuda)")
    # as a run's train.cpu_allocator: glibc's default allocator (faster) keeps freed blocks, so
    # its retention is added; trimming, chosen by auto when the estimate is tight, does not keep them
    allocator = cpu_allocator_choice(cpu_allocator, advice.estimate.total_bytes, advice.budget_bytes)
    return MemoryPlan(name, spec, settings, replace(advice, estimate=with_cpu_allocator(advice.estimate, allocator)), allocator)
