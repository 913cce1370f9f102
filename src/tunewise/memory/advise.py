"""Will it fit? Compare an estimate with a device's memory and rank changes that would fit.

Sizes follow SI and IEC strictly: ``24GB`` is 24 * 10**9 bytes, ``24GiB`` is 24 * 2**30 (a
"24 GB" GPU usually has 24 GiB, so writing GB errs on the safe side). A run "fits" when its
estimated peak is at most ``1 - headroom`` of the memory (default headroom 10%: the estimate
aims at 15% accuracy and the CUDA caching allocator fragments).

The alternatives are single changes and pairs of changes to the asked configuration, ranked
by how much they cost the user (quality first, then speed), then by the memory they need:
bf16 mixed precision < gradient checkpointing < 8-bit AdamW < halving the batch (with
gradient accumulation, same effective batch) < LoRA < partial < QLoRA < SGD < head only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunewise.errors import TunewiseError

_UNITS = {
    "": None, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")
DEFAULT_HEADROOM = 0.10


def parse_memory_size(text: str | int | float, option: str = "--device-memory") -> int:
    """Parse "24GB", "24GiB", "512MB", "1.5 TiB" into bytes.

    Args:
        text: the size; a plain int is taken as bytes.
        option: the option name used in error messages.

    Raises:
        TunewiseError: negative, zero, unitless or unparsable sizes.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text <= 0:
            raise TunewiseError(f"{option}: must be positive, got {text}")
        return int(text)
    raw = str(text)
    if raw.strip().startswith("-"):
        raise TunewiseError(f"{option}: must be positive, got '{raw}'")
    match = _SIZE.match(raw)
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise TunewiseError(f"{option}: cannot read '{raw}'; write a number and a unit, e.g. 24GB, 24GiB or 512MB")
    if _UNITS[unit] is None:
        raise TunewiseError(f"{option}: '{raw}' has no unit; write e.g. {raw.strip()}GB or {raw.strip()}GiB")
    value = float(match.group(1)) * _UNITS[unit]
    if value <= 0:
        raise TunewiseError(f"{option}: must be positive, got '{raw}'")
    return int(value)


