"""Closed-form estimate of the peak memory of a fine-tuning run.

Pure functions on an :class:`~tunewise.memory.architecture.ArchSpec`: no torch, no model.
The peak of a training step is the larger of two moments (Rajbhandari et al. 2020, ZeRO;
Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"):

* the start of backward: weights W + optimizer states O + every saved activation A + the
  gradients already allocated at the top of the network + the in-flight gradient buffers;
* the optimizer step: W + all gradients G + O + the optimizer's temporaries.

(At the end of backward, W + O + G + the embedding layer's activations, is also checked.)
Gradients are freed by ``zero_grad(set_to_none=True)`` (the Trainer default), so they do not
coexist with a whole forward pass. The pieces live by concept:

* the step model (what one example sends through the network, which head trains):
  :mod:`tunewise.memory.steps`; tasks name theirs in ``spec.memory.step``;
* W, G and O from the parameter counts: :mod:`tunewise.memory.params`;
* A per block, tower, head and loss: :mod:`tunewise.memory.activations`;
* framework overhead and the CPU allocator's retention: :mod:`tunewise.memory.allocator`;
* the peak assembly: :func:`estimate`, here.

The common rule of thumb ("about 2.5x the model size"; seed 001) is reported next to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tunewise.errors import TunewiseError, did_you_mean
from tunewise.memory.activations import Activations, StepShape, activations, dtypes
from tunewise.memory.allocator import CUDA_CONTEXT_BYTES, GIB, framework_overhead
from tunewise.memory.architecture import ArchSpec
from tunewise.memory.params import (
    LORA_ROLES,
    ParamCounts,
    count_params,
    default_lora_targets,
    largest_trainable_tensor,
    state_bytes,
)
from tunewise.memory.steps import StepModel, check_family, step_model

STRATEGIES = ("head", "partial", "full", "lora", "qlora")
PRECISIONS = ("fp32", "bf16", "fp16", "4bit")
OPTIMIZERS = ("adamw", "adamw8bit", "sgd")
RULE_OF_THUMB_FACTOR = 2.5
DEFAULT_LORA_DROPOUT = 0.05  # strategies.lora.LoraOptions' default too


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak training memory, broken down at the moment of the peak.

    All ``*_bytes`` fields add up to ``total_bytes``. ``gradients_bytes`` is the gradient
    memory live at the peak (all of it when the optimizer step is the peak; only the
    gradients allocated before the first block's backward when the start of backward is).
    """

    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    overhead_bytes: int
    total_bytes: int
    rule_of_thumb_bytes: int
    outside_allocator_bytes: int = 0
    params: int = 0
    trainable_params: int = 0
    peak_phase: str = "backward"
    activations_peak_bytes: int = 0
    tokens_per_step: int = 0
    inputs: dict = field(default_factory=dict)
    mmapped_activation_bytes: int = 0  # part of the peak activations in blocks glibc never retains
    notes: tuple[str, ...] = ()

    @property
    def allocator_bytes(self) -> int:
        """What ``torch.cuda.max_memory_allocated`` can see (total minus the CUDA context)."""
        return self.total_bytes - self.outside_allocator_bytes

    def components(self) -> dict[str, int]:
        return {
            "weights": self.weights_bytes, "gradients": self.gradients_bytes, "optimizer states": self.optimizer_bytes,
            "activations": self.activations_bytes, "framework overhead": self.overhead_bytes,
        }

    def as_dict(self) -> dict:
        out = asdict(self)
        out["notes"] = list(self.notes)
        out["allocator_bytes"] = self.allocator_bytes
        out["total_gib"] = round(self.total_bytes / GIB, 3)
        out["rule_of_thumb_gib"] = round(self.rule_of_thumb_bytes / GIB, 3)
        return out


def _check_choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise TunewiseError(f"{option}: unknown '{value}'{did_you_mean(value, choices)}; choose one of: {', '.join(choices)}")
    return value


