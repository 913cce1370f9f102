"""Closed-form estimate of the peak memory of a fine-tuning run.

Pure functions on an :class:`~tunewise.memory.architecture.ArchSpec`: no torch, no model.
The peak of a training step is the larger of two moments (Rajbhandari et al. 2020, ZeRO;
Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"):

* the start of backward: weights W + optimizer states O + every saved activation A + the
  gradients already allocated at the top of the network + the in-flight gradient buffers;
* the optimizer step: W + all gradients G + O + the optimizer's temporaries.

(At the end of backward, W + O + G + the embedding layer's activations, is also checked.)
Gradients are freed by ``zero_grad(set_to_none=True)`` (the Trainer default), so they do not
coexist with a whole forward pass. Per component, in bytes:

* W = 4 P (fp32); mixed precision (torch autocast) keeps fp32 master weights and caches a
  16-bit copy of every matmul weight that backward needs: + 2 P_linear. QLoRA stores block
  linears in NF4: 0.5 byte + a 4-byte absmax per 64 weights = 0.5625 B/param (Dettmers et
  al. 2023), other weights in bf16.
* G = 4 P_trainable (fp32 gradients of fp32 master weights; LoRA adapters are fp32).
* O = 8 P_trainable for AdamW (exp_avg, exp_avg_sq), 2 for 8-bit AdamW (Dettmers et al.
  2022), 0 for SGD without momentum. Full fine-tuning with AdamW in mixed precision is
  therefore 4 + 2 + 4 + 8 = 18 bytes/param before activations, the 16-18 of the literature.
* A, per token and transformer block, counted tensor by tensor from what PyTorch autograd
  saves in the Hugging Face implementations (checked with ``saved_tensors_hooks``). In
  Korthikanti's notation (s tokens, b sequences, h width, a heads) a BERT block in fp32 on
  CPU saves ``18 sbh + 3 a b s^2`` elements (i = 4h; math attention with dropout), a
  Llama block ``sb(8h + 2 kv d + 4 i)`` (flash attention, no dropout). Gradient
  checkpointing keeps only each block's input, plus one recomputed block in backward.
* The causal-LM loss saves ``log_softmax`` over the vocabulary in fp32 (4 V bytes/token), and
  backward starts with two more such buffers (grad_output, grad_input).
* Overhead: on CPU the measured resident memory of an idle Python process that imported
  torch, transformers and sentence-transformers (``CPU_RUNTIME_BYTES``, measured by
  ``benchmarks/memory_accuracy.py``); on CUDA the context (not seen by
  ``max_memory_allocated``) plus the cuBLAS workspace. On CPU the estimate assumes freed
  tensors go back to the OS (:func:`tunewise.memory.measure.configure_cpu_allocator`); with
  glibc's default thresholds freed activation blocks stay in the heap and the resident
  memory settles higher: :func:`with_cpu_allocator` adds that retention.

The rule of thumb of seed 001 ("about 2.5x the model size") is reported next to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tunewise.errors import TunewiseError, did_you_mean
from tunewise.memory.architecture import ArchSpec

TASKS = ("embedding", "classification", "causal_lm", "image")
STRATEGIES = ("head", "partial", "full", "lora", "qlora")
PRECISIONS = ("fp32", "bf16", "fp16", "4bit")
OPTIMIZERS = ("adamw", "adamw8bit", "sgd")
RULE_OF_THUMB_FACTOR = 2.5
GIB = 2**30
# RSS of `python -c "import torch, transformers, sentence_transformers"` on the project's
# 2-core CPU machine (torch 2.13, transformers 5.23), re-measured by the benchmark.
CPU_RUNTIME_BYTES = 528 * 2**20
CUDA_CONTEXT_BYTES = 512 * 2**20  # driver + kernels; 300-800 MiB depending on GPU/driver
CUDA_WORKSPACE_BYTES = 32 * 2**20  # cuBLAS workspace, allocated through the caching allocator
NF4_BYTES_PER_PARAM = 0.5 + 4 / 64
OPTIMIZER_STATE_BYTES = {"adamw": 8.0, "adamw8bit": 2.0, "sgd": 0.0}
# glibc's default allocator on CPU keeps freed activation blocks in the heap (its mmap
# threshold rises to 32 MiB as large blocks are freed). Measured on the demo (MiniLM, batch
# 16, 20-75 steps): peak RSS 2028-2141 MiB against 1715-1739 MiB with trimming, i.e. a
# retention of 0.40-0.52x the peak live activations (778 MiB).
CPU_DEFAULT_ALLOCATOR_RETENTION = 0.5
GLIBC_MMAP_THRESHOLD_MAX = 32 * 2**20  # blocks this large are always mmapped: freed, they go back to the OS
DEFAULT_LORA_TARGETS = {"decoder": ("q", "v"), "encoder": ("q", "v"), "vit": ("q", "v"), "clip": ("q", "v"), "cnn": ()}
LORA_ROLES = ("q", "k", "v", "o", "mlp_in", "mlp_out")
# TRL's fused LM head (trl.kernels.chunked_logprob): tiles of up to 4,096 tokens x 32,768
# vocabulary entries. On CPU (no Triton) its torch fallback keeps about 8.3 fp32 tiles live in
# backward: measured 8.3-8.4 x tokens x min(V, 32768) x 4 bytes for V = 16,000 / 49,152 / 131,072
# (tiny Llama, 1,016 tokens; the same 0.28 MB per token over HF's loss on SmolLM2 at 440 and 2,048).
TRL_TOKEN_CHUNK, TRL_VOCAB_CHUNK, TRL_CPU_TILES = 4096, 32768, 8.3
DEFAULT_LORA_DROPOUT = 0.05  # strategies.lora.LoraOptions' default too


def default_lora_targets(spec: ArchSpec, task: str) -> tuple[str, ...]:
    """The roles tunewise adapts by default: every linear layer for causal LMs, else q and v (peft's table)."""
    return LORA_ROLES if task == "causal_lm" and spec.family == "decoder" else DEFAULT_LORA_TARGETS[spec.family]


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak training memory, broken down at the moment of the peak.

    All ``*_bytes`` fields add up to ``total_bytes``. ``gradients_bytes`` is the gradient
    memory live at the peak (all of it when the optimizer step is the peak; only the
    gradients allocated before the first block's backward when the start of backward is).
    """

    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    overhead_bytes: int
    total_bytes: int
    rule_of_thumb_bytes: int
    outside_allocator_bytes: int = 0
    params: int = 0
    trainable_params: int = 0
    peak_phase: str = "backward"
    activations_peak_bytes: int = 0
    tokens_per_step: int = 0
    inputs: dict = field(default_factory=dict)
    mmapped_activation_bytes: int = 0  # part of the peak activations in blocks glibc never retains
    notes: tuple[str, ...] = ()

    @property
    def allocator_bytes(self) -> int:
        """What ``torch.cuda.max_memory_allocated`` can see (total minus the CUDA context)."""
        return self.total_bytes - self.outside_allocator_bytes

    def components(self) -> dict[str, int]:
        return {
            "weights": self.weights_bytes, "gradients": self.gradients_bytes, "optimizer states": self.optimizer_bytes,
            "activations": self.activations_bytes, "framework overhead": self.overhead_bytes,
        }

    def as_dict(self) -> dict:
        out = asdict(self)
        out["notes"] = list(self.notes)
        out["allocator_bytes"] = self.allocator_bytes
        out["total_gib"] = round(self.total_bytes / GIB, 3)
        out["rule_of_thumb_gib"] = round(self.rule_of_thumb_bytes / GIB, 3)
        return out


def _check_choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise TunewiseError(f"{option}: unknown '{value}'{did_you_mean(value, choices)}; choose one of: {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class _Dtypes:
    """Bytes per element of each kind of saved tensor.

    c: matmul inputs/outputs (16-bit under autocast);
    r: what norms save (fp32: autocast runs norms in fp32, HF's RMSNorm upcasts);
    s: the residual stream (fp32, also under autocast, whose additions promote);
    m: dropout masks (CPU multiplies by a noise tensor of the input dtype, CUDA keeps bools);
    lora: LoRA's input (peft casts it to the fp32 adapter dtype; autocast re-casts it to 16 bits);
    lora_mask: LoRA dropout's mask (taken on the fp32 cast: a fp32 noise tensor on CPU, bools on CUDA).
    """

    c: int
    r: int
    s: int
    m: int
    lora: int
    lora_mask: int


def _dtypes(precision: str, device: str) -> _Dtypes:
    """Bytes per saved element for a precision as tunewise trains it.

    A 4-bit base is prepared by peft's ``prepare_model_for_kbit_training``, which upcasts every
    weight that is not quantized (embeddings, norms) to fp32, so the hidden states are fp32
    and each 4-bit matmul casts its input to the compute dtype and its output back (saving
    nothing per token). tunewise then trains it under bf16 autocast on CUDA, like ``bf16``,
    and without autocast on CPU, like ``fp32``.
    """
    cuda = device.startswith("cuda")
    if precision == "4bit":
        precision = "bf16" if cuda else "fp32"
    c = 4 if precision == "fp32" else 2
    return _Dtypes(c=c, r=4, s=4, m=1 if cuda else c, lora=c, lora_mask=1 if cuda else 4)


def lora_modules(spec: ArchSpec, role: str) -> tuple[int, int, int]:
    """(adapted layers, input width, output width) of one LoRA target role in a block
    (a gated MLP has two input projections)."""
    h, i, ad, kvd = spec.hidden, spec.intermediate, spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    shapes = {"q": (h, ad), "k": (h, kvd), "v": (h, kvd), "o": (ad, h), "mlp_in": (h, i), "mlp_out": (i, h)}
    return (2 if role == "mlp_in" and spec.gated_mlp else 1), *shapes[role]


def block_activation_bytes_per_token(
    spec: ArchSpec, seq_len: int, *, mode: str, targets: tuple[str, ...], lora_rank: int, dt: _Dtypes, math_attention: bool,
    lora_dropout: float = 0.0,
) -> float:
    """Bytes autograd saves per token in one transformer block.

    Args:
        spec: the tower's architecture.
        seq_len: tokens per sequence s (the math attention path stores a*s per token).
        mode: "full" (block weights train) or "frozen" (no weight trains; LoRA ``targets``
            still save their input).
        targets: LoRA target projections among q, k, v, o, mlp_in, mlp_out.
        lora_rank: r; each LoRA module saves its A output (r per token).
        lora_dropout: LoRA's dropout; above 0 each adapted layer saves its own dropped copy of
            its input and the dropout mask instead of sharing the layer's input.
        dt: bytes per element of each kind of tensor.
        math_attention: SDPA's math path (see :func:`uses_math_attention`): keeps the a*s
            probabilities (with dropout also the mask and the dropped probabilities) per
            token, and k/v repeated to all heads.

    Returns:
        Bytes per token. Sources: counted with ``torch.autograd.graph.saved_tensors_hooks`` on
        transformers 5 BertLayer/LlamaDecoderLayer (tests pin the coefficients).
    """
    h, i, a, d, kv = spec.hidden, spec.intermediate, spec.heads, spec.head_dim, spec.kv_heads
    full = mode == "full"
    on = set(targets)
    dropped = not full and lora_dropout > 0  # LoRA layers see their own dropout copies, not the shared input
    saved = 0.0
    if full:
        saved += h * dt.c  # input of q/k/v projections
    elif on & {"q", "k", "v"} and not dropped:
        saved += h * dt.lora
    if math_attention and (full or "o" in on):
        saved += a * d * dt.c  # o-proj input: a copy made by transpose+reshape
    if full or ("mlp_in" in on and not dropped):
        saved += h * dt.c  # input of fc1 / gate+up
    if full or ("mlp_out" in on and not dropped):
        saved += i * dt.c  # input of fc2 / down
    if dropped:
        for role in on:
            layers, width, _ = lora_modules(spec, role)
            saved += layers * width * (dt.lora + dt.lora_mask)  # the dropped input (A's input) and the mask
    if math_attention:
        kv = a  # the math path repeats grouped k/v heads before its matmuls
    saved += (a * d + 2 * kv * d) * dt.c  # q, k, v kept by attention
    if math_attention:
        saved += a * seq_len * dt.c * (3 if spec.attention_dropout > 0 else 1)  # probs, mask, dropped probs
    else:
        saved += a * d * dt.c + a * 4  # attention output + logsumexp
    saved += 2 * h * dt.r  # the two norms' inputs
    if spec.norm == "rmsnorm" and full:
        saved += 2 * h * dt.r  # HF's Python RMSNorm also keeps x * rsqrt when its weight trains
    saved += (3 if spec.gated_mlp else 1) * i * dt.c  # act(gate) input, output and up / GELU input
    if spec.hidden_dropout > 0:
        saved += 2 * h * dt.m
    saved += sum(lora_modules(spec, role)[0] for role in on) * lora_rank * dt.c  # each A's output
    return saved


def uses_math_attention(spec: ArchSpec, precision: str, device: str) -> bool:
    """Whether ``scaled_dot_product_attention`` falls back to its O(s^2)-memory math path.

    CPU: its flash kernel serves fp32 and grouped-query attention but not dropout, so BERT's
    attention dropout in training selects the math path. CUDA: flash attention needs 16-bit
    inputs and the memory-efficient kernel has no grouped-query support, so fp32 with fewer
    k/v heads than query heads (SmolLM2, Llama-3) selects it; measured on an H100, this path
    costs SmolLM2 21 KB per token and block more than the fused kernels.
    """
    if not str(device).startswith("cuda"):
        return spec.attention_dropout > 0
    return precision == "fp32" and (spec.kv_heads or spec.heads) < spec.heads


def block_backward_transient_per_token(spec: ArchSpec, seq_len: int, dt: _Dtypes, math_attention: bool) -> float:
    """Gradient buffers in flight while one block runs backward (bytes per token).

    Two MLP-wide buffers (grad of the activation's output and input), two fp32 residual
    gradients, and with math attention two a*s gradient buffers of the probabilities.
    """
    t = 2 * spec.intermediate * dt.c + 2 * spec.hidden * 4
    if math_attention:
        t += 2 * spec.heads * seq_len * dt.c
    return t


def lora_params_per_layer(spec: ArchSpec, targets: tuple[str, ...], rank: int) -> int:
    """LoRA adds r*(in + out) per targeted projection (Hu et al. 2021)."""
    return sum(rank * layers * (n_in + n_out) for layers, n_in, n_out in (lora_modules(spec, t) for t in targets))


def _tower_tokens(tower: ArchSpec, batch: int, seq_len: int, texts: int, image_size: int | None) -> tuple[int, int]:
    """(sequences, tokens per sequence) that one forward pass of the tower sees."""
    if tower.family == "vit":
        patches = (image_size or tower.image_size or 224) // (tower.patch_size or 16)
        return batch, patches * patches + 1
    if tower.family == "encoder":
        return batch * texts, seq_len
    return batch, seq_len


def _cnn_activations(spec: ArchSpec, batch: int, image_size: int, dt: _Dtypes, layers: int) -> tuple[float, float]:
    """(saved, transient) bytes of a ResNet-like CNN whose top ``layers`` blocks train.

    Per block autograd keeps each conv's input, each BatchNorm's input and each ReLU's
    output: 3C elements per pixel for a bottleneck block, 4C for a basic block (C = the
    block's output channels), at resolution image/4 halved per stage; the stem adds
    conv input, BN input and ReLU output at image/2 and the max-pool indices (int64).
    """
    blocks = []
    res = image_size / 4
    for stage, (c, depth) in enumerate(zip(spec.stage_channels, spec.stage_depths, strict=False)):
        r = res / (2**stage)
        blocks += [(3 if spec.bottleneck else 4) * c * r * r] * depth
    saved = sum(blocks[len(blocks) - layers :]) * dt.c if layers else 0.0
    if layers >= len(blocks):
        saved += (spec.channels * image_size**2 + 2 * 64 * (image_size / 2) ** 2) * dt.c + 64 * res * res * 8
    transient = 2 * max(blocks, default=0) * dt.c
    return batch * saved, batch * transient


def _largest_trainable_tensor(spec: ArchSpec, towers: tuple[ArchSpec, ...], strategy: str, task_head: int, rank: int) -> int:
    """Elements of the biggest trainable tensor (the CPU for-loop AdamW's temporaries scale with it)."""
    block = max((t.hidden * t.intermediate for t in towers if t.family != "cnn"), default=0)
    if spec.family == "cnn":
        block = max(c * c * 9 for c in spec.stage_channels or (64,))
    if strategy == "full":
        return max(block, spec.vocab * spec.hidden, max((t.vocab * t.hidden for t in towers), default=0))
    if strategy == "partial":
        return max(block, spec.lm_head_params())
    if strategy == "head":
        return task_head
    return rank * max((max(t.hidden, t.intermediate) for t in towers), default=0)


def _validate(spec: ArchSpec, task: str, strategy: str, precision: str, optimizer: str, batch_size: int, seq_len: int,
              lora_rank: int, num_labels: int, image_size: int | None, overhead_bytes: int | None) -> tuple[str, str]:
    """Check the choices and values; return (strategy, precision) with QLoRA made consistent."""
    _check_choice("task", task, TASKS)
    _check_choice("strategy", strategy, STRATEGIES)
    _check_choice("precision", precision, PRECISIONS)
    _check_choice("optimizer", optimizer, OPTIMIZERS)
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("lora_rank", lora_rank), ("num_labels", num_labels)):
        if not isinstance(value, int) or value < 1:
            raise TunewiseError(f"{name.replace('_', '-')}: must be a positive integer, got {value!r}")
    if image_size is not None and image_size < 1:
        raise TunewiseError(f"image-size: must be a positive integer, got {image_size!r}")
    if overhead_bytes is not None and overhead_bytes < 0:
        raise TunewiseError(f"overhead: must not be negative, got {overhead_bytes}")
    if precision == "4bit" and strategy not in ("lora", "qlora"):
        raise TunewiseError(f"precision: 4-bit weights cannot be trained directly with strategy '{strategy}'; use --strategy qlora")
    if spec.family == "cnn" and strategy in ("lora", "qlora"):
        raise TunewiseError("strategy: LoRA needs attention/linear layers; for a CNN use head, partial or full")
    return ("qlora", "4bit") if strategy == "qlora" or precision == "4bit" else (strategy, precision)


@dataclass(frozen=True)
class _Params:
    params: int  # model + task head
    trainable: int
    task_head: int
    lora: int  # LoRA adapter parameters (not in params)
    linear: int  # block nn.Linear weights (quantised by QLoRA, cast by autocast)
    lm_head: int  # V*h of a decoder's output projection (tied or not)
    k_layers: int  # blocks that keep activations for backward


def _count_params(spec: ArchSpec, towers: tuple[ArchSpec, ...], task: str, strategy: str, num_labels: int,
                  trainable_layers: int | None, targets: tuple[str, ...], rank: int) -> _Params:
    width = towers[-1].hidden
    task_head = 0
    if task in ("classification", "image"):
        task_head = width * num_labels + num_labels
    elif task == "embedding" and strategy == "head":
        task_head = width * width + width  # a trainable Dense layer on frozen embeddings
    elif task == "causal_lm" and strategy == "head" and spec.tie_embeddings:
        task_head = spec.vocab * spec.hidden  # untie a trainable lm_head
    params = int(spec.n_params or 0) + task_head
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
        trainable = int(k_layers * per_layer) + task_head + (spec.lm_head_params() if task == "causal_lm" else 0)
    elif strategy == "head":
        trainable = task_head or lm_head
    else:
        trainable = lora + (task_head if task in ("classification", "image") else 0)
    linear = sum(t.n_layers * t.linear_params_per_layer() for t in towers if t.family != "cnn")
    return _Params(params, trainable, task_head, lora, linear, lm_head, k_layers)


def estimate(
    spec: ArchSpec,
    *,
    task: str = "embedding",
    strategy: str = "full",
    precision: str = "fp32",
    optimizer: str = "adamw",
    batch_size: int = 16,
    seq_len: int = 128,
    gradient_checkpointing: bool = False,
    lora_rank: int = 8,
    image_size: int | None = None,
    texts_per_example: int | None = None,
    trainable_layers: int | None = None,
    lora_targets: tuple[str, ...] | None = None,
    num_labels: int = 2,
    device: str = "cpu",
    overhead_bytes: int | None = None,
    lora_dropout: float = DEFAULT_LORA_DROPOUT,
    fused_lm_head: bool = True,
) -> MemoryEstimate:
    """Estimate the peak memory of one training step (see the module docstring for the model).

    Args:
        spec: the architecture (:func:`tunewise.memory.architecture.load_arch`).
        task: "embedding" (sentence pairs, in-batch negatives), "classification",
            "causal_lm" or "image".
        strategy: "head" (frozen backbone, cached features), "partial" (top
            ``trainable_layers`` blocks), "full", "lora" or "qlora" (LoRA on a 4-bit base).
        precision: "fp32", "bf16"/"fp16" (autocast mixed precision, fp32 master weights) or
            "4bit" (NF4 base; implies QLoRA).
        optimizer: "adamw", "adamw8bit" (bitsandbytes) or "sgd" (no momentum).
        batch_size: examples per optimizer step (no gradient accumulation).
        seq_len: tokens per text (padded/truncated length).
        gradient_checkpointing: keep only block inputs and recompute in backward.
        lora_rank: LoRA r.
        image_size: input side for vision models (default: the config's).
        texts_per_example: texts encoded per example; default 2 for "embedding"
            (anchor + positive, MultipleNegativesRankingLoss), else 1.
        trainable_layers: blocks trained by "partial" (default: a quarter, at least 1).
        lora_targets: projections among q, k, v, o, mlp_in, mlp_out, or ``("all",)`` (default:
            tunewise's, all of them for causal LMs, else q and v, peft's default for BERT and Llama).
        num_labels: classes of a classification/image head.
        device: "cpu" or "cuda" (dropout masks, attention kernel, optimizer temporaries,
            overhead).
        overhead_bytes: framework overhead to use instead of the defaults.
        lora_dropout: LoRA's dropout (tunewise's default 0.05); with dropout each adapted
            layer keeps its own dropped input and mask.
        fused_lm_head: causal LM loss through TRL's fused LM head, as tunewise trains it (the
            vocabulary in tiles, no logits kept); False: the model's own loss over full logits.
            On CUDA both are counted as full logits (TRL's Triton kernel needs less; not measured).

    Returns:
        A :class:`MemoryEstimate`.

    Raises:
        TunewiseError: an unknown choice or an impossible value.
    """
    strategy, precision = _validate(spec, task, strategy, precision, optimizer, batch_size, seq_len, lora_rank,
                                    num_labels, image_size, overhead_bytes)
    if lora_targets is not None and tuple(lora_targets) == ("all",):
        lora_targets = LORA_ROLES
    for role in lora_targets or ():
        if role not in LORA_ROLES:
            raise TunewiseError(f"lora-targets: unknown '{role}'{did_you_mean(role, list(LORA_ROLES))}; "
                                f"use some of {', '.join(LORA_ROLES)}, or all")
    if not 0.0 <= lora_dropout < 1.0:
        raise TunewiseError(f"lora-dropout: must be in [0, 1), got {lora_dropout}")
    cuda = str(device).startswith("cuda")
    dt = _dtypes(precision, str(device))
    # Sentence pairs encode two texts per example; CLIP pairs one text with one image.
    texts = texts_per_example or (2 if task == "embedding" and spec.family != "clip" else 1)
    targets = tuple(lora_targets) if lora_targets else default_lora_targets(spec, task)
    towers = spec.towers or (spec,)
    p = _count_params(spec, towers, task, strategy, num_labels, trainable_layers, targets, lora_rank)
    notes: list[str] = []

    # ---- weights, gradients, optimizer states -------------------------------------------
    if precision == "4bit":
        weights = p.linear * NF4_BYTES_PER_PARAM + (p.params - p.linear) * 4 + p.lora * 4
        notes.append("QLoRA: block linears in NF4 (0.5625 B/param); other weights (upcast by peft) and adapters fp32")
    else:
        weights = 4.0 * (p.params + p.lora)
        if precision in ("bf16", "fp16") and strategy != "head":
            frac = p.k_layers / max(t.n_layers for t in towers) if strategy == "partial" else 1.0
            weights += 2.0 * (p.linear * frac + p.lm_head)  # autocast's cached 16-bit weight copies
    grads_all = 4.0 * p.trainable
    opt_state = OPTIMIZER_STATE_BYTES[optimizer] * p.trainable

    # ---- activations --------------------------------------------------------------------
    saved = transient = bottom = head_saved = head_transient = mmapped_tiles = 0.0
    tokens_total = 0
    mode = "full" if strategy in ("full", "partial") else "frozen"
    lora = strategy in ("lora", "qlora")
    for tower in towers:
        seqs, s = _tower_tokens(tower, batch_size, seq_len, texts, image_size)
        if tower.family == "cnn":
            cnn_saved, cnn_t = _cnn_activations(tower, batch_size, image_size or tower.image_size or 224, dt, p.k_layers)
            saved, transient, tokens_total = saved + cnn_saved, max(transient, cnn_t), tokens_total + batch_size
            continue
        tokens = seqs * s
        tokens_total += tokens
        math = uses_math_attention(tower, precision, str(device))
        block = tokens * block_activation_bytes_per_token(
            tower, s, mode=mode, targets=targets if lora else (), lora_rank=lora_rank, dt=dt, math_attention=math,
            lora_dropout=lora_dropout,
        )
        # Each text of a pair is its own forward pass (sentence-transformers encodes the anchor
        # and positive columns separately): all passes' activations stay saved, but backward
        # and recomputation work through one pass's block at a time.
        passes = texts if tower.family == "encoder" else 1
        t_block = tokens / passes * block_backward_transient_per_token(tower, s, dt, math)
        if strategy == "head":
            transient = max(transient, block / passes)  # no-grad forward: one block's tensors at a time
            continue
        if gradient_checkpointing:
            saved += p.k_layers * tokens * tower.hidden * dt.s  # block inputs only
            t_block += block / passes  # plus the block being recomputed
        else:
            saved += p.k_layers * block
        transient = max(transient, t_block)
        if strategy == "full" and tower.family in ("encoder", "vit"):
            bottom += tokens * tower.hidden * (dt.r + (dt.m if tower.hidden_dropout > 0 else 0))  # embedding LayerNorm
        head_transient = max(head_transient, tokens / passes * tower.hidden * 4.0)
    if task == "causal_lm" and spec.family == "decoder":
        tokens, h = batch_size * seq_len, spec.hidden
        head_saved += tokens * (h * dt.r + (h * (dt.r + dt.c) if strategy == "full" else 0))
        if fused_lm_head and not cuda:
            # TRL's SFT loss scores the vocabulary in tiles without keeping the logits; on CPU its
            # torch fallback holds about 8 tile-sized fp32 buffers in backward (measured, see constant).
            tile = min(tokens, TRL_TOKEN_CHUNK) * min(spec.vocab, TRL_VOCAB_CHUNK) * 4
            head_transient = max(head_transient, TRL_CPU_TILES * tile)
            mmapped_tiles = TRL_CPU_TILES * tile if tile >= GLIBC_MMAP_THRESHOLD_MAX else 0.0
            notes.append(f"causal LM: TRL's fused LM head, {TRL_CPU_TILES:g} fp32 tiles of "
                         f"{min(tokens, TRL_TOKEN_CHUNK)} tokens x {min(spec.vocab, TRL_VOCAB_CHUNK):,} logits in backward")
        else:
            head_saved += tokens * spec.vocab * 4
            head_transient = max(head_transient, tokens * spec.vocab * 4 * 2)
            notes.append("causal LM: log_softmax over the vocabulary is kept in fp32, and backward starts with two more")
    elif task == "embedding" and strategy != "head" and spec.family != "cnn":
        head_saved += tokens_total * towers[-1].hidden * 4  # mean pooling keeps the expanded mask
    if precision == "4bit":
        transient += max(t.hidden * t.intermediate for t in towers) * 2 * 2  # dequantised weight, twice
    grads_top = 4.0 * (p.lm_head if task == "causal_lm" and strategy == "full" else p.task_head)

    # ---- peak: start of backward, end of backward, or the optimizer step ------------------
    acts_start = saved + bottom + head_saved + max(head_transient, transient)
    mmapped = mmapped_tiles if head_transient >= transient else 0.0  # the peak's transient is the LM head's tiles
    start, end = acts_start + grads_top, bottom + transient + grads_all
    if optimizer != "adamw":
        opt_temp = 0.0
    elif cuda:
        opt_temp = 4.0 * p.trainable  # foreach AdamW: sqrt(exp_avg_sq) of every parameter at once
    else:
        opt_temp = 2 * 4.0 * _largest_trainable_tensor(spec, towers, strategy, p.task_head, lora_rank)  # for-loop AdamW
    if opt_state + max(start, end) >= grads_all + opt_state + opt_temp:
        phase = "backward"
        grads, acts, opt = (grads_top, acts_start, opt_state) if start >= end else (grads_all, bottom + transient, opt_state)
        notes.append(f"peak during backward; all gradients together: {grads_all / GIB:.3f} GiB")
    else:
        phase, grads, acts, opt = "optimizer step", grads_all, 0.0, opt_state + opt_temp
        notes.append(f"peak in the optimizer step (gradients + optimizer temporaries); activations peak earlier, at {acts_start / GIB:.3f} GiB")
    if overhead_bytes is None:
        overhead_bytes = CUDA_CONTEXT_BYTES + CUDA_WORKSPACE_BYTES if cuda else CPU_RUNTIME_BYTES
    parts = [int(round(x)) for x in (weights, grads, opt, acts)]
    inputs = {
        "task": task, "strategy": strategy, "precision": precision, "optimizer": optimizer, "batch_size": batch_size,
        "seq_len": seq_len, "gradient_checkpointing": gradient_checkpointing, "lora_rank": lora_rank,
        "image_size": image_size, "texts_per_example": texts, "trainable_layers": p.k_layers if strategy == "partial" else None,
        "lora_targets": list(targets) if lora else None, "lora_dropout": lora_dropout if lora else None, "device": "cuda" if cuda else "cpu", "family": spec.family,
        "model": spec.source,
    }
    return MemoryEstimate(
        weights_bytes=parts[0], gradients_bytes=parts[1], optimizer_bytes=parts[2], activations_bytes=parts[3],
        overhead_bytes=int(overhead_bytes), total_bytes=sum(parts) + int(overhead_bytes),
        rule_of_thumb_bytes=int(RULE_OF_THUMB_FACTOR * p.params * {"fp32": 4.0, "4bit": 0.5}.get(precision, 2.0)),
        outside_allocator_bytes=CUDA_CONTEXT_BYTES if cuda and overhead_bytes >= CUDA_CONTEXT_BYTES else 0,
        params=p.params + p.lora, trainable_params=int(p.trainable), peak_phase=phase,
        activations_peak_bytes=int(round(acts_start)), tokens_per_step=tokens_total, inputs=inputs, notes=tuple(notes),
        mmapped_activation_bytes=int(round(mmapped)),
    )


def with_cpu_allocator(est: MemoryEstimate, allocator: str) -> MemoryEstimate:
    """The estimate for a CPU run under ``allocator`` ("trim" or "default", glibc's own).

    :func:`estimate` assumes trimming (freed tensors go back to the OS). With glibc's default
    thresholds the heap retains freed activation blocks: the peak resident memory grows by
    about :data:`CPU_DEFAULT_ALLOCATOR_RETENTION` times the peak live activations (measured,
    see the constant), counted here as framework overhead; blocks of 32 MiB and more (TRL's
    LM-head tiles) are always mmapped and never retained. CUDA estimates are unchanged.
    """
    if est.inputs.get("device", "cpu") != "cpu" or not allocator.startswith("default"):
        return est
    from dataclasses import replace

    extra = int(CPU_DEFAULT_ALLOCATOR_RETENTION * (est.activations_peak_bytes - est.mmapped_activation_bytes))
    note = (f"CPU allocator retention (glibc default thresholds): +{extra / GIB:.3f} GiB "
            f"({CPU_DEFAULT_ALLOCATOR_RETENTION:g} x peak activations; train.cpu_allocator=trim avoids it at ~20% speed)")
    return replace(est, overhead_bytes=est.overhead_bytes + extra, total_bytes=est.total_bytes + extra,
                   notes=est.notes + (note,), inputs={**est.inputs, "cpu_allocator": "default"})
