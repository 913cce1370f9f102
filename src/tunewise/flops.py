"""Model FLOPs utilisation (MFU) of a training run: the FLOPs the model needs over what the
machine can do, as nanoGPT's ``estimate_mfu`` and the PaLM paper report it.

* **Model FLOPs** (:func:`training_flops`): the Kaplan et al. approximation, 2 FLOPs per
  parameter per token forward and 4 more backward, over the non-embedding parameters:
  ``(6 N_trainable + 2 N_frozen) T``. A frozen weight costs its forward (2 N T) only; the
  activation gradients that still flow through frozen layers above a trainable one are left
  out (so LoRA's MFU is understated, by up to 2x). Attention's ``s^2`` term is left out too
  (small at the sequence lengths tunewise trains on). ``T`` is the tokens the model actually
  saw in training, padding included (:class:`TokenCounter`), because padded positions cost
  the same matmuls.
* **Peak** (:func:`peak_flops`): measured, not looked up: the best of a few 2048x2048 matrix
  products in the run's precision (a second or two), cached in ``~/.cache/tunewise/peak_flops.json``
  per CPU model / GPU name, thread count, precision and torch version. On a machine shared with
  other work the probe and the run see the same contention only roughly; the probe keeps the
  best of its repeats.

References: Kaplan et al. 2020, "Scaling Laws for Neural Language Models" (arXiv:2001.08361),
section 2.1; Chowdhery et al. 2022, "PaLM" (arXiv:2204.02311), appendix B.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

PROBE_SIZE = 2048


def training_flops(tokens: int, trainable_params: int, frozen_params: int) -> float:
    """Model FLOPs of training on ``tokens`` tokens: ``(6 N_trainable + 2 N_frozen) T``.

    Args:
        tokens: tokens seen in training (padding included), summed over steps and epochs.
        trainable_params: non-embedding parameters that train (forward + backward: 6 per token).
        frozen_params: non-embedding parameters that do not (forward only: 2 per token).
    """
    return float(tokens) * (6.0 * trainable_params + 2.0 * frozen_params)


def mfu(model_flops: float, seconds: float, peak_flops_per_second: float) -> float:
    """Achieved model FLOP/s over the peak: 0.0 when nothing ran or the peak is unknown."""
    if seconds <= 0 or peak_flops_per_second <= 0:
        return 0.0
    return model_flops / seconds / peak_flops_per_second


def matmul_flops(m: int, k: int, n: int) -> float:
    """FLOPs of an (m, k) @ (k, n) product: one multiply and one add per term."""
    return 2.0 * m * k * n


def non_embedding_params(modules: Iterable[nn.Module]) -> tuple[int, int]:
    """(trainable, frozen) parameters outside ``nn.Embedding`` tables (a lookup is no matmul),
    each counted once even when modules share it."""
    seen: set[int] = set()
    trainable = frozen = 0
    for root in modules:
        embeddings = {id(p) for m in root.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
        for p in root.parameters():
            if id(p) in seen or id(p) in embeddings:
                continue
            seen.add(id(p))
            if p.requires_grad:
                trainable += p.numel()
            else:
                frozen += p.numel()
    return trainable, frozen


class TokenCounter:
    """Counts the tokens that enter a model while gradients are on (training, not evaluation).

    Hooks the output of every Hugging Face model's input embedding (``get_input_embeddings()``:
    word embeddings for text, patch embeddings for ViT); each call adds the product of the
    output's leading dimensions (``(batch, seq, dim)`` -> ``batch * seq``). Use as a context
    manager; ``tokens`` is 0 when no such module was found.
    """

    def __init__(self, model: Any) -> None:
        self.tokens = 0
        self._handles: list[Any] = []
        self._targets = _input_embeddings(model)

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if torch.is_grad_enabled() and isinstance(output, torch.Tensor) and output.dim() >= 2:
            self.tokens += int(output.shape[:-1].numel())

    def __enter__(self) -> TokenCounter:
        self._handles = [m.register_forward_hook(self._hook) for m in self._targets]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _input_embeddings(model: Any) -> list[nn.Module]:
    if not isinstance(model, nn.Module):
        return []
    from transformers import PreTrainedModel

    found: dict[int, nn.Module] = {}
    for m in model.modules():
        getter = getattr(m, "get_input_embeddings", None)
        if getter is None or not isinstance(m, PreTrainedModel):
            continue
        try:
            emb = getter()
        except (NotImplementedError, AttributeError):
            continue
        if isinstance(emb, nn.Module):
            found.setdefault(id(emb), emb)
    return list(found.values())


def _processor_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe_key(device: str, precision: str) -> str:
    """The cache key of a peak probe: processor, threads (CPU), precision and torch version."""
    threads = "gpu" if device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    return f"{_processor_name(device)} | {threads} | {precision} | torch {torch.__version__}"


def probe_peak_flops(device: str, precision: str, *, size: int = PROBE_SIZE, repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` (size x size) @ (size x size) products in ``precision``
    (``fp32``, ``bf16``, ``fp16``) on ``device``, after one warm-up."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return matmul_flops(size, size, size) / max(best, 1e-12)


def peak_flops(device: str, precision: str) -> float:
    """:func:`probe_peak_flops`, cached in ``<tunewise cache>/peak_flops.json`` under :func:`probe_key`.

    A probe on a busy CPU reads low (and every MFU after it high), so each entry keeps the load
    average it was measured at: it is reused while the machine is at least as busy, or was quiet
    then; a quieter machine probes again and keeps the higher peak.
    """
    import os

    from tunewise.files import cache_root, write_json

    path = cache_root() / "peak_flops.json"
    key = probe_key(device, precision)
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    if not isinstance(table, dict):
        table = {}
    cpu = not str(device).startswith("cuda")
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] / cores if cpu and hasattr(os, "getloadavg") else 0.0
    entry = table.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("flops"), (int, float)) and entry["flops"] > 0:
        if entry.get("load_per_core", 1e9) <= max(0.5, load):
            return float(entry["flops"])
    value = probe_peak_flops(device, precision)
    if isinstance(entry, dict) and isinstance(entry.get("flops"), (int, float)) and entry["flops"] > value:
        value, load = float(entry["flops"]), min(load, float(entry.get("load_per_core", load)))
    table[key] = {"flops": value, "load_per_core": round(load, 3)}
    write_json(path, table)
    return value


def flops_record(tokens: int, trainable: int, frozen: int, seconds: float, samples: float, device: str,
                 precision: str) -> dict[str, Any] | None:
    """metrics.json ``train.flops``: model FLOPs per sample, achieved and peak FLOP/s and MFU;
    None when no token was counted (a head on cached features, a model without input embeddings)."""
    if tokens <= 0 or seconds <= 0:
        return None
    total = training_flops(tokens, trainable, frozen)
    peak = peak_flops(device, precision)
    return {
        "tokens": int(tokens),
        "model_flops": total,
        "flops_per_sample": total / samples if samples > 0 else None,
        "achieved_flops_per_second": total / seconds,
        "peak_flops_per_second": peak,
        "peak_probe": f"best {PROBE_SIZE}x{PROBE_SIZE} matmul in {precision}",
        "mfu": float(f"{mfu(total, seconds, peak):.4g}"),  # 4 significant digits: tiny models run at << 0.01%
        "formula": "(6 x trainable + 2 x frozen non-embedding params) x tokens seen (padding included)",
    }


# Tasks whose steps run inputs the input-embedding count misses (CLIP's image tower, Whisper's
# audio encoder): their MFU would be understated, so none is reported.
_UNCOUNTED_STEPS = ("image-text", "speech")


def run_flops(task: Any, model: Any, stats: Any, tokens: int, device: str, precision: str) -> dict[str, Any] | None:
    """:func:`flops_record` of a finished training run (``stats``: the task's TrainStats) whose
    training saw ``tokens`` tokens (:class:`TokenCounter` over ``task.modules(model)``)."""
    profile = getattr(task.spec, "memory", None)
    if profile is not None and profile.step in _UNCOUNTED_STEPS:
        return None
    trainable, frozen = non_embedding_params([task.modules(model)])
    return flops_record(tokens, trainable, frozen, stats.seconds, stats.examples * stats.epochs, device, precision)