def _validate(spec: ArchSpec, step: str, strategy: str, precision: str, optimizer: str, batch_size: int, seq_len: int,
              lora_rank: int, num_labels: int, image_size: int | None, overhead_bytes: int | None,
              lora_targets: tuple[str, ...] | None, lora_dropout: float) -> tuple[StepModel, str, str, tuple[str, ...] | None]:
    """Check the choices and values; return the step model, (strategy, precision) with QLoRA made
    consistent, and the LoRA targets (``("all",)`` expanded)."""
    step_def = step_model(step)
    check_family(step_def, spec.family, spec.source)
    _check_choice("strategy", strategy, STRATEGIES)
    _check_choice("precision", precision, PRECISIONS)
    _check_choice("optimizer", optimizer, OPTIMIZERS)
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("lora_rank", lora_rank), ("num_labels", num_labels)):
        if not isinstance(value, int) or value < 1:
            raise TunewiseError(f"{name.replace('_', '-')}: must be a positive integer, got {value!r}")
    if image_size is not None and image_size < 1:
        raise TunewiseError(f"image-size: must be a positive integer, got {image_size!r}")
    if overhead_bytes is not None and overhead_bytes < 0:
        raise TunewiseError(f"overhead: must not be negative, got {overhead_bytes}")
    if precision == "4bit" and strategy not in ("lora", "qlora"):
        raise TunewiseError(f"precision: 4-bit weights cannot be trained directly with strategy '{strategy}'; use --strategy qlora")
    if spec.family == "cnn" and strategy in ("lora", "qlora"):
        raise TunewiseError("strategy: LoRA needs attention/linear layers; for a CNN use head, partial or full")
    if lora_targets is not None and tuple(lora_targets) == ("all",):
        lora_targets = LORA_ROLES
    for role in lora_targets or ():
        if role not in LORA_ROLES:
            raise TunewiseError(f"lora-targets: unknown '{role}'{did_you_mean(role, list(LORA_ROLES))}; "
                                f"use some of {', '.join(LORA_ROLES)}, or all")
    if not 0.0 <= lora_dropout < 1.0:
        raise TunewiseError(f"lora-dropout: must be in [0, 1), got {lora_dropout}")
    strategy, precision = ("qlora", "4bit") if strategy == "qlora" or precision == "4bit" else (strategy, precision)
    return step_def, strategy, precision, lora_targets


def estimate(
    spec: ArchSpec,
    *,
    step: str = "contrastive",
    strategy: str = "full",
    precision: str = "fp32",
    optimizer: str = "adamw",
    batch_size: int = 16,
    seq_len: int = 128,
    gradient_checkpointing: bool = False,
    lora_rank: int = 8,
    image_size: int | None = None,
    texts_per_example: int | None = None,
    trainable_layers: int | None = None,
    lora_targets: tuple[str, ...] | None = None,
    num_labels: int = 2,
    device: str = "cpu",
    overhead_bytes: int | None = None,
    lora_dropout: float = DEFAULT_LORA_DROPOUT,
    fused_lm_head: bool = True,
    cached_clips: int = 0,
) -> MemoryEstimate:
    """Estimate the peak memory of one training step (see the module docstring for the model).

    Args:
        spec: the architecture (:func:`tunewise.memory.architecture.load_arch`).
        step: the step model (:mod:`tunewise.memory.steps`): "contrastive" (texts per
            example, in-batch negatives), "classifier", "lm", "image" or "image-text" (CLIP);
            a task names its own in ``spec.memory.step``.
        strategy: "head" (frozen backbone, cached features), "partial" (top
            ``trainable_layers`` blocks), "full", "lora" or "qlora" (LoRA on a 4-bit base).
        precision: "fp32", "bf16"/"fp16" (autocast mixed precision, fp32 master weights) or
            "4bit" (NF4 base; implies QLoRA).
        optimizer: "adamw", "adamw8bit" (bitsandbytes) or "sgd" (no momentum).
        batch_size: examples per optimizer step (no gradient accumulation).
        seq_len: tokens per text (padded/truncated length).
        gradient_checkpointing: keep only block inputs and recompute in backward.
        lora_rank: LoRA r.
        image_size: input side for vision models (default: the config's).
        texts_per_example: inputs each tower encodes per example; default the step's (2 for
            "contrastive": anchor + positive, MultipleNegativesRankingLoss; else 1).
        trainable_layers: blocks trained by "partial" (default: a quarter, at least 1).
        lora_targets: projections among q, k, v, o, mlp_in, mlp_out, or ``("all",)`` (default:
            all of them for a decoder trained as an LM, else q and v, peft's default for BERT and Llama).
        num_labels: classes of a class head.
        device: "cpu" or "cuda" (dropout masks, attention kernel, optimizer temporaries,
            overhead).
        overhead_bytes: framework overhead to use instead of the defaults.
        lora_dropout: LoRA's dropout (tunewise's default 0.05); with dropout each adapted
            layer keeps its own dropped input and mask.
        fused_lm_head: causal LM loss through TRL's fused LM head, as tunewise trains it (the
            vocabulary in tiles, no logits kept); False: the model's own loss over full logits.
            On CUDA both are counted as full logits (TRL's Triton kernel needs less; not measured).
        cached_clips: speech: clips whose frozen encoder's outputs are kept for the whole run.

    Returns:
        A :class:`MemoryEstimate`.

    Raises:
        TunewiseError: an unknown choice, an impossible value, or a model the step cannot train.
    """
    from tunewise.memory.steps import own_estimator, step_model

    own = own_estimator(step_model(step))
    if own is not None:  # a step with its own closed form (speech: two stacks, cross-attention, conv stem)
        return own(spec, strategy=strategy, precision=precision, optimizer=optimizer, batch_size=batch_size,
                   seq_len=seq_len, gradient_checkpointing=gradient_checkpointing, lora_rank=lora_rank,
                   lora_targets=lora_targets, lora_dropout=lora_dropout, trainable_layers=trainable_layers,
                   device=device, overhead_bytes=overhead_bytes, cached_clips=cached_clips)
    step_def, strategy, precision, lora_targets = _validate(
        spec, step, strategy, precision, optimizer, batch_size, seq_len, lora_rank, num_labels, image_size, overhead_bytes,
        lora_targets, lora_dropout)
    device = str(device)
    cuda = device.startswith("cuda")
    dt = dtypes(precision, device)
    texts = texts_per_example or step_def.inputs_per_example
    targets = tuple(lora_targets) if lora_targets else default_lora_targets(spec, step_def)
    towers = spec.towers or (spec,)
    p = count_params(spec, towers, step_def, strategy, num_labels, trainable_layers, targets, lora_rank)
    weights, grads_all, opt_state, notes = state_bytes(p, towers, strategy, precision, optimizer)
    lora = strategy in ("lora", "qlora")
    shape = StepShape(strategy, precision, device, batch_size, seq_len, texts, image_size, targets, lora_rank, lora_dropout,
                      gradient_checkpointing, fused_lm_head)
    acts = activations(spec, towers, step_def, p, shape, dt)
    notes += acts.notes
    grads_top = 4.0 * (p.lm_head if step_def.head == "vocabulary" and strategy == "full" else p.head)
    opt_temp = _optimizer_temporaries(spec, towers, p, strategy, optimizer, cuda, lora_rank)
    phase, parts, acts_start, mmapped = _peak(acts, weights, grads_all, grads_top, opt_state, opt_temp, notes)
    if overhead_bytes is None:
        overhead_bytes = framework_overhead(cuda)
    inputs = {
        "step": step_def.name, "strategy": strategy, "precision": precision, "optimizer": optimizer, "batch_size": batch_size,
        "seq_len": seq_len, "gradient_checkpointing": gradient_checkpointing, "lora_rank": lora_rank,
        "image_size": image_size, "texts_per_example": texts, "trainable_layers": p.k_layers if strategy == "partial" else None,
        "lora_targets": list(targets) if lora else None, "lora_dropout": lora_dropout if lora else None,
        "device": "cuda" if cuda else "cpu", "family": spec.family, "model": spec.source,
    }
    return MemoryEstimate(
        weights_bytes=parts[0], gradients_bytes=parts[1], optimizer_bytes=parts[2], activations_bytes=parts[3],
        overhead_bytes=int(overhead_bytes), total_bytes=sum(parts) + int(overhead_bytes),
        rule_of_thumb_bytes=int(RULE_OF_THUMB_FACTOR * p.params * {"fp32": 4.0, "4bit": 0.5}.get(precision, 2.0)),
        outside_allocator_bytes=CUDA_CONTEXT_BYTES if cuda and overhead_bytes >= CUDA_CONTEXT_BYTES else 0,
        params=p.params + p.lora, trainable_params=int(p.trainable), peak_phase=phase,
        activations_peak_bytes=int(round(acts_start)), tokens_per_step=acts.tokens, inputs=inputs, notes=tuple(notes),
        mmapped_activation_bytes=int(round(mmapped)),
    )


