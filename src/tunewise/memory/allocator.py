"""What the framework and the memory allocator add to a training step's tensors.

* Framework overhead: on CPU the measured resident memory of an idle Python process that
  imported torch, transformers and sentence-transformers (:data:`CPU_RUNTIME_BYTES`, measured by
  ``benchmarks/memory_accuracy.py``); on CUDA the context (not seen by
  ``max_memory_allocated``) plus the cuBLAS workspace.
* CPU allocator retention: the estimate assumes freed tensors go back to the OS
  (:func:`tunewise.memory.measure.configure_cpu_allocator`, "trim"); with glibc's default
  thresholds freed activation blocks stay in the heap and the resident memory settles higher:
  :func:`with_cpu_allocator` adds that retention. Trimming costs about 20% of the training
  throughput, so ``auto`` trims only when memory is tight (:func:`cpu_allocator_choice`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

GIB = 2**30
# RSS of `python -c "import torch, transformers, sentence_transformers"` on the project's
# 2-core CPU machine (torch 2.13, transformers 5.23), re-measured by the benchmark.
CPU_RUNTIME_BYTES = 528 * 2**20
CUDA_CONTEXT_BYTES = 512 * 2**20  # driver + kernels; 300-800 MiB depending on GPU/driver
CUDA_WORKSPACE_BYTES = 32 * 2**20  # cuBLAS workspace, allocated through the caching allocator
# glibc's default allocator on CPU keeps freed activation blocks in the heap (its mmap
# threshold rises to 32 MiB as large blocks are freed). Measured on the demo (MiniLM, batch
# 16, 20-75 steps): peak RSS 2028-2141 MiB against 1715-1739 MiB with trimming, i.e. a
# retention of 0.40-0.52x the peak live activations (778 MiB).
CPU_DEFAULT_ALLOCATOR_RETENTION = 0.5
GLIBC_MMAP_THRESHOLD_MAX = 32 * 2**20  # blocks this large are always mmapped: freed, they go back to the OS
TIGHT_FRACTION = 0.5  # cpu_allocator=auto trims when the estimate exceeds this share of the free memory
CPU_ALLOCATORS = ("auto", "trim", "default")


def framework_overhead(cuda: bool) -> int:
    """Bytes the framework holds before any tensor of the run: the CUDA context + workspace, or the CPU runtime."""
    return CUDA_CONTEXT_BYTES + CUDA_WORKSPACE_BYTES if cuda else CPU_RUNTIME_BYTES


def auto_trims(estimate_bytes: int, free_bytes: int) -> bool:
    """Whether ``cpu_allocator: auto`` trims: only when memory is tight."""
    return estimate_bytes > TIGHT_FRACTION * free_bytes


def cpu_allocator_choice(requested: str, estimate_bytes: int | None, free_bytes: int) -> str:
    """``trim`` or ``default`` for a CPU run that asked for ``requested`` (auto, trim or default).

    Args:
        requested: the run's ``train.cpu_allocator`` (or ``tunewise memory --cpu-allocator``).
        estimate_bytes: the estimated peak (None: no estimate, ``auto`` keeps glibc's default).
        free_bytes: the memory available.
    """
    if requested != "auto":
        return requested
    return "trim" if estimate_bytes is not None and auto_trims(estimate_bytes, free_bytes) else "default"


def with_cpu_allocator(est: Any, allocator: str) -> Any:
    """The estimate for a CPU run under ``allocator`` ("trim" or "default", glibc's own).

    :func:`tunewise.memory.estimate.estimate` assumes trimming (freed tensors go back to the
    OS). With glibc's default thresholds the heap retains freed activation blocks: the peak
    resident memory grows by about :data:`CPU_DEFAULT_ALLOCATOR_RETENTION` times the peak live
    activations (measured, see the constant), counted here as framework overhead; blocks of 32
    MiB and more (TRL's LM-head tiles) are always mmapped and never retained. CUDA estimates are
    unchanged.

    Args:
        est: a :class:`~tunewise.memory.estimate.MemoryEstimate`.
        allocator: "trim", or "default" (also "default (trim not supported here)").
    """
    if est.inputs.get("device", "cpu") != "cpu" or not allocator.startswith("default"):
        return est
    extra = int(CPU_DEFAULT_ALLOCATOR_RETENTION * (est.activations_peak_bytes - est.mmapped_activation_bytes))
    note = (f"CPU allocator retention (glibc default thresholds): +{extra / GIB:.3f} GiB "
            f"({CPU_DEFAULT_ALLOCATOR_RETENTION:g} x peak activations; train.cpu_allocator=trim avoids it at ~20% speed)")
    return replace(est, overhead_bytes=est.overhead_bytes + extra, total_bytes=est.total_bytes + extra,
                   notes=est.notes + (note,), inputs={**est.inputs, "cpu_allocator": "default"})
