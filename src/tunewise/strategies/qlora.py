"""``qlora``: the frozen base in 4-bit NF4 (bitsandbytes) with LoRA adapters in higher precision.

Needs a CUDA GPU and ``pip install "tunewise[qlora]"``; without either it stops in
:func:`resolve_strategy`, before any data is read or anything is written. The merged model is
built by re-loading the base in full precision and folding the adapter in (4-bit weights
cannot hold the update exactly).

References: Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs", arXiv:2305.14314.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError
from tunewise.strategies.base import STRATEGIES, backbone_of
from tunewise.strategies.lora import LoraOptions, save_lora, set_backbone, wrap_with_lora
from tunewise.strategies.schedule import param_groups, schedule_callbacks

_DTYPES = ("bf16", "fp16", "fp32")


@dataclass
class QLoraOptions(LoraOptions):
    """LoRA over a 4-bit NF4 base."""

    compute_dtype: str = field(default="bf16", metadata={"help": "Dtype of the 4-bit matmuls: bf16, fp16 or fp32."})
    double_quant: bool = field(default=True, metadata={"help": "Quantize the quantization constants too (saves ~0.4 bit/param)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.compute_dtype not in _DTYPES:
            raise TunewiseError(f"strategy.compute_dtype: use bf16, fp16 or fp32, got '{self.compute_dtype}'")


def is_bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def check_qlora(options: QLoraOptions, config: RunConfig) -> None:
    """Stop before any work without CUDA or bitsandbytes."""
    import torch

    if not torch.cuda.is_available() or config.train.device == "cpu":
        raise TunewiseError("strategy qlora: needs a CUDA GPU (4-bit NF4 through bitsandbytes) and none is available; "
                            "use strategy: lora here")
    if not is_bitsandbytes_available():
        raise TunewiseError('strategy qlora: needs bitsandbytes; pip install "tunewise[qlora]"')


def quantize_backbone(model: Any, task: Any, options: QLoraOptions) -> Any:
    """Re-load the task's backbone from its folder in 4-bit NF4 on the GPU."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModel, BitsAndBytesConfig

    backbone = backbone_of(task, model)
    source = backbone.config._name_or_path
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[options.compute_dtype]
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                             bnb_4bit_use_double_quant=options.double_quant)
    device = next(backbone.parameters()).device
    index = device.index if device.type == "cuda" and device.index is not None else 0
    quantized = AutoModel.from_pretrained(source, quantization_config=bnb, device_map={"": index}, dtype=dtype)
    quantized = prepare_model_for_kbit_training(quantized, use_gradient_checkpointing=False)
    return set_backbone(task, model, quantized)


@STRATEGIES.register("qlora")
class QLoraStrategy:
    name = "qlora"
    options = QLoraOptions
    check = staticmethod(check_qlora)

    @staticmethod
    def prepare(model: Any, task: Any, options: QLoraOptions, config: RunConfig) -> Any:
        model = quantize_backbone(model, task, options)
        return wrap_with_lora(model, task, options)

    @staticmethod
    def save(model: Any, task: Any, path: Path, options: QLoraOptions, config: RunConfig) -> None:
        save_lora(model, task, path, options, config, strategy="qlora")

    param_groups = staticmethod(param_groups)
    callbacks = staticmethod(schedule_callbacks)
