"""Memory: a closed-form estimate of peak training memory next to the measured peak.

* :func:`estimate_memory` (and :func:`plan`, what ``tunewise memory`` prints) reads a model's
  architecture (no weights loaded) and returns a :class:`MemoryEstimate` broken into weights,
  gradients, optimizer states, activations and framework overhead, with the common "2.5x the
  model size" rule of thumb beside it.
* :func:`advise` says whether a run fits a device and, if not, which changes would.
* :class:`PeakMemory` measures the real peak (CUDA allocator or process RSS).

Modules: :mod:`~tunewise.memory.steps` (the estimator's step models, named by each task's
``spec.memory``), :mod:`~tunewise.memory.architecture` (configs to :class:`ArchSpec`),
:mod:`~tunewise.memory.traced` (image backbones without a config), :mod:`~tunewise.memory.params`,
:mod:`~tunewise.memory.activations`, :mod:`~tunewise.memory.allocator` and
:mod:`~tunewise.memory.estimate` (the peak), :mod:`~tunewise.memory.plan` (a run's plan),
:mod:`~tunewise.memory.runs` (inside ``tunewise fit``), :mod:`~tunewise.memory.measure`.
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
from tunewise.memory.architecture import ArchSpec, load_arch
from tunewise.memory.estimate import MemoryEstimate, estimate
from tunewise.memory.measure import PeakMemory, configure_cpu_allocator
from tunewise.memory.plan import MemoryPlan, plan


def estimate_memory(model: Any = None, **options: Any) -> MemoryEstimate:
    """Estimate the peak memory of fine-tuning ``model`` (weights are never loaded).

    The same estimate ``tunewise memory`` prints for the same options: :func:`plan`'s.

    Args:
        model: local folder, hub id, transformers config object, :class:`ArchSpec`, or None
            (the task's default model).
        **options: those of :func:`tunewise.memory.plan.plan`: ``task`` (a registered task
            name), ``strategy``, ``precision``, ``batch_size``, ``seq_len``, ``device`` (default
            auto) ... and :class:`ArchSpec` fields (``family``, ``hidden``, ``n_layers`` ...)
            that win over the config or describe an architecture the config reader does not know.

    Returns:
        The :class:`MemoryEstimate`.

    Raises:
        TunewiseError: unknown task, argument or architecture (names the missing fields), impossible values.

    Example:
        >>> est = estimate_memory(None, batch_size=32, seq_len=128)  # packaged MiniLM
        >>> est.total_bytes, est.as_dict()["weights_bytes"]
    """
    return plan(model, **options).estimate


__all__ = [
    "Advice", "ArchSpec", "MemoryEstimate", "MemoryPlan", "PeakMemory", "advise", "available_memory", "check_fits",
    "compare", "configure_cpu_allocator", "estimate", "estimate_memory", "format_bytes", "load_arch", "parse_memory_size",
    "plan", "preflight",
]