def _optimizer_temporaries(spec: ArchSpec, towers: tuple[ArchSpec, ...], p: ParamCounts, strategy: str, optimizer: str,
                           cuda: bool, lora_rank: int) -> float:
    """Bytes AdamW allocates in its step beyond its states."""
    if optimizer != "adamw":
        return 0.0
    if cuda:
        return 4.0 * p.trainable  # foreach AdamW: sqrt(exp_avg_sq) of every parameter at once
    return 2 * 4.0 * largest_trainable_tensor(spec, towers, strategy, p.head, lora_rank)  # for-loop AdamW


def _peak(acts: Activations, weights: float, grads_all: float, grads_top: float, opt_state: float, opt_temp: float,
          notes: list[str]) -> tuple[str, list[int], float, float]:
    """The peak moment: (phase, [weights, gradients, optimizer, activations] bytes, peak activations, their mmapped part).

    Appends a note on the phase to ``notes``.
    """
    acts_start = acts.saved + acts.bottom + acts.head_saved + max(acts.head_transient, acts.transient)
    mmapped = acts.mmapped if acts.head_transient >= acts.transient else 0.0  # the peak's transient is the LM head's tiles
    start, end = acts_start + grads_top, acts.bottom + acts.transient + grads_all
    if opt_state + max(start, end) >= grads_all + opt_state + opt_temp:
        phase = "backward"
        grads, live, opt = (grads_top, acts_start, opt_state) if start >= end else (grads_all, acts.bottom + acts.transient, opt_state)
        notes.append(f"peak during backward; all gradients together: {grads_all / GIB:.3f} GiB")
    else:
        phase, grads, live, opt = "optimizer step", grads_all, 0.0, opt_state + opt_temp
        notes.append(f"peak in the optimizer step (gradients + optimizer temporaries); activations peak earlier, at {acts_start / GIB:.3f} GiB")
    return phase, [int(round(x)) for x in (weights, grads, opt, live)], acts_start, mmapped
