"""Parameter counts of a training step and the memory of weights, gradients and optimizer states.

Per component, in bytes (Rajbhandari et al. 2020, ZeRO):

* W = 4 P (fp32); mixed precision (torch autocast) keeps fp32 master weights and caches a
  16-bit copy of every matmul weight that backward needs: + 2 P_linear. QLoRA stores block
  linears in NF4: 0.5 byte + a 4-byte absmax per 64 weights = 0.5625 B/param (Dettmers et
  al. 2023), other weights (upcast by peft) in fp32.
* G = 4 P_trainable (fp32 gradients of fp32 master weights; LoRA adapters are fp32).
* O = 8 P_trainable for AdamW (exp_avg, exp_avg_sq), 2 for 8-bit AdamW (Dettmers et al.
  2022), 0 for SGD without momentum. Full fine-tuning with AdamW in mixed precision is
  therefore 4 + 2 + 4 + 8 = 18 bytes/param before activations, the 16-18 of the literature.
* LoRA adds r (in + out) per adapted projection (Hu et al. 2021).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunewise.memory.architecture import ArchSpec
from tunewise.memory.steps import StepModel

NF4_BYTES_PER_PARAM = 0.5 + 4 / 64
OPTIMIZER_STATE_BYTES = {"adamw": 8.0, "adamw8bit": 2.0, "sgd": 0.0}
DEFAULT_LORA_TARGETS = {"decoder": ("q", "v"), "encoder": ("q", "v"), "vit": ("q", "v"), "clip": ("q", "v"), "cnn": ()}
LORA_ROLES = ("q", "k", "v", "o", "mlp_in", "mlp_out")


def default_lora_targets(spec: ArchSpec, step: StepModel) -> tuple[str, ...]:
    """The roles adapted by default: every linear layer of a decoder trained as an LM, else q and v (peft's table)."""
    return LORA_ROLES if step.head == "vocabulary" and spec.family == "decoder" else DEFAULT_LORA_TARGETS[spec.family]


def lora_modules(spec: ArchSpec, role: str) -> tuple[int, int, int]:
    """(adapted layers, input width, output width) of one LoRA target role in a block
    (a gated MLP has two input projections)."""
    h, i, ad, kvd = spec.hidden, spec.intermediate, spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    shapes = {"q": (h, ad), "k": (h, kvd), "v": (h, kvd), "o": (ad, h), "mlp_in": (h, i), "mlp_out": (i, h)}
    return (2 if role == "mlp_in" and spec.gated_mlp else 1), *shapes[role]


def lora_params_per_layer(spec: ArchSpec, targets: tuple[str, ...], rank: int) -> int:
    """LoRA adds r*(in + out) per targeted projection (Hu et al. 2021)."""
    return sum(rank * layers * (n_in + n_out) for layers, n_in, n_out in (lora_modules(spec, t) for t in targets))


@dataclass(frozen=True)
class ParamCounts:
    """The parameter counts the memory of a step depends on."""

    params: int  # model + a new head
    trainable: int
    head: int  # the step's head (new, or CLIP's projections inside the model)
    lora: int  # LoRA adapter parameters (not in params)
    linear: int  # block nn.Linear weights (quantised by QLoRA, cast by autocast)
    lm_head: int  # V*h of a decoder's output projection (tied or not)
    k_layers: int  # blocks that keep activations for backward


def head_params(spec: ArchSpec, towers: tuple[ArchSpec, ...], step: StepModel, strategy: str, num_labels: int) -> int:
    """Parameters of the step's head (see :class:`~tunewise.memory.steps.StepModel`)."""
    width = towers[-1].hidden
    if step.head == "classes":
        return width * num_labels + num_labels
    if step.head == "projections":
        return spec.projection_dim * sum(t.hidden for t in towers)
    if strategy != "head":
        return 0
    if step.head == "dense":
        return width * width + width  # a trainable Dense layer on frozen embeddings
    if step.head == "vocabulary" and spec.tie_embeddings:
        return spec.vocab * spec.hidden  # untie a trainable lm_head
    return 0


def count_params(spec: ArchSpec, towers: tuple[ArchSpec, ...], step: StepModel, strategy: str, num_labels: int,
                 trainable_layers: int | None, targets: tuple[str, ...], rank: int) -> ParamCounts:
    """Total, trainable, head, LoRA and linear parameters, and the blocks that train.

    Args:
        spec: the architecture; ``towers``: its towers (``(spec,)`` for one tower).
        step: the step model; strategy: head, partial, full, lora or qlora.
        num_labels: classes of a class head.
        trainable_layers: blocks trained by "partial" (default: a quarter, at least 1).
        targets: LoRA target roles; rank: LoRA r.
    """
    head = head_params(spec, towers, step, strategy, num_labels)
    params = int(spec.n_params or 0) + (0 if step.head == "projections" else head)  # CLIP's projections are in n_params
    if strategy == "partial":
        k_layers = min(trainable_layers or max(1, round(sum(t.n_layers for t in towers) / len(towers) / 4)),
                       min(t.n_layers for t in towers))
    else:
        k_layers = 0 if strategy == "head" else max(t.n_layers for t in towers)
    lora = sum(t.n_layers * lora_params_per_layer(t, targets, rank) for t in towers) if strategy in ("lora", "qlora") else 0
    lm_head = spec.vocab * spec.hidden if spec.family == "decoder" else 0
    if strategy == "full":
        trainable = params
    elif strategy == "partial":
        per_layer = sum(t.layer_params() if t.family != "cnn" else (t.n_params or 0) / max(1, t.n_layers) for t in towers)
        trainable = int(k_layers * per_layer) + head + (spec.lm_head_params() if step.head == "vocabulary" else 0)
    elif strategy == "head":
        trainable = head or lm_head
    else:
        trainable = lora + (head if step.head in ("classes", "projections") else 0)
    linear = sum(t.n_layers * t.linear_params_per_layer() for t in towers if t.family != "cnn")
    return ParamCounts(params, trainable, head, lora, linear, lm_head, k_layers)


def largest_trainable_tensor(spec: ArchSpec, towers: tuple[ArchSpec, ...], strategy: str, head: int, rank: int) -> int:
    """Elements of the biggest trainable tensor (the CPU for-loop AdamW's temporaries scale with it)."""
    block = max((t.hidden * t.intermediate for t in towers if t.family != "cnn"), default=0)
    if spec.family == "cnn":
        block = spec.traced.largest_param if spec.traced else max(c * c * 9 for c in spec.stage_channels or (64,))
    if strategy == "full":
        return max(block, spec.vocab * spec.hidden, max((t.vocab * t.hidden for t in towers), default=0))
    if strategy == "partial":
        return max(block, spec.lm_head_params())
    if strategy == "head":
        return spec.projection_dim * max(t.hidden for t in towers) if spec.projection_dim else head
    return rank * max((max(t.hidden, t.intermediate) for t in towers), default=0)


def state_bytes(p: ParamCounts, towers: tuple[ArchSpec, ...], strategy: str, precision: str,
                optimizer: str) -> tuple[float, float, float, list[str]]:
    """(weights, all gradients, optimizer states) in bytes, and notes on how they are stored."""
    notes = []
    if precision == "4bit":
        weights = p.linear * NF4_BYTES_PER_PARAM + (p.params - p.linear) * 4 + p.lora * 4
        notes.append("QLoRA: block linears in NF4 (0.5625 B/param); other weights (upcast by peft) and adapters fp32")
    else:
        weights = 4.0 * (p.params + p.lora)
        if precision in ("bf16", "fp16") and strategy != "head":
            frac = p.k_layers / max(t.n_layers for t in towers) if strategy == "partial" else 1.0
            weights += 2.0 * (p.linear * frac + p.lm_head)  # autocast's cached 16-bit weight copies
    return weights, 4.0 * p.trainable, OPTIMIZER_STATE_BYTES[optimizer] * p.trainable, notes
