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
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError, did_you_mean
from tunewise.memory.estimate import DEFAULT_LORA_DROPOUT
from tunewise.strategies.base import ADAPTER_LR, STRATEGIES, backbone_of, head_modules_of
from tunewise.strategies.layers import find_blocks
from tunewise.strategies.options import WiseFTOptions, part
from tunewise.strategies.schedule import ScheduleOptions, callbacks_hook, param_groups_hook, prepare_head
from tunewise.tasks.base import HasModelSource, SwapsBackbone

ADAPTER_DIR = "adapter"
ADAPTER_INFO = "tunewise_adapter.json"
# what `tunewise merge` carries from the run folder: tokenizer and processor files (by name prefix)
PREPROCESSING_FILES = ("tokenizer", "special_tokens_map", "added_tokens", "vocab", "merges", "spiece",
                       "sentencepiece", "chat_template", "preprocessor_config", "processor_config")


@dataclass
class AdapterOptions:
    """Low-rank adapters (peft LoraConfig) and how the run's model is written."""

    rank: int = field(default=8, metadata={"help": "Rank r of the update B A."})
    alpha: float = field(default=16.0, metadata={"help": "Scale: the update is multiplied by alpha / rank."})
    dropout: float = field(default=DEFAULT_LORA_DROPOUT, metadata={"help": "Dropout on the adapter input, in [0, 1)."})
    target_modules: list[str] | None = field(default=None, metadata={"help": "Module names to adapt (default: per architecture)."})
    merge: bool = field(default=True, metadata={"help": "Write the run's model merged (loads without peft); the adapter is kept in adapter/."})

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise TunewiseError(f"strategy.rank: must be at least 1, got {self.rank}")
        if self.alpha <= 0:
            raise TunewiseError(f"strategy.alpha: must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise TunewiseError(f"strategy.dropout: must be in [0, 1), got {self.dropout}")
        if self.target_modules is not None and not self.target_modules:
            raise TunewiseError("strategy.target_modules: give at least one module name, or leave it out for the default")


@dataclass
class LoraOptions:
    """Low-rank adapters plus the shared learning-rate and WiSE-FT options."""

    schedule: ScheduleOptions = part(ScheduleOptions)
    wiseft: WiseFTOptions = part(WiseFTOptions)
    adapter: AdapterOptions = part(AdapterOptions)

    def __post_init__(self) -> None:
        # a blend or a new head needs the plain model that only merging gives
        if not self.adapter.merge and (self.wiseft.interpolate or self.schedule.head_dim):
            which = "interpolate" if self.wiseft.interpolate else "head_dim"
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
    if isinstance(task, SwapsBackbone):
        task.set_backbone(model, backbone)
        return model
    if backbone_of(task, model) is task.modules(model):
        return backbone
    raise TunewiseError(f"strategy: task '{task.spec.name}' cannot swap its backbone for adapters; use strategy: full or partial")


def lora_config(options: AdapterOptions, targets: list[str]):
    from peft import LoraConfig

    return LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout,
                      target_modules=list(targets), bias="none")


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """peft reads transformers' deprecated ``is_gradient_checkpointing``: a FutureWarning per wrap."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield


def lora_targets(task: Any, backbone: nn.Module, options: AdapterOptions) -> list[str]:
    """The module names a run adapts: ``target_modules``, else the default for the task and model."""
    return options.target_modules or default_targets(backbone, all_linear=task.spec.lora_all_linear)


def wrap_with_lora(model: Any, task: Any, options: LoraOptions) -> Any:
    """Freeze the backbone and wrap it in a peft LoRA model (targets checked first)."""
    from peft import get_peft_model

    backbone = backbone_of(task, model)
    targets = lora_targets(task, backbone, options.adapter)
    check_targets(backbone, targets)
    model = prepare_head(model, task, options.schedule)
    for p in task.modules(model).parameters():
        p.requires_grad_(False)
    with _quiet_peft():
        peft_model = get_peft_model(backbone, lora_config(options.adapter, targets))
    model = set_backbone(task, model, peft_model)
    for m in head_modules_of(task, model):
        for p in m.parameters():
            p.requires_grad_(True)
    return model


def save_lora(model: Any, task: Any, path: Path, options: LoraOptions, config: RunConfig, strategy: str = "lora") -> None:
    """Write ``adapter/`` (peft) and, with ``merge``, the merged plain model in ``path``."""
    from tunewise.models.loading import resolve_model

    peft_model = backbone_of(task, model)
    adapter = path / ADAPTER_DIR
    peft_model.save_pretrained(str(adapter), safe_serialization=True)
    # A task with its own default model (a packaged one) says where its base lives.
    source = task.model_source(config) if isinstance(task, HasModelSource) else resolve_model(config.model)
    if Path(source).expanduser().is_dir():  # absolute, so that `tunewise merge` works from any directory
        source = str(Path(source).expanduser().resolve())
    info = {"base_model": source, "task": config.task, "strategy": strategy,
            "rank": options.adapter.rank, "alpha": options.adapter.alpha, "merged": options.adapter.merge}
    (adapter / ADAPTER_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if options.adapter.merge:
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

    from tunewise.models.loading import load_adapter, load_pretrained_model

    base_path = peft_model.peft_config["default"].base_model_name_or_path
    base_class = type(peft_model.get_base_model())  # the quantized model's own class: a causal LM keeps its head
    with tempfile.TemporaryDirectory() as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        base = load_pretrained_model(base_class, base_path, dtype=torch.float32)
        with _quiet_peft():
            return load_adapter(base, tmp).merge_and_unload()


def merge_run(run_dir: str | Path, output_dir: str | Path, *, overwrite: bool = False) -> Path:
    """``tunewise merge``: fold a run's LoRA adapter into its base model; the result loads without peft.

    Raises:
        TunewiseError: the folder holds no tunewise adapter, or the output exists.
    """
    from tunewise.config import load_config
    from tunewise.models.loading import load_adapter, pick_device
    from tunewise.outputs import check_output_dir, staged_dir, write_text
    from tunewise.tasks import TASKS

    run = Path(run_dir).expanduser()
    info_file = run / ADAPTER_DIR / ADAPTER_INFO
    if not info_file.is_file():
        raise TunewiseError(f"merge: {run} has no {ADAPTER_DIR}/{ADAPTER_INFO}; give the folder of a lora or qlora run")
    info = json.loads(info_file.read_text(encoding="utf-8"))
    if Path(output_dir).expanduser().resolve() in (run.resolve(), *run.resolve().parents):
        raise TunewiseError(f"--output-dir: {output_dir} is (or contains) the run being merged; write the merged model to another folder")
    out = check_output_dir(output_dir, overwrite)
    cfg = load_config(run / "config.yaml") if (run / "config.yaml").is_file() else load_config(None)
    cfg.model = info["base_model"]
    task = TASKS.get(info.get("task", cfg.task))()
    # Classifiers and image tasks save the merged model in the run folder (their trained head is not in the
    # base model): their merge is that model, copied as it is.
    copy_model = getattr(task, "saves_merged", False)
    if copy_model and (not (run / "config.json").is_file() or not any(run.glob("*.safetensors"))):
        raise TunewiseError(f"merge: {run} has no saved model (config.json, *.safetensors); give the folder of a finished run")
    if not copy_model:
        model = task.load_model(cfg, pick_device("cpu"))
        backbone = backbone_of(task, model)
        with _quiet_peft():
            merged = load_adapter(backbone, run / ADAPTER_DIR).merge_and_unload()
        model = set_backbone(task, model, merged)
    with staged_dir(out) as staging:
        if not copy_model:
            task.save(model, staging)
        for f in run.iterdir():  # the run's tokenizer / processor (a causal LM's comes with its data, not its model)
            model_file = copy_model and (f.name == "config.json" or f.suffix == ".safetensors"
                                         or f.name.endswith(".safetensors.index.json"))
            if f.is_file() and (model_file or f.name.startswith(PREPROCESSING_FILES)) and not (staging / f.name).exists():
                shutil.copy2(f, staging / f.name)
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

    param_groups = staticmethod(param_groups_hook)
    callbacks = staticmethod(callbacks_hook)
