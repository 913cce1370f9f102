"""``qlora``: the frozen base in 4-bit NF4 (bitsandbytes) with LoRA adapters in higher precision.

Needs ``pip install "tunewise[qlora]"``. On a CUDA GPU that is all; on CPU it also needs a
bitsandbytes with a CPU backend (0.50 or later quantizes and multiplies NF4 on the CPU).
Without them it stops in :func:`resolve_strategy`, before any data is read or anything is
written. The merged model is built by re-loading the base in full precision and folding the
adapter in (4-bit weights cannot hold the update exactly).

On CPU, QLoRA trades no speed for memory (SmolLM2-135M, batch 8 x 64 tokens, 2 cores: 0.94 s
per step with bf16 matmuls against LoRA's 1.67 s in fp32); what it buys is a base model a
quarter of its fp32 size: the way to adapt a model that does not fit in RAM otherwise.

References: Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs", arXiv:2305.14314.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError
from tunewise.strategies.base import ADAPTER_LR, STRATEGIES, backbone_of
from tunewise.strategies.lora import LoraOptions, save_lora, set_backbone, wrap_with_lora
from tunewise.strategies.options import part
from tunewise.strategies.schedule import callbacks_hook, param_groups_hook

_DTYPES = ("auto", "bf16", "fp16", "fp32")


@dataclass
class QuantOptions:
    """How the frozen base is quantized (bitsandbytes NF4)."""

    compute_dtype: str = field(default="auto", metadata={"help": "Dtype of the 4-bit matmuls: auto (bf16 where the GPU or CPU "
                                                                "has bf16 arithmetic, else fp16 on GPU, fp32 on CPU), bf16, fp16 or fp32."})
    double_quant: bool = field(default=True, metadata={"help": "Quantize the quantization constants too (saves ~0.4 bit/param)."})

    def __post_init__(self) -> None:
        if self.compute_dtype not in _DTYPES:
            raise TunewiseError(f"strategy.compute_dtype: use auto, bf16, fp16 or fp32, got '{self.compute_dtype}'")


@dataclass
class QLoraOptions(LoraOptions):
    """LoRA over a 4-bit NF4 base: every LoRA option and rule, plus the quantization part
    (one level of inheritance: see :mod:`tunewise.strategies.options`)."""

    quant: QuantOptions = part(QuantOptions)


def is_bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


@functools.lru_cache(maxsize=1)
def bitsandbytes_cpu_problem() -> str | None:
    """Why this bitsandbytes cannot quantize to NF4 on CPU, or None when it can (a real round trip)."""
    import torch

    try:
        import bitsandbytes
        import bitsandbytes.functional as bnbf

        packed, state = bnbf.quantize_4bit(torch.linspace(-1, 1, 128).reshape(2, 64), blocksize=64, quant_type="nf4")
        back = bnbf.dequantize_4bit(packed, state, quant_type="nf4")
        if back.shape != (2, 64) or not torch.isfinite(back).all():
            return f"bitsandbytes {bitsandbytes.__version__} returned a wrong NF4 round trip on CPU"
    except Exception as err:  # an old bitsandbytes raises anything from RuntimeError to NotImplementedError
        version = getattr(sys.modules.get("bitsandbytes"), "__version__", "?")
        return f"bitsandbytes {version} has no CPU 4-bit backend ({type(err).__name__})"
    return None


def check_qlora(options: QLoraOptions, config: RunConfig) -> None:
    """Stop before any work without bitsandbytes, or on CPU with one that has no CPU backend."""
    from tunewise.models.loading import pick_device

    device = pick_device(config.train.device)
    if not is_bitsandbytes_available():
        raise TunewiseError('strategy qlora: needs bitsandbytes; pip install "tunewise[qlora]" (or use strategy: lora)')
    if not device.startswith("cuda"):
        problem = bitsandbytes_cpu_problem()
        if problem is not None:
            raise TunewiseError(f"strategy qlora: no CUDA GPU here and {problem}; "
                                'pip install -U "bitsandbytes>=0.50", or use strategy: lora')


def compute_dtype(options: QuantOptions, device: Any) -> Any:
    """The dtype of the 4-bit matmuls: the option, or for auto the fastest one the device has."""
    import torch

    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if options.compute_dtype != "auto":
        return dtypes[options.compute_dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    from bitsandbytes.functional import has_avx512bf16

    return torch.bfloat16 if has_avx512bf16() else torch.float32


def load_4bit(model_class: Any, source: str, device: Any, options: QuantOptions) -> Any:
    """``model_class.from_pretrained(source)`` with its linear layers in 4-bit NF4 on ``device``,
    prepared for adapter training (peft's ``prepare_model_for_kbit_training``)."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    from tunewise.models.loading import load_pretrained_model

    device = torch.device(device)
    dtype = compute_dtype(options, device)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                             bnb_4bit_use_double_quant=options.double_quant)
    place: int | str = (device.index or 0) if device.type == "cuda" else "cpu"
    quantized = load_pretrained_model(model_class, source, quantization_config=bnb, device_map={"": place}, dtype=dtype)
    for module in quantized.modules():
        # bitsandbytes' CPU backend repacks a 4-bit weight for a no-grad forward (evaluation) into a
        # layout whose matmul has no backward; training after an evaluation (the "before" score, the
        # time curve's per-epoch points) would then lose the gradient through every frozen layer.
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return prepare_model_for_kbit_training(quantized, use_gradient_checkpointing=False)


def quantize_backbone(model: Any, task: Any, options: QuantOptions) -> Any:
    """Re-load the task's backbone from its folder in 4-bit NF4 on its device.

    The backbone's own class re-loads it (``LlamaForCausalLM`` keeps its LM head, ``BertModel``
    stays a bare encoder): ``AutoModel`` would drop a causal LM's head.
    """
    backbone = backbone_of(task, model)
    device = next(backbone.parameters()).device
    quantized = load_4bit(type(backbone), backbone.config._name_or_path, device, options)
    return set_backbone(task, model, quantized)


@STRATEGIES.register("qlora")
class QLoraStrategy:
    name = "qlora"
    default_learning_rate = ADAPTER_LR  # train.learning_rate when the config leaves it empty
    options = QLoraOptions
    check = staticmethod(check_qlora)

    @staticmethod
    def prepare(model: Any, task: Any, options: QLoraOptions, config: RunConfig) -> Any:
        model = quantize_backbone(model, task, options.quant)
        return wrap_with_lora(model, task, options)

    @staticmethod
    def save(model: Any, task: Any, path: Path, options: QLoraOptions, config: RunConfig) -> None:
        save_lora(model, task, path, options, config, strategy="qlora")

    param_groups = staticmethod(param_groups_hook)
    callbacks = staticmethod(callbacks_hook)
