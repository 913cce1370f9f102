"""``lora``: low-rank adapters through peft; the pre-trained weights stay frozen.

Each targeted linear layer W gets W + (alpha / r) * B A with A (r x in) and B (out x r)
trained, B starting at zero so training starts from the pre-trained model. Target modules
come from peft's per-architecture table (``query``/``value`` for BERT, ``q_proj``/``v_proj``
for Llama...) and fall back to every linear layer inside the transformer blocks; a task can
ask for every linear layer of the blocks (causal LMs do: on the LLM demo, q/v adapters
learned the output format but no answer, all-linear ones matched full fine-tuning, as
Dettmers et al. 2023 found for QLoRA); names given in ``target_modules`` must exist in the model.

The run folder gets the adapter in ``adapter/`` (peft format, plus ``tunewise_adapter.json``
naming the base model); with ``merge: true`` (default) the folder itself is a plain merged
model that loads without peft. ``tunewise merge`` merges a run trained with ``merge: false``.

References: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from torch import nn

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError, did_you_mean
from tunewise.memory.estimate import DEFAULT_LORA_DROPOUT
from tunewise.strategies.base import ADAPTER_LR, STRATEGIES, backbone_of
from tunewise.strategies.layers import find_blocks
from tunewise.strategies.schedule import ScheduleOptions, param_groups, prepare_head, schedule_callbacks

ADAPTER_DIR = "adapter"
ADAPTER_INFO = "tunewise_adapter.json"


@dataclass
class LoraOptions(ScheduleOptions):
    """Low-rank adapters (peft LoraConfig) plus the shared learning-rate options."""

    rank: int = field(default=8, metadata={"help": "Rank r of the update B A."})
    alpha: float = field(default=16.0, metadata={"help": "Scale: the update is multiplied by alpha / rank."})
    dropout: float = field(default=DEFAULT_LORA_DROPOUT, metadata={"help": "Dropout on the adapter input, in [0, 1)."})
    target_modules: list[str] | None = field(default=None, metadata={"help": "Module names to adapt (default: per architecture)."})
    merge: bool = field(default=True, metadata={"help": "Write the run's model merged (loads without peft); the adapter is kept in adapter/."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank < 1:
            raise TunewiseError(f"strategy.rank: must be at least 1, got {self.rank}")
        if self.alpha <= 0:
            raise TunewiseError(f"strategy.alpha: must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise TunewiseError(f"strategy.dropout: must be in [0, 1), got {self.dropout}")
        if self.target_modules is not None and not self.target_modules:
            raise TunewiseError("strategy.target_modules: give at least one module name, or leave it out for the default")
        if not self.merge and (self.interpolate or self.head_dim):
            which = "interpolate" if self.interpolate else "head_dim"
            raise TunewiseError(f"strategy.{which}: needs strategy.merge: true with LoRA")


def _adaptable(backbone: nn.Module) -> dict[str, nn.Module]:
    from transformers.pytorch_utils import Conv1D

    return {n: m for n, m in backbone.named_modules() if isinstance(m, (nn.Linear, Conv1D, nn.Embedding, nn.Conv2d))}


def is_linear(module: nn.Module) -> bool:
    """A linear layer LoRA can adapt: ``nn.Linear`` (bitsandbytes' 4-bit one included) or GPT-2's Conv1D."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (nn.Linear, Conv1D))


def default_targets(backbone: nn.Module, *, all_linear: bool = False) -> list[str]:
    """peft's targets for the architecture, else (or with ``all_linear``) every linear layer in the blocks.

    Returns the leaf names (``q_proj``, ``down_proj``...); the output layer and embeddings,
    which sit outside the blocks, are never targets.
    """
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as TABLE

    model_type = getattr(getattr(backbone, "config", None), "model_type", None)
    if model_type in TABLE and not all_linear:
        return sorted(TABLE[model_type])
    path, _ = find_blocks(backbone)
    leaves = {n.rsplit(".", 1)[-1] for n, m in _adaptable(backbone).items() if n.startswith(f"{path}.") and is_linear(m)}
    if not leaves:
        raise TunewiseError("strategy.target_modules: found no linear layers to adapt; name them, e.g. [query, value]")
    return sorted(leaves)


def check_targets(backbone: nn.Module, targets: list[str]) -> None:
    """Every target must name a module (exactly or as the last dotted part).

    Raises:
        TunewiseError: naming the first missing target and the closest existing name.
    """
    names = list(_adaptable(backbone))
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
    for t in targets:
        if not any(n == t or n.endswith(f".{t}") for n in names):
            raise TunewiseError(
                f"strategy.target_modules: '{t}' is not a module of this model{did_you_mean(t, leaves)}; "
                f"linear layers here: {', '.join(leaves[:12])}"
            )


def set_backbone(task: Any, model: Any, backbone: nn.Module) -> Any:
    """Put ``backbone`` in place of the task model's backbone; returns the (possibly new) model."""
    setter = getattr(task, "set_backbone", None)
    if setter is not None:
        setter(model, backbone)
        return model
    if backbone_of(task, model) is task.modules(model):
        return backbone
    raise TunewiseError(f"strategy: task '{task.spec.name}' cannot swap its backbone for adapters; use strategy: full or partial")


def lora_config(options: LoraOptions, targets: list[str]):
    from peft import LoraConfig

    return LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout,
                      target_modules=list(targets), bias="none")


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft reads transformers' deprecated ``is_gradient_checkpointing``: a FutureWarning per wrap."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield


