"""Trainer arguments every task shares: one place for seeds, schedule, precision and safety.

Each task adds what is its own (samplers, packing, evaluation) on top of
:func:`common_training_kwargs` and builds its Trainer family's arguments class with them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError


def precision_flags(precision: str, device: str) -> dict[str, bool]:
    """Trainer flags for a precision setting; mixed fp16 needs CUDA."""
    on_cuda = device.startswith("cuda")
    if precision == "auto":
        if not on_cuda:
            return {"fp16": False, "bf16": False}
        return {"bf16": True, "fp16": False} if torch.cuda.is_bf16_supported() else {"fp16": True, "bf16": False}
    if precision == "fp16" and not on_cuda:
        raise TunewiseError("train.precision: fp16 mixed precision needs a CUDA GPU; use fp32 or bf16 on CPU")
    return {"fp16": precision == "fp16", "bf16": precision == "bf16"}


def common_training_kwargs(config: RunConfig, workdir: Path, device: str) -> dict[str, Any]:
    """TrainingArguments fields shared by every task (transformers, sentence-transformers, TRL)."""
    tc = config.train
    from dataclasses import fields

    from transformers import TrainingArguments

    # transformers 5 renamed gradient_checkpointing (the old name warns on every run)
    names = {f.name for f in fields(TrainingArguments)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return dict(
        output_dir=str(workdir),
        **{checkpointing: tc.gradient_checkpointing},
        num_train_epochs=tc.epochs,
        per_device_train_batch_size=tc.batch_size,
        learning_rate=tc.learning_rate,
        warmup_steps=tc.warmup_ratio,  # a float < 1 is a ratio of the total steps
        weight_decay=tc.weight_decay,
        seed=config.seed,
        data_seed=config.seed,
        logging_strategy="epoch",
        logging_nan_inf_filter=False,  # a NaN loss is logged as NaN (the Trainer would hide it)
        report_to="none",
        save_only_model=True,  # safetensors weights only: no pickled optimizer state on disk
        use_cpu=not device.startswith("cuda"),
        dataloader_num_workers=0,
        **precision_flags(tc.precision, device),
    )
