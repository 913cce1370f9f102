"""Memory: a closed-form estimate of peak training memory next to the measured peak.

* :func:`estimate_memory` reads a model's architecture (no weights loaded) and returns a
  :class:`MemoryEstimate` broken into weights, gradients, optimizer states, activations
  and framework overhead, with seed 001's "2.5x the model size" rule beside it.
* :func:`advise` says whether a run fits a device and, if not, which changes would.
* :class:`PeakMemory` measures the real peak (CUDA allocator or process RSS).
"""

from __future__ import annotations

from typing import Any

from tunewise.memory.advise import (
    Advice,
    advise,
    available_memory,
    check_fits,
    compare,
    format_bytes,
    parse_memory_size,
    preflight,
)
from tunewise.errors import TunewiseError
from tunewise.memory.architecture import ArchSpec, load_arch
from tunewise.memory.estimate import DEFAULT_LORA_DROPOUT, MemoryEstimate, estimate
from tunewise.memory.measure import PeakMemory, configure_cpu_allocator


def estimate_memory(
    model: Any = None,
    *,
    task: str = "embedding",
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
    **arch_overrides: Any,
) -> MemoryEstimate:
    """Estimate the peak memory of fine-tuning ``model`` (weights are never loaded).

    Args:
        model: local folder, hub id, transformers config object, :class:`ArchSpec`, or None
            (the packaged all-MiniLM-L6-v2, or nothing when ``family=`` is given).
        task, strategy, precision, optimizer, batch_size, seq_len, gradient_checkpointing,
        lora_rank, image_size, texts_per_example, trainable_layers, lora_targets, num_labels,
        device, overhead_bytes, lora_dropout, fused_lm_head: see :func:`tunewise.memory.estimate.estimate`.
        **arch_overrides: :class:`ArchSpec` fields (``family``, ``hidden``, ``n_layers``,
            ``heads``, ``intermediate``, ``vocab``, ``n_params`` ...) that win over the config
            or describe an architecture the config reader does not know.

    Returns:
        The :class:`MemoryEstimate`.

    Raises:
        TunewiseError: unknown architecture (names the missing fields), impossible values.

    Example:
        >>> est = estimate_memory(None, batch_size=32, seq_len=128)  # packaged MiniLM
        >>> est.total_bytes, est.as_dict()["weights_bytes"]
    """
    from dataclasses import fields

    unknown = sorted(set(arch_overrides) - {f.name for f in fields(ArchSpec)})
    if unknown:
        raise TunewiseError(f"estimate_memory: unknown argument {unknown[0]!r}; architecture fields are "
                            f"{', '.join(f.name for f in fields(ArchSpec))}")
    spec = load_arch(model, **arch_overrides)
    return estimate(
        spec, task=task, strategy=strategy, precision=precision, optimizer=optimizer, batch_size=batch_size,
        seq_len=seq_len, gradient_checkpointing=gradient_checkpointing, lora_rank=lora_rank, image_size=image_size,
        texts_per_example=texts_per_example, trainable_layers=trainable_layers, lora_targets=lora_targets,
        num_labels=num_labels, device=device, overhead_bytes=overhead_bytes, lora_dropout=lora_dropout,
        fused_lm_head=fused_lm_head,
    )


__all__ = [
    "Advice", "ArchSpec", "MemoryEstimate", "PeakMemory", "advise", "available_memory", "check_fits", "compare",
    "configure_cpu_allocator", "estimate", "estimate_memory", "format_bytes", "load_arch", "parse_memory_size", "preflight",
]