def lora_targets(task: Any, backbone: nn.Module, options: LoraOptions) -> list[str]:
    """The module names a run adapts: ``target_modules``, else the default for the task and model."""
    return options.target_modules or default_targets(backbone, all_linear=task.spec.lora_all_linear)


def wrap_with_lora(model: Any, task: Any, options: LoraOptions) -> Any:
    """Freeze the backbone and wrap it in a peft LoRA model (targets checked first)."""
    from peft import get_peft_model

    backbone = backbone_of(task, model)
    targets = lora_targets(task, backbone, options)
    check_targets(backbone, targets)
    model = prepare_head(model, task, options)
    for p in task.modules(model).parameters():
        p.requires_grad_(False)
    with _quiet_peft():
        peft_model = get_peft_model(backbone, lora_config(options, targets))
    model = set_backbone(task, model, peft_model)
    for m in _head(task, model):
        for p in m.parameters():
            p.requires_grad_(True)
    return model


def _head(task: Any, model: Any) -> list:
    from tunewise.strategies.base import head_modules_of

    return head_modules_of(task, model)


def save_lora(model: Any, task: Any, path: Path, options: LoraOptions, config: RunConfig, strategy: str = "lora") -> None:
    """Write ``adapter/`` (peft) and, with ``merge``, the merged plain model in ``path``."""
    from tunewise.models.loading import resolve_model

    peft_model = backbone_of(task, model)
    adapter = path / ADAPTER_DIR
    peft_model.save_pretrained(str(adapter), safe_serialization=True)
    # A task with its own default model (causal_lm: packaged SmolLM2) says where its base lives.
    source = task.model_source(config) if hasattr(task, "model_source") else resolve_model(config.model)
    info = {"base_model": source, "task": config.task, "strategy": strategy,
            "rank": options.rank, "alpha": options.alpha, "merged": options.merge}
    (adapter / ADAPTER_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if options.merge:
        model = set_backbone(task, model, merged_backbone(peft_model, strategy))
    task.save(model, path)


def merged_backbone(peft_model: Any, strategy: str = "lora") -> nn.Module:
    """The base model with the adapter folded in (``merge_and_unload``); a plain transformers model."""
    if strategy == "qlora":
        # 4-bit weights cannot hold the update: re-load the base in full precision and apply the adapter there.
        return _merge_full_precision(peft_model)
    return peft_model.merge_and_unload()


def _merge_full_precision(peft_model: Any) -> nn.Module:
    import tempfile

    import torch
    from peft import PeftModel

    base_path = peft_model.peft_config["default"].base_model_name_or_path
    base_class = type(peft_model.get_base_model())  # the quantized model's own class: a causal LM keeps its head
    with tempfile.TemporaryDirectory() as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        base = base_class.from_pretrained(base_path, dtype=torch.float32)
        with _quiet_peft():
            return PeftModel.from_pretrained(base, tmp).merge_and_unload()


def merge_run(run_dir: str | Path, output_dir: str | Path, *, overwrite: bool = False) -> Path:
    """``tunewise merge``: fold a run's LoRA adapter into its base model; the result loads without peft.

    Raises:
        TunewiseError: the folder holds no tunewise adapter, or the output exists.
    """
    from peft import PeftModel

    from tunewise.config import load_config
    from tunewise.models.loading import pick_device
    from tunewise.outputs import check_output_dir, staged_dir, write_text
    from tunewise.tasks import TASKS

    run = Path(run_dir).expanduser()
    info_file = run / ADAPTER_DIR / ADAPTER_INFO
    if not info_file.is_file():
        raise TunewiseError(f"merge: {run} has no {ADAPTER_DIR}/{ADAPTER_INFO}; give the folder of a lora or qlora run")
    info = json.loads(info_file.read_text(encoding="utf-8"))
    out = check_output_dir(output_dir, overwrite)
    cfg = load_config(run / "config.yaml") if (run / "config.yaml").is_file() else load_config(None)
    cfg.model = info["base_model"]
    task = TASKS.get(info.get("task", cfg.task))()
    model = task.load_model(cfg, pick_device("cpu"))
    backbone = backbone_of(task, model)
    with _quiet_peft():
        merged = PeftModel.from_pretrained(backbone, str(run / ADAPTER_DIR)).merge_and_unload()
    model = set_backbone(task, model, merged)
    with staged_dir(out) as staging:
        task.save(model, staging)
        write_text(staging / "merged_from.json", json.dumps({"run": str(run), **info}, indent=2) + "\n")
    return out


@STRATEGIES.register("lora")
class LoraStrategy:
    name = "lora"
    default_learning_rate = ADAPTER_LR  # train.learning_rate when the config leaves it empty
    options = LoraOptions

    @staticmethod
    def prepare(model: Any, task: Any, options: LoraOptions, config: RunConfig) -> Any:
        return wrap_with_lora(model, task, options)

    @staticmethod
    def save(model: Any, task: Any, path: Path, options: LoraOptions, config: RunConfig) -> None:
        save_lora(model, task, path, options, config)

    param_groups = staticmethod(param_groups)
    callbacks = staticmethod(schedule_callbacks)