def format_bytes(n: float) -> str:
    """Human-readable binary size: '1.23 GiB', '512.0 MiB'."""
    n = float(n)
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}" if unit in ("TiB", "GiB") else f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def available_memory(device: str = "auto") -> tuple[int, str]:
    """Memory a training run can use now, and where it came from.

    Args:
        device: "auto" (CUDA when present), "cuda", "cuda:N" or "cpu".

    Returns:
        (bytes, description): CUDA free memory (``torch.cuda.mem_get_info``) or the CPU's
        available RAM (``psutil.virtual_memory().available``).
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda"):
        if not torch.cuda.is_available():
            raise TunewiseError(f"--device: '{device}' asked for, but no CUDA GPU is available; use cpu or give --device-memory")
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free), f"free memory of {torch.cuda.get_device_name(torch.device(device))}"
    import psutil

    return int(psutil.virtual_memory().available), "available RAM (psutil)"


@dataclass(frozen=True)
class Alternative:
    """A changed configuration that fits, with its estimate."""

    change: str
    settings: dict
    estimate: Any
    cost: float


@dataclass(frozen=True)
class Advice:
    """Whether an estimate fits ``budget_bytes``, and ranked alternatives when it does not."""

    estimate: Any
    budget_bytes: int
    budget_source: str
    headroom: float
    fits: bool
    alternatives: list[Alternative] = field(default_factory=list)

    @property
    def usable_bytes(self) -> int:
        return int(self.budget_bytes * (1 - self.headroom))

    def as_dict(self) -> dict:
        return {
            "fits": self.fits, "budget_bytes": self.budget_bytes, "budget_source": self.budget_source,
            "headroom": self.headroom, "usable_bytes": self.usable_bytes,
            "alternatives": [
                {"change": a.change, "settings": a.settings, "total_bytes": a.estimate.total_bytes} for a in self.alternatives
            ],
        }


# (label, cost, how to change the settings, applicable?)
_Change = tuple[str, float, Callable[[dict], dict], Callable[[dict], bool]]
_CHANGES: list[_Change] = [
    ("bf16 mixed precision", 0.5, lambda s: {**s, "precision": "bf16"}, lambda s: s["precision"] == "fp32"),
    ("gradient checkpointing", 1.0, lambda s: {**s, "gradient_checkpointing": True},
     lambda s: not s["gradient_checkpointing"] and s["strategy"] != "head"),
    ("8-bit AdamW", 1.5, lambda s: {**s, "optimizer": "adamw8bit"}, lambda s: s["optimizer"] == "adamw" and s["strategy"] in ("full", "partial")),
    ("LoRA", 3.0, lambda s: {**s, "strategy": "lora"}, lambda s: s["strategy"] in ("full", "partial")),
    ("partial (top layers)", 3.5, lambda s: {**s, "strategy": "partial"}, lambda s: s["strategy"] == "full"),
    ("QLoRA (4-bit base)", 4.0, lambda s: {**s, "strategy": "qlora", "precision": "4bit"}, lambda s: s["strategy"] in ("full", "partial", "lora")),
    ("SGD", 4.5, lambda s: {**s, "optimizer": "sgd"}, lambda s: s["optimizer"] != "sgd" and s["strategy"] in ("full", "partial")),
    ("head only (frozen backbone)", 6.0, lambda s: {**s, "strategy": "head", "precision": "fp32" if s["precision"] == "4bit" else s["precision"]},
     lambda s: s["strategy"] != "head"),
]


def _batch_changes(settings: dict) -> list[_Change]:
    out: list[_Change] = []
    batch, k = settings["batch_size"] // 2, 1
    while batch >= 1:
        steps = settings["batch_size"] // batch
        out.append((f"batch {batch} x {steps} accumulation steps", 1.2 + 0.3 * k, lambda s, b=batch: {**s, "batch_size": b}, lambda s: True))
        batch, k = batch // 2, k + 1
    return out


def advise(
    spec: Any,
    settings: dict,
    budget_bytes: int | str,
    *,
    budget_source: str = "--device-memory",
    headroom: float = DEFAULT_HEADROOM,
    max_alternatives: int = 5,
) -> Advice:
    """Say whether ``settings`` fit ``budget_bytes``; if not, rank changes that would.

    Args:
        spec: an :class:`~tunewise.memory.architecture.ArchSpec`, or anything ``load_arch`` reads.
        settings: keyword arguments of :func:`tunewise.memory.estimate.estimate`.
        budget_bytes: device memory in bytes, or a size such as "24GB".
        budget_source: where the budget came from (shown to the user).
        headroom: fraction kept free.
        max_alternatives: how many fitting alternatives to return, best first.

    Returns:
        An :class:`Advice`.
    """
    from tunewise.memory.architecture import ArchSpec, load_arch
    from tunewise.memory.estimate import estimate

    spec = spec if isinstance(spec, ArchSpec) else load_arch(spec)
    budget_bytes = parse_memory_size(budget_bytes)
    if budget_bytes <= 0:
        raise TunewiseError(f"--device-memory: must be positive, got {budget_bytes}")
    if not 0 <= headroom < 1:
        raise TunewiseError(f"--headroom: must be in [0, 1), got {headroom}")
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(estimate).parameters.items() if p.kind is p.KEYWORD_ONLY}
    settings = {**defaults, **settings}
    base = estimate(spec, **settings)
    usable = budget_bytes * (1 - headroom)
    fits = base.total_bytes <= usable
    alternatives: list[Alternative] = []
    if not fits:
        singles = [c for c in _CHANGES + _batch_changes(settings) if c[3](settings)]
        single_fits: dict[str, bool] = {}
        for label, cost, apply, _ok in singles:
            alt = _try(spec, settings, label, cost, apply(settings), usable)
            single_fits[label] = alt is not None
            if alt is not None:
                alternatives.append(alt)
        # Pairs only where neither change fits alone: otherwise the pair is just noise.
        seen = {tuple(sorted(a.settings.items())) for a in alternatives}
        for a_i, (label, cost, apply, _ok) in enumerate(singles):
            first = apply(settings)
            for label2, cost2, apply2, ok2 in singles[a_i + 1 :]:
                if single_fits[label] or single_fits[label2] or not ok2(first):
                    continue
                alt = _try(spec, settings, f"{label} + {label2}", cost + cost2, apply2(first), usable)
                key = tuple(sorted(alt.settings.items())) if alt else None
                if alt is not None and key not in seen:
                    seen.add(key)
                    alternatives.append(alt)
        alternatives.sort(key=lambda a: (a.cost, a.estimate.total_bytes))
    return Advice(base, int(budget_bytes), budget_source, headroom, fits, alternatives[:max_alternatives])


def _try(spec: Any, settings: dict, label: str, cost: float, changed: dict, usable: float) -> Alternative | None:
    """The alternative if ``changed`` is a valid configuration that fits, else None."""
    from tunewise.memory.estimate import estimate

    if changed == settings:
        return None
    try:
        est = estimate(spec, **changed)
    except TunewiseError:
        return None
    if est.total_bytes > usable:
        return None
    return Alternative(label, {k: v for k, v in changed.items() if settings.get(k) != v}, est, cost)


def check_fits(estimate: Any, available_bytes: int, *, device: str = "cpu", allow: bool = False, option: str = "--ignore-memory-check") -> bool:
    """Stop a run whose estimated peak exceeds the memory available (before training).

    Args:
        estimate: the run's :class:`MemoryEstimate`.
        available_bytes: what :func:`available_memory` (or the user) says is free.
        device: for the message.
        allow: the user's override: warn (return False) instead of raising.
        option: the flag that sets ``allow``, named in the message.

    Returns:
        True when it fits, False when it does not but ``allow`` is set.

    Raises:
        TunewiseError: it does not fit and ``allow`` is not set.
    """
    if estimate.total_bytes <= available_bytes:
        return True
    if allow:
        return False
    raise TunewiseError(
        f"memory: the estimated peak {format_bytes(estimate.total_bytes)} exceeds the {format_bytes(available_bytes)} available on {device}; "
        f"run `tunewise memory` for changes that fit (e.g. gradient checkpointing, a smaller batch, LoRA), or pass {option}"
    )


def preflight(model: Any, settings: dict, *, device: str = "cpu", allow: bool = False, available_bytes: int | None = None) -> Any:
    """What a training run calls before it starts: estimate, compare with free memory, stop if too big.

    Args:
        model: anything :func:`tunewise.memory.architecture.load_arch` accepts.
        settings: keyword arguments of :func:`tunewise.memory.estimate.estimate` (``device`` is set here).
        device: the device the run trains on.
        allow: the run's override (``check_memory: false`` / ``--ignore-memory-check``).
        available_bytes: free memory; default :func:`available_memory` of ``device``.

    Returns:
        The :class:`MemoryEstimate`, to be written to metrics.json with :func:`compare` after training.

    Raises:
        TunewiseError: the estimate exceeds the free memory and ``allow`` is False.
    """
    from tunewise.memory.architecture import load_arch
    from tunewise.memory.estimate import estimate

    est = estimate(load_arch(model), **{**settings, "device": device})
    free = available_bytes if available_bytes is not None else available_memory(device)[0]
    # On CUDA the context is already resident in a running process: compare what is still to come.
    check_fits(est, free + (est.outside_allocator_bytes if str(device).startswith("cuda") else 0), device=device, allow=allow)
    return est


def compare(estimate: Any, peak: Any) -> dict:
    """The block a training run writes to metrics.json: estimate, measurement and error.

    Args:
        estimate: :class:`MemoryEstimate` of the run.
        peak: a finished :class:`~tunewise.memory.measure.PeakMemory`.

    Returns:
        {"estimated_bytes", "measured_bytes", "method", "error_pct", "estimate": {...}}; on
        CUDA the estimate compared is the part the caching allocator sees (no context).
    """
    on_cuda = str(peak.method).startswith("torch.cuda")
    estimated = estimate.allocator_bytes if on_cuda else estimate.total_bytes
    measured = int(peak.peak_bytes)
    error = 100.0 * (estimated - measured) / measured if measured else None
    return {
        "estimated_bytes": int(estimated), "measured_bytes": measured, "method": peak.method,
        "error_pct": None if error is None else round(error, 1), "estimate": estimate.as_dict(),
    }
