"""The memory planner inside a training run: estimate before, compare with the measurement after.

Every ``tunewise fit`` estimates its peak from the architecture and the run's settings,
stops before training when the estimate exceeds the free memory (``train.check_memory:
false`` overrides), and writes the estimate beside the measured peak in metrics.json.
"""

from __future__ import annotations

from typing import Any

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError

# tunewise task name -> the estimator's model of that task's training step
_TASKS = {"embedding": "embedding", "classification": "classification", "causal_lm": "causal_lm",
          "image-classification": "image", "image-search": "image"}


def _precision(cfg: RunConfig, device: str) -> str:
    if cfg.strategy_name == "qlora":
        return "4bit"
    if cfg.train.precision in ("fp16", "bf16"):
        return cfg.train.precision
    if cfg.train.precision == "auto" and device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def _seq_len(cfg: RunConfig, model: Any) -> int:
    if cfg.task == "causal_lm":
        return int(cfg.llm.max_length)
    if cfg.train.max_seq_length:
        return int(cfg.train.max_seq_length)
    for attr in ("max_seq_length",):  # sentence-transformers
        value = getattr(model, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    config = getattr(model, "config", None)
    return int(min(getattr(config, "max_position_embeddings", 512) or 512, 512))


def run_settings(cfg: RunConfig, model: Any, device: str) -> dict[str, Any] | None:
    """Keyword arguments for :func:`tunewise.memory.estimate.estimate` describing this run."""
    task = _TASKS.get(cfg.task)
    if task is None:
        return None
    settings: dict[str, Any] = {
        "task": task, "strategy": cfg.strategy_name, "precision": _precision(cfg, device), "optimizer": "adamw",
        "batch_size": cfg.train.batch_size, "seq_len": _seq_len(cfg, model),
        "gradient_checkpointing": cfg.train.gradient_checkpointing,
    }
    if "rank" in cfg.strategy:
        settings["lora_rank"] = int(cfg.strategy["rank"])
    if task == "image":
        settings["image_size"] = int(cfg.image.size)
    return settings


def preflight_run(cfg: RunConfig, model: Any, device: str) -> tuple[Any | None, str]:
    """Estimate the run's peak and stop if it cannot fit.

    Returns:
        (the MemoryEstimate or None, a note on why there is none).

    Raises:
        TunewiseError: the estimate exceeds the free memory and ``train.check_memory`` is on.
    """
    from tunewise.memory.advise import available_memory, check_fits
    from tunewise.memory.architecture import load_arch
    from tunewise.memory.estimate import estimate
    from tunewise.models.loading import resolve_model

    settings = run_settings(cfg, model, device)
    if settings is None:
        return None, f"no memory model for task '{cfg.task}'"
    try:
        spec = load_arch(resolve_model(cfg.model) if cfg.task in ("embedding", "classification") else
                         getattr(model, "config", None) or resolve_model(cfg.model))
        est = estimate(spec, **settings, device=device)
    except TunewiseError as err:  # an architecture the estimator cannot read: measure only
        return None, f"not estimated ({err})"
    free = available_memory(device)[0]
    check_fits(est, free + (est.outside_allocator_bytes if device.startswith("cuda") else 0), device=device,
               allow=not cfg.train.check_memory, option="--set train.check_memory=false")
    return est, ""


def memory_block(est: Any | None, note: str, peak: Any) -> dict[str, Any]:
    """metrics.json's ``memory``: the measured peak, and the estimate with its error when there is one."""
    block: dict[str, Any] = peak.as_dict()
    if est is None:
        block["estimate_note"] = note
        return block
    from tunewise.memory.advise import compare

    block.update(compare(est, peak))
    return block
