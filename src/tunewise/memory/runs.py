"""The memory planner inside a training run: estimate before, compare with the measurement after.

Every ``tunewise fit`` estimates its peak from the architecture and the run's settings,
stops before training when the estimate exceeds the free memory (``train.check_memory:
false`` overrides), and writes the estimate beside the measured peak in metrics.json.
"""

from __future__ import annotations

from typing import Any

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError


def _profile(cfg: RunConfig):
    """The task's memory profile (:class:`tunewise.tasks.base.MemoryProfile`), or None."""
    from tunewise.tasks.base import TASKS

    return TASKS.get(cfg.task).spec.memory


def _precision(cfg: RunConfig, device: str) -> str:
    if cfg.strategy_name == "qlora":
        return "4bit"
    from tunewise.precision import run_precision

    return run_precision(cfg, device)  # auto: bf16 on CUDA with bf16 and on CPUs with native bf16


def _longest_text(model: Any, data: Any, limit: int) -> int | None:
    """Effective tokens per text: the mean over columns of each column's longest text.

    Batches are padded to their longest text, not to the model's limit, and each column
    (query, answer) is padded on its own: short queries next to long answers cost
    ``max(query) + max(answer)`` tokens per example, which this spreads over the texts.
    """
    tokenizer = getattr(model, "tokenizer", None)
    rows = getattr(data, "train", None)
    if tokenizer is None or not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
        return None
    longest = []
    for column in rows[0]:
        texts = [row[column] for row in rows if isinstance(row.get(column), str)]
        if texts:
            ids = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=limit)["input_ids"]
            longest.append(max(len(x) for x in ids))
    return -(-sum(longest) // len(longest)) if longest else None


def _seq_len(cfg: RunConfig, model: Any, data: Any = None) -> int:
    sequence = _profile(cfg).sequence
    if sequence == "lm":
        # batches are padded to their longest sequence (packing fills llm.max_length)
        encoded = getattr(data, "train_encoded", None)
        if encoded and not cfg.llm.packing:
            return min(int(cfg.llm.max_length), max(len(e.input_ids) for e in encoded))
        return int(cfg.llm.max_length)
    if sequence == "labels":  # seq2seq: the decoder's tokens are the longest training label (speech transcripts)
        labels = getattr(data, "train_labels", None)
        if labels:
            return max(len(label) for label in labels)
    if sequence == "texts":
        limit = int(cfg.train.max_seq_length or getattr(model, "max_seq_length", 0) or 512)
        return _longest_text(model, data, limit) or limit
    if cfg.train.max_seq_length:
        return int(cfg.train.max_seq_length)
    for attr in ("max_seq_length",):  # sentence-transformers
        value = getattr(model, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None) or config  # CLIP: its text tower's limit
    return int(min(getattr(text, "max_position_embeddings", 512) or 512, 512))


_FUSED_QKV = {"c_attn", "qkv", "qkv_proj", "query_key_value", "wqkv", "in_proj", "w_pack"}
_QKV_NAMES = {"q": {"q_proj", "query", "q", "q_lin", "to_q", "wq"}, "k": {"k_proj", "key", "k", "k_lin", "to_k", "wk"},
              "v": {"v_proj", "value", "v", "v_lin", "to_v", "wv"}}


def lora_role(name: str, layer: Any) -> tuple[str, ...]:
    """The estimator's roles of one adapted layer of a block, from its name and shape.

    ``name`` is the layer's path inside the block (``self_attn.q_proj``, ``attention.output.dense``,
    ``mlp.c_fc``...). Attention layers are q, k, v (a fused qkv layer is all three) or else o;
    outside attention, a layer that widens its input is the MLP's input side, one that
    narrows it the output side.
    """
    leaf = name.rsplit(".", 1)[-1].lower()
    if leaf in _FUSED_QKV:
        return ("q", "k", "v")
    for role, names in _QKV_NAMES.items():
        if leaf in names:
            return (role,)
    if "attn" in name.lower() or "attention" in name.lower():
        return ("o",)
    weight = getattr(layer, "weight", None)
    n_in = getattr(layer, "in_features", None) or getattr(layer, "nx", None)
    n_out = getattr(layer, "out_features", None) or getattr(layer, "nf", None)
    if (n_in is None or n_out is None) and weight is not None and weight.dim() == 2:
        n_out, n_in = weight.shape
    return ("mlp_in",) if n_in is None or n_out is None or n_out >= n_in else ("mlp_out",)


def lora_layout(model: Any) -> dict[str, Any] | None:
    """The LoRA adapters a prepared model holds, as estimator settings (roles, rank, dropout).

    Read from the model itself (peft's ``LoraLayer`` modules in its first transformer block),
    so the estimate follows ``strategy.target_modules``, the task's default targets and peft's
    own choice alike. None when the model has no adapters in a block stack.
    """
    from torch import nn

    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return None
    from tunewise.strategies.layers import find_blocks

    if not isinstance(model, nn.Module):
        return None
    try:
        _, blocks = find_blocks(model)
    except TunewiseError:
        return None
    roles: set[str] = set()
    ranks, dropouts = [], []
    for name, module in blocks[0].named_modules():
        if not isinstance(module, LoraLayer) or not module.r:
            continue
        adapter = next(iter(module.r))
        roles.update(lora_role(name, module.get_base_layer()))
        ranks.append(int(module.r[adapter]))
        drop = module.lora_dropout[adapter]
        dropouts.append(float(drop.p) if isinstance(drop, nn.Dropout) else 0.0)
    if not roles:
        return None
    from tunewise.memory.params import LORA_ROLES

    return {"lora_targets": tuple(r for r in LORA_ROLES if r in roles), "lora_rank": max(ranks), "lora_dropout": max(dropouts)}


def run_settings(cfg: RunConfig, model: Any, device: str, data: Any = None) -> dict[str, Any] | None:
    """Keyword arguments for :func:`tunewise.memory.estimate.estimate` describing this run."""
    from tunewise.data.hard_negatives import extra_texts_per_example

    profile = _profile(cfg)
    if profile is None:
        return None
    settings: dict[str, Any] = {
        "step": profile.step, "strategy": cfg.strategy_name, "precision": _precision(cfg, device), "optimizer": "adamw",
        "batch_size": cfg.train.batch_size, "seq_len": _seq_len(cfg, model, data),
        "gradient_checkpointing": cfg.train.gradient_checkpointing,
    }
    if cfg.strategy_name in ("lora", "qlora"):
        layout = lora_layout(model)  # the adapters the strategy put in (the model is prepared by now)
        if layout is not None:
            settings.update(layout)
        elif "rank" in cfg.strategy:
            settings["lora_rank"] = int(cfg.strategy["rank"])
    if profile.texts_per_example is not None:
        settings["texts_per_example"] = profile.texts_per_example
    if profile.step == "contrastive" and (mined := extra_texts_per_example(cfg)):  # mined hard negatives: more texts per example
        from tunewise.memory.steps import step_model

        settings["texts_per_example"] = (profile.texts_per_example or step_model(profile.step).inputs_per_example) + mined
    if profile.sequence == "image":
        settings["image_size"] = int(cfg.image.size)
    if callable(extra := getattr(data, "memory_settings", None)):  # what only the task's data knows (speech: cached clips)
        settings.update(extra(cfg, model))
    return settings


def run_arch(cfg: RunConfig, model: Any) -> Any:
    """The architecture of a run's model: the loaded model's config where the task's profile says
    so (``arch_from: model``) and it has one, else read as :func:`tunewise.memory.plan.plan` reads it."""
    from tunewise.memory.architecture import load_arch
    from tunewise.memory.plan import arch_for_step, model_source, task_memory
    from tunewise.memory.steps import step_model

    name, task_obj, profile = task_memory(cfg.task)
    config = getattr(model, "config", None) if profile.arch_from == "model" else None
    if config is not None:
        return load_arch(config)
    image_size = int(cfg.image.size) if profile.sequence == "image" else None
    return arch_for_step(model_source(task_obj, name, cfg.model), step_model(profile.step), image_size)


def preflight_run(cfg: RunConfig, model: Any, device: str, data: Any = None) -> tuple[Any | None, str]:
    """Estimate the run's peak and stop if it cannot fit.

    Returns:
        (the MemoryEstimate or None, a note on why there is none).

    Raises:
        TunewiseError: the estimate exceeds the free memory and ``train.check_memory`` is on.
    """
    from tunewise.memory.advise import available_memory, check_fits
    from tunewise.memory.estimate import estimate

    settings = run_settings(cfg, model, device, data)
    if settings is None:
        return None, f"no memory model for task '{cfg.task}'"
    try:
        est = estimate(run_arch(cfg, model), **settings, device=device)
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


def choose_cpu_allocator(cfg: RunConfig, est: Any | None, device: str) -> tuple[str, Any | None]:
    """Configure glibc's allocator for a CPU run when it helps.

    Trimming (see :func:`tunewise.memory.measure.configure_cpu_allocator`) keeps the peak
    flat across steps (measured: 1726 vs 2054 MiB on the demo) but costs about 20% of the
    training throughput (10.3 vs 13.0 pairs/s), so ``auto`` trims only when memory is tight.

    Returns:
        What was chosen, and the estimate for it (glibc's default keeps freed blocks:
        :func:`tunewise.memory.allocator.with_cpu_allocator`).
    """
    if device.startswith("cuda"):
        return "n/a (cuda)", est
    from tunewise.memory.allocator import cpu_allocator_choice, with_cpu_allocator

    choice = cfg.train.cpu_allocator
    if choice == "auto":
        from tunewise.memory.advise import available_memory

        choice = cpu_allocator_choice(choice, None if est is None else est.total_bytes, available_memory(device)[0])
    if choice == "trim":
        from tunewise.memory.measure import configure_cpu_allocator

        choice = "trim" if configure_cpu_allocator() else "default (trim not supported here)"
    if est is not None:
        est = with_cpu_allocator(est, choice)
    return choice, est
