"""Which numeric precision a run trains and evaluates in: one place for ``train.precision``.

``train.precision`` is ``auto``, ``fp32``, ``fp16`` or ``bf16``. The mixed precisions are torch
autocast with fp32 master weights (the Trainer does it through accelerate's ``mixed_precision``;
evaluation encoders through :func:`inference_autocast`). ``auto`` resolves to:

- **CUDA**: bf16 when the GPU supports it, else fp16;
- **CPU**: bf16 when the CPU has native bf16 matrix instructions (x86 ``avx512_bf16`` or AMX:
  ``amx_bf16`` / ``amx_tile``), else fp32. Without them bf16 is emulated and slower than fp32;
  with them a 2048x2048 matmul runs ~4x faster in bf16 than in fp32 (AMD EPYC, 2 threads:
  ~410 vs ~100 GFLOP/s). The choice is a pure function of the CPU flags
  (:func:`cpu_has_native_bf16`), read once per process from ``/proc/cpuinfo``
  (:func:`cpu_flags`).

A task whose quality measurably suffers in bf16 declares ``TaskSpec.cpu_bf16_auto = False`` and
``auto`` keeps it in fp32 on CPU (``bf16`` still forces it).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from tunewise.errors import TunewiseError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "amx_tile"})
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16(flags: Iterable[str]) -> bool:
    """True when the CPU flags include a native bf16 matrix instruction set.

    Args:
        flags: the CPU's feature flags as ``/proc/cpuinfo`` spells them (``avx512_bf16``, ``amx_bf16``).
    """
    return not NATIVE_BF16_FLAGS.isdisjoint(f.lower() for f in flags)


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor in a ``/proc/cpuinfo`` text (x86 ``flags``,
    ARM ``Features``); empty when there is none."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags (``/proc/cpuinfo``; cached). Where there is no such file
    (macOS, Windows) it falls back on torch's CPU capability: ``AMX`` counts as ``amx_bf16``."""
    try:
        return parse_cpu_flags(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        capability = str(torch.backends.cpu.get_cpu_capability()).upper()
        return frozenset({"amx_bf16"}) if "AMX" in capability else frozenset()


def effective_precision(precision: str, device: str, *, cpu_bf16_auto: bool = True) -> str:
    """The precision a run really uses: ``"bf16"``, ``"fp16"`` or ``"fp32"``.

    Args:
        precision: ``train.precision`` (``auto``, ``fp32``, ``fp16``, ``bf16``), or an already
            resolved value (resolving again returns it unchanged).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        cpu_bf16_auto: False keeps ``auto`` in fp32 on CPU (a task whose quality bf16 hurts).

    Raises:
        TunewiseError: unknown precision, or fp16 without CUDA.
    """
    if precision not in PRECISIONS:
        raise TunewiseError(f"train.precision: unknown '{precision}'; use {', '.join(PRECISIONS)}")
    on_cuda = str(device).startswith("cuda")
    if precision == "auto":
        if on_cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        on_cpu = str(device).startswith("cpu")
        return "bf16" if on_cpu and cpu_bf16_auto and cpu_has_native_bf16(cpu_flags()) else "fp32"
    if precision == "fp16" and not on_cuda:
        raise TunewiseError("train.precision: fp16 mixed precision needs a CUDA GPU; use fp32 or bf16 on CPU")
    return precision


def run_precision(config: Any, device: str) -> str:
    """:func:`effective_precision` of a run's config: ``train.precision`` on ``device``, with the
    task's own say on ``auto`` (``TaskSpec.cpu_bf16_auto``)."""
    from tunewise.tasks.base import TASKS

    spec = TASKS.get(config.task).spec
    return effective_precision(config.train.precision, device, cpu_bf16_auto=spec.cpu_bf16_auto)


def trainer_flags(precision: str) -> dict[str, bool]:
    """TrainingArguments ``fp16`` / ``bf16`` for a resolved precision. accelerate turns
    ``bf16=True`` into ``mixed_precision="bf16"``, which wraps the model's forward in
    ``torch.autocast`` on CPU as on CUDA."""
    return {"fp16": precision == "fp16", "bf16": precision == "bf16"}


def inference_autocast(precision: str, device: str) -> contextlib.AbstractContextManager:
    """The autocast context evaluation and encoding run under, matching training's precision.

    A no-op for fp32. Under it, matmuls run in bf16/fp16; cast outputs with :func:`to_float32`
    before similarities, top-k or numpy (bf16 has ~3 significant digits).

    Args:
        precision: ``train.precision`` or an already resolved precision.
        device: the device the model runs on (``"cpu"``, ``"cuda"``, ``"cuda:0"``, a torch.device).
    """
    resolved = effective_precision(precision, str(device))
    if resolved == "fp32":
        return contextlib.nullcontext()
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    return torch.autocast(device_type=device_type, dtype=_DTYPES[resolved])


def to_float32(x: Any) -> Any:
    """A tensor (or numpy array) in float32 when it came out of autocast in half precision;
    anything else unchanged."""
    if isinstance(x, torch.Tensor) and x.dtype in (torch.bfloat16, torch.float16):
        return x.float()
    dtype = getattr(x, "dtype", None)
    if dtype is not None and str(dtype) in ("float16", "bfloat16"):
        return x.astype("float32")
    return x


def model_device(model: Any) -> str:
    """The device of a model's first parameter (``model.device`` where there is none); ``"cpu"`` otherwise."""
    inner = getattr(model, "model", None)  # evaluation views (CachedHeadEncoder) wrap the model
    for candidate in (model, inner):
        if isinstance(candidate, torch.nn.Module):
            param = next(candidate.parameters(), None)
            if param is not None:
                return str(param.device)
        device = getattr(candidate, "device", None)
        if device is not None:
            return str(device)
    return "cpu"


def evaluation_precision(config: Any, device: str) -> str:
    """The precision a run evaluates in: ``eval.precision: fp32`` forces full precision, the default
    (``train``) follows :func:`run_precision` on ``device``."""
    return "fp32" if config.eval.precision == "fp32" else run_precision(config, device)


def evaluation_autocast(config: Any, model: Any) -> contextlib.AbstractContextManager:
    """:func:`inference_autocast` for a task's evaluation of ``model`` under a run's config:
    :func:`evaluation_precision` on the model's device."""
    device = model_device(model)
    return inference_autocast(evaluation_precision(config, device), device)


def training_autocast_off(device: str) -> contextlib.AbstractContextManager:
    """Autocast switched off on ``device``'s type for the block (a head training on cached
    features inside a feature-extraction autocast: its tiny matmuls stay fp32)."""
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    return torch.autocast(device_type=device_type, enabled=False)


def autocast_precision() -> str:
    """The precision the current autocast context computes in: ``"bf16"``, ``"fp16"`` or
    ``"fp32"`` (none active). Caches of computed features key on it so that rows computed in
    different precisions never mix."""
    for device_type in ("cpu", "cuda"):
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
            return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    return "fp32"
