"""Activation memory of a training step: what autograd saves, and what is in flight in backward.

Counted tensor by tensor from what PyTorch autograd saves in the Hugging Face implementations
(checked with ``saved_tensors_hooks``; Korthikanti et al. 2022, "Reducing Activation
Recomputation in Large Transformer Models"). In Korthikanti's notation (s tokens, b
sequences, h width, a heads) a BERT block in fp32 on CPU saves ``18 sbh + 3 a b s^2``
elements (i = 4h; math attention with dropout), a Llama block ``sb(8h + 2 kv d + 4 i)``
(flash attention, no dropout). Gradient checkpointing keeps only each block's input, plus one
recomputed block in backward. A causal LM's loss saves ``log_softmax`` over the vocabulary in
fp32 (4 V bytes/token), and backward starts with two more such buffers (grad_output,
grad_input); TRL's fused LM head scores the vocabulary in tiles instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunewise.memory.allocator import GLIBC_MMAP_THRESHOLD_MAX
from tunewise.memory.architecture import ArchSpec, TracedActivations
from tunewise.memory.params import ParamCounts, lora_modules
from tunewise.memory.steps import StepModel

# TRL's fused LM head (trl.kernels.chunked_logprob): tiles of up to 4,096 tokens x 32,768
# vocabulary entries. On CPU (no Triton) its torch fallback keeps about 8.3 fp32 tiles live in
# backward: measured 8.3-8.4 x tokens x min(V, 32768) x 4 bytes for V = 16,000 / 49,152 / 131,072
# (tiny Llama, 1,016 tokens; the same 0.28 MB per token over HF's loss on SmolLM2 at 440 and 2,048).
TRL_TOKEN_CHUNK, TRL_VOCAB_CHUNK, TRL_CPU_TILES = 4096, 32768, 8.3


@dataclass(frozen=True)
class Dtypes:
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


def dtypes(precision: str, device: str) -> Dtypes:
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
    if not cuda and precision in ("bf16", "fp16"):
        # CPU autocast keeps the fp32 activations (norms, softmax, the residual stream run in fp32 on
        # CPU) and saves each matmul's bf16 input cast on top of them: measured on the demo (MiniLM
        # full, b16, 16-core Xeon with AMX) the bf16 peak was 2521 MiB against 2424 MiB in fp32, not half
        c = 4
    return Dtypes(c=c, r=4, s=4, m=1 if cuda else c, lora=c, lora_mask=1 if cuda else 4)


def block_activation_bytes_per_token(
    spec: ArchSpec, seq_len: int, *, mode: str, targets: tuple[str, ...], lora_rank: int, dt: Dtypes, math_attention: bool,
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
    # act(gate) input, output and up / GELU's input / quick_gelu's input and sigmoid
    saved += (3 if spec.gated_mlp else 2 if spec.mlp_activation == "quick_gelu" else 1) * i * dt.c
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


def block_backward_transient_per_token(spec: ArchSpec, seq_len: int, dt: Dtypes, math_attention: bool) -> float:
    """Gradient buffers in flight while one block runs backward (bytes per token).

    Two MLP-wide buffers (grad of the activation's output and input), two fp32 residual
    gradients, and with math attention two a*s gradient buffers of the probabilities.
    """
    t = 2 * spec.intermediate * dt.c + 2 * spec.hidden * 4
    if math_attention:
        t += 2 * spec.heads * seq_len * dt.c
    return t


def tower_tokens(tower: ArchSpec, batch: int, seq_len: int, texts: int, image_size: int | None) -> tuple[int, int]:
    """(sequences, tokens per sequence) that one forward pass of the tower sees."""
    if tower.family == "vit":
        patches = (image_size or tower.image_size or 224) // (tower.patch_size or 16)
        return batch, patches * patches + 1
    if tower.family == "encoder":
        return batch * texts, seq_len
    return batch, seq_len


def cnn_activations(spec: ArchSpec, batch: int, image_size: int, dt: Dtypes, layers: int) -> tuple[float, float]:
    """(saved, transient) bytes of a convolutional network whose top ``layers`` blocks train.

    ResNet-like configs: per block autograd keeps each conv's input, each BatchNorm's input and
    each ReLU's output: 3C elements per pixel for a bottleneck block, 4C for a basic block (C =
    the block's output channels), at resolution image/4 halved per stage; the stem adds conv
    input, BN input and ReLU output at image/2 and the max-pool indices (int64). Networks
    counted on one forward pass (:mod:`tunewise.memory.traced`) give their blocks' saved
    elements at the traced size, scaled with the image area.
    """
    if spec.traced is not None:
        return _traced_activations(spec.traced, batch, image_size, dt, layers)
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


def _traced_activations(traced: TracedActivations, batch: int, image_size: int, dt: Dtypes, layers: int) -> tuple[float, float]:
    """(saved, transient) bytes of a traced network whose top ``layers`` blocks train.

    Backward frees each block's saved tensors as it passes, so while block j runs backward
    only the blocks below it still hold theirs: the peak is the largest of (what blocks 0..j
    saved + about twice block j's saved size in gradient buffers), not everything saved plus
    the largest block's buffers (at the high-resolution bottom of a CNN the two differ by a
    third). The transient is that peak beyond what is saved.
    """
    scale = (image_size / traced.image_size) ** 2
    blocks = [b * scale for b in traced.blocks]
    if not layers:  # a no-grad forward: one block's tensors at a time
        return 0.0, batch * 2 * max(blocks, default=0) * dt.c
    below = [traced.stem * scale if layers >= len(blocks) else 0.0] + blocks[len(blocks) - layers:]  # bottom to top
    saved = sum(below) + traced.top * scale
    live = max(sum(below[: j + 1]) + 2 * b for j, b in enumerate(below) if j)
    return batch * saved * dt.c, batch * max(0.0, live - saved) * dt.c


@dataclass(frozen=True)
class Activations:
    """Activation bytes at the moments the peak assembly compares.

    saved: what the blocks keep for backward; transient: buffers in flight while one block runs
    backward (or is recomputed); bottom: the embedding layer's, kept until the end of backward;
    head_saved / head_transient: the same for the head and loss; mmapped: the part of
    head_transient in blocks glibc always mmaps; tokens: tokens (or images) per step.
    """

    saved: float
    transient: float
    bottom: float
    head_saved: float
    head_transient: float
    mmapped: float
    tokens: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepShape:
    """What one optimizer step puts through the network and how it trains."""

    strategy: str
    precision: str
    device: str
    batch_size: int
    seq_len: int
    texts: int
    image_size: int | None
    targets: tuple[str, ...]
    lora_rank: int
    lora_dropout: float
    gradient_checkpointing: bool
    fused_lm_head: bool


def activations(spec: ArchSpec, towers: tuple[ArchSpec, ...], step: StepModel, p: ParamCounts, shape: StepShape,
                dt: Dtypes) -> Activations:
    """The activation memory of one training step of ``spec`` (all towers, the head and the loss)."""
    saved, transient, bottom, head_transient, tokens_total = _towers(towers, p, shape, dt)
    head_saved, head_transient, mmapped, notes = _head(spec, towers, step, shape, dt, head_transient, tokens_total)
    if shape.precision == "4bit":
        transient += max(t.hidden * t.intermediate for t in towers) * 2 * 2  # dequantised weight, twice
    return Activations(saved, transient, bottom, head_saved, head_transient, mmapped, tokens_total, notes)


def _towers(towers: tuple[ArchSpec, ...], p: ParamCounts, shape: StepShape, dt: Dtypes) -> tuple[float, float, float, float, int]:
    """(saved, transient, bottom, head transient, tokens) of the towers' blocks."""
    saved = transient = bottom = head_transient = 0.0
    tokens_total = 0
    mode = "full" if shape.strategy in ("full", "partial") else "frozen"
    lora = shape.strategy in ("lora", "qlora")
    for tower in towers:
        seqs, s = tower_tokens(tower, shape.batch_size, shape.seq_len, shape.texts, shape.image_size)
        if tower.family == "cnn":
            cnn_saved, cnn_t = cnn_activations(tower, shape.batch_size, shape.image_size or tower.image_size or 224, dt,
                                               p.k_layers)
            saved, transient, tokens_total = saved + cnn_saved, max(transient, cnn_t), tokens_total + shape.batch_size
            continue
        tokens = seqs * s
        tokens_total += tokens
        math = uses_math_attention(tower, shape.precision, shape.device)
        block = tokens * block_activation_bytes_per_token(
            tower, s, mode=mode, targets=shape.targets if lora else (), lora_rank=shape.lora_rank, dt=dt,
            math_attention=math, lora_dropout=shape.lora_dropout,
        )
        # Each text of a pair is its own forward pass (sentence-transformers encodes the anchor
        # and positive columns separately): all passes' activations stay saved, but backward
        # and recomputation work through one pass's block at a time.
        passes = shape.texts if tower.family == "encoder" else 1
        t_block = tokens / passes * block_backward_transient_per_token(tower, s, dt, math)
        if shape.strategy == "head":
            transient = max(transient, block / passes)  # no-grad forward: one block's tensors at a time
            continue
        if shape.gradient_checkpointing:
            saved += p.k_layers * tokens * tower.hidden * dt.s  # block inputs only
            t_block += block / passes  # plus the block being recomputed
        else:
            saved += p.k_layers * block
        transient = max(transient, t_block)
        if shape.strategy == "full" and tower.family in ("encoder", "vit"):
            bottom += tokens * tower.hidden * (dt.r + (dt.m if tower.hidden_dropout > 0 else 0))  # embedding LayerNorm
        head_transient = max(head_transient, tokens / passes * tower.hidden * 4.0)
    return saved, transient, bottom, head_transient, tokens_total


def _head(spec: ArchSpec, towers: tuple[ArchSpec, ...], step: StepModel, shape: StepShape, dt: Dtypes,
          head_transient: float, tokens_total: int) -> tuple[float, float, float, tuple[str, ...]]:
    """(saved, transient, mmapped part of the transient, notes) of the head and the loss."""
    head_saved = mmapped = 0.0
    notes: list[str] = []
    if step.head == "vocabulary" and spec.family == "decoder":
        tokens, h = shape.batch_size * shape.seq_len, spec.hidden
        head_saved += tokens * (h * dt.r + (h * (dt.r + dt.c) if shape.strategy == "full" else 0))
        if shape.fused_lm_head and not shape.device.startswith("cuda"):
            # TRL's SFT loss scores the vocabulary in tiles without keeping the logits; on CPU its
            # torch fallback holds about 8 tile-sized fp32 buffers in backward (measured, see constant).
            tile = min(tokens, TRL_TOKEN_CHUNK) * min(spec.vocab, TRL_VOCAB_CHUNK) * 4
            head_transient = max(head_transient, TRL_CPU_TILES * tile)
            mmapped = TRL_CPU_TILES * tile if tile >= GLIBC_MMAP_THRESHOLD_MAX else 0.0
            notes.append(f"causal LM: TRL's fused LM head, {TRL_CPU_TILES:g} fp32 tiles of "
                         f"{min(tokens, TRL_TOKEN_CHUNK)} tokens x {min(spec.vocab, TRL_VOCAB_CHUNK):,} logits in backward")
        else:
            head_saved += tokens * spec.vocab * 4
            head_transient = max(head_transient, tokens * spec.vocab * 4 * 2)
            notes.append("causal LM: log_softmax over the vocabulary is kept in fp32, and backward starts with two more")
    elif step.pooling == "mean" and shape.strategy != "head" and spec.family != "cnn":
        head_saved += tokens_total * towers[-1].hidden * 4  # mean pooling keeps the expanded mask
    elif step.pooling == "token" and shape.strategy != "head":
        b = shape.batch_size
        # CLIP: each tower's pooled row (the final norm's and the projection's inputs) and the
        # two batch x batch logit matrices of the contrastive loss
        head_saved += b * sum(t.hidden for t in towers) * 2 * 4 + 2 * b * b * 4
    return head_saved, head_transient, mmapped, tuple(notes)
