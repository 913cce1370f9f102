"""Peak memory of fine-tuning an encoder-decoder speech model (Whisper), from its config alone.

The step model ``speech`` (:mod:`tunewise.memory.steps`): one clip is ``audio_frames`` log-mel
frames (Whisper: 3000 = 30 s, every clip padded to the full window), which the convolution stem
halves to ``E`` encoder positions (1500); its transcript is ``T`` decoder tokens. Both stacks
are counted with the per-block formulas of :mod:`tunewise.memory.activations` (what autograd
saves in a pre-norm block, flash attention on CPU without dropout) plus what is their own:

* encoder stem: the mel input of conv1, the inputs of both GELUs and of conv2
  (``(mels + 3 h) F / 2 + ...`` elements per clip: ``mels F + 2 h F + h E``);
* decoder cross-attention per layer: its norm's and q-projection's inputs, q, the output and
  the logsumexp per token, and k and v over all ``E`` encoder positions per clip; the encoder
  output (the k/v projections' input) once per clip;
* the vocabulary head: the log-softmax over ``V`` kept in fp32 per token, and two such buffers
  at the start of backward (HF's cross-entropy on full logits).

Gradients flow only where something trains: with the encoder frozen (``partial``) the encoder
saves nothing and the frozen bottom decoder blocks neither; LoRA keeps every block's
activations (adapters sit in both stacks) but not the stem's. Weights, gradients and AdamW
states as in :mod:`tunewise.memory.params` (4 + 4 + 8 bytes per trainable fp32 parameter).

Strategies: ``full``; ``partial`` = encoder and decoder embeddings frozen, the top
``trainable_layers`` decoder blocks train (default all: "the encoder frozen"); ``lora`` /
``qlora`` on the roles ``lora_targets`` (default all six: q, k, v, o, mlp_in, mlp_out) in every
block of both stacks, cross-attention included.
"""

from __future__ import annotations

from tunewise.errors import TunewiseError
from tunewise.memory.activations import (
    block_activation_bytes_per_token,
    block_backward_transient_per_token,
    dtypes,
    uses_math_attention,
)
from tunewise.memory.allocator import CUDA_CONTEXT_BYTES, GIB, framework_overhead
from tunewise.memory.architecture import ArchSpec
from tunewise.memory.estimate import RULE_OF_THUMB_FACTOR, MemoryEstimate
from tunewise.memory.params import LORA_ROLES, NF4_BYTES_PER_PARAM, OPTIMIZER_STATE_BYTES, lora_params_per_layer

SPEECH_STRATEGIES = ("full", "partial", "lora", "qlora")
DEFAULT_LABEL_TOKENS = 64  # a transcript of 10-20 s of speech with Whisper's 4-token prefix


def _cross_params(h: int) -> int:
    return 4 * h * h + 3 * h + 2 * h  # q, k, v, o (k without bias) and a norm


def decoder_layer_params(dec: ArchSpec) -> int:
    """One decoder block: self-attention (biases on q, v, o), cross-attention, MLP, three norms."""
    return dec.layer_params() + 3 * dec.hidden + _cross_params(dec.hidden)


def autocast_copies(enc: ArchSpec, dec: ArchSpec, strategy: str, precision: str, k_dec: int, linear: float,
                    gradient_checkpointing: bool) -> float:
    """Linear-layer parameters whose 16-bit copies live through a step under fp16/bf16 autocast.

    Autocast keeps the cast copy of a weight that trains (a leaf that requires grad) for the whole
    forward; a frozen weight's copy lives only while autograd keeps it for the input's gradient,
    which is the whole forward without checkpointing and one block's recompute with it. Measured
    on an H200 (benchmarks/results/speech_memory_cuda.md): counting every copy overestimated LoRA
    with checkpointing by 36-39%.
    """
    if precision not in ("bf16", "fp16"):
        return 0.0
    h = dec.hidden
    if strategy == "full":
        return linear
    if strategy == "partial":  # the top decoder blocks train; the frozen encoder is off the gradient path
        return k_dec * (dec.linear_params_per_layer() + 4 * h * h)
    # lora: the base is frozen and gradients run through every block
    return float(max(enc.linear_params_per_layer(), dec.linear_params_per_layer() + 4 * h * h)) if gradient_checkpointing else linear


def estimate_speech(spec: ArchSpec, *, strategy: str = "full", precision: str = "fp32", optimizer: str = "adamw",
                    batch_size: int = 8, seq_len: int = DEFAULT_LABEL_TOKENS, gradient_checkpointing: bool = False,
                    lora_rank: int = 8, lora_targets: tuple[str, ...] | None = None, lora_dropout: float = 0.05,
                    trainable_layers: int | None = None, device: str = "cpu", overhead_bytes: int | None = None,
                    cached_clips: int = 0, **_ignored) -> MemoryEstimate:
    """Estimate the peak memory of one training step of an ``audio-seq2seq`` model.

    Args:
        spec: from :func:`tunewise.memory.architecture.load_arch` on a Whisper config.
        strategy: full, partial, lora or qlora (``head`` does not apply to Whisper).
        precision: fp32, bf16 or fp16 (autocast: matmul tensors in 16 bits), or 4bit (qlora).
        batch_size: clips per optimizer step.
        seq_len: decoder tokens per clip (the longest transcript of a batch, prefix included).
        gradient_checkpointing: keep each block's input only, recompute one block in backward.
        trainable_layers: ``partial``: top decoder blocks that train (default: all of them).
        lora_targets: roles among q, k, v, o, mlp_in, mlp_out (default: all).
        cached_clips: clips whose frozen-encoder outputs are kept for the whole run
            (``speech.cache_encoder``: ``E x h`` fp32 values each), counted with the activations.

    Raises:
        TunewiseError: not a speech model, or an option the step cannot take.
    """
    if spec.family != "audio-seq2seq" or len(spec.towers) != 2:
        raise TunewiseError(f"model: {spec.source or 'the model'} is not an encoder-decoder speech model (family {spec.family})")
    if strategy not in SPEECH_STRATEGIES:
        raise TunewiseError(f"strategy: '{strategy}' does not apply to speech models; use one of {', '.join(SPEECH_STRATEGIES)}")
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("lora_rank", lora_rank)):
        if not isinstance(value, int) or value < 1:
            raise TunewiseError(f"{name.replace('_', '-')}: must be a positive integer, got {value!r}")
    strategy, precision = ("qlora", "4bit") if strategy == "qlora" or precision == "4bit" else (strategy, precision)
    enc, dec = spec.towers
    # decoder tokens cannot exceed its positions (448 in Whisper): a run without a better figure asks for 512
    h, V, E, F, T, b = spec.hidden, dec.vocab, spec.audio_frames // 2, spec.audio_frames, min(seq_len, dec.max_positions), batch_size
    cuda = str(device).startswith("cuda")
    dt = dtypes(precision, device)
    lora = strategy in ("lora", "qlora")
    targets = tuple(LORA_ROLES if not lora_targets or tuple(lora_targets) == ("all",) else lora_targets) if lora else ()
    k_dec = dec.n_layers if strategy != "partial" else min(dec.n_layers, trainable_layers or dec.n_layers)
    if trainable_layers is not None and not 1 <= trainable_layers <= dec.n_layers:
        raise TunewiseError(f"trainable-layers: {trainable_layers} is outside 1..{dec.n_layers} decoder layers")

    # ---- parameters
    params = int(spec.n_params or spec.formula_params())
    cross_roles = tuple(r for r in targets if r in ("q", "k", "v", "o"))
    lora_params = (enc.n_layers * lora_params_per_layer(enc, targets, lora_rank)
                   + dec.n_layers * (lora_params_per_layer(dec, targets, lora_rank) + lora_params_per_layer(dec, cross_roles, lora_rank))
                   ) if lora else 0
    if strategy == "full":
        trainable, largest = params, V * h
    elif strategy == "partial":
        trainable, largest = k_dec * decoder_layer_params(dec) + 2 * h, h * dec.intermediate
    else:
        trainable, largest = lora_params, lora_rank * max(dec.intermediate, enc.intermediate)
    linear = (enc.n_layers * enc.linear_params_per_layer() + dec.n_layers * (dec.linear_params_per_layer() + 4 * h * h))
    if strategy == "qlora":
        weights = NF4_BYTES_PER_PARAM * linear + 4.0 * (params - linear) + 4.0 * lora_params
    else:
        weights = 4.0 * (params + lora_params) + 2.0 * autocast_copies(enc, dec, strategy, precision, k_dec, linear, gradient_checkpointing)
    grads = 4.0 * trainable
    opt_state = OPTIMIZER_STATE_BYTES.get(optimizer, 8.0) * trainable

    # ---- activations (per clip, then x batch)
    def blocks(tower: ArchSpec, tokens: int, mode: str) -> tuple[float, float]:
        math = uses_math_attention(tower, precision, device)
        per = block_activation_bytes_per_token(tower, tokens, mode=mode, targets=targets, lora_rank=lora_rank, dt=dt,
                                               math_attention=math, lora_dropout=lora_dropout if lora else 0.0)
        return per, block_backward_transient_per_token(tower, tokens, dt, math)

    mode = "frozen" if lora else "full"
    saved = 0.0
    transient = 0.0
    if strategy in ("full", "lora", "qlora"):  # gradients reach the encoder
        per, trans = blocks(enc, E, mode)
        layers = (enc.n_layers * h * dt.s + per) if gradient_checkpointing else enc.n_layers * per
        saved += E * layers + E * h * dt.r  # + the final norm's input
        transient = max(transient, E * trans)
        if strategy == "full":
            saved += spec.mel_bins * F * dt.c + 2 * h * F * dt.c + h * E * dt.c  # conv1 in, GELU in, conv2 in, GELU in
    per, trans = blocks(dec, T, mode)
    trains_proj = strategy in ("full", "partial")
    cross_token = h * dt.r + (h * dt.c if trains_proj or "q" in targets else 0) + 2 * dec.heads * dec.head_dim * dt.c + dec.heads * 4
    if lora:
        cross_token += sum(1 for r in cross_roles) * lora_rank * dt.c
    per_layer = T * (per + cross_token) + 2 * E * h * dt.c  # + k and v over the encoder positions
    saved += (k_dec * T * h * dt.s + per_layer) if gradient_checkpointing else k_dec * per_layer
    if trains_proj or {"k", "v"} & set(targets):
        saved += E * h * dt.c  # the encoder output, input of every cross-attention k/v projection
    saved += T * h * dt.r + (T * h * dt.c if strategy == "full" else 0)  # final norm; the tied output projection's input
    transient = max(transient, T * trans)
    head_saved = 4.0 * T * V  # log-softmax over the vocabulary, fp32
    head_transient = 2 * 4.0 * T * V  # its gradient and the logits' gradient
    acts = b * (saved + head_saved + max(transient, head_transient))

    # ---- the peak: start of backward, or the optimizer step
    grads_top = 4.0 * V * h if strategy == "full" else 0.0  # the tied embedding's gradient comes first
    opt_temp = 2 * 4.0 * largest if (optimizer == "adamw" and not cuda) else (4.0 * trainable if optimizer == "adamw" else 0.0)
    backward = weights + opt_state + acts + grads_top
    step = weights + grads + opt_state + opt_temp  # (the encoder cache, if any, adds to both)
    notes = []
    cache = 4.0 * cached_clips * E * h
    if backward >= step:
        phase, parts = "backward", [weights, grads_top, opt_state, acts + cache]
        notes.append(f"peak during backward; all gradients together: {grads / GIB:.3f} GiB")
    else:
        phase, parts = "optimizer step", [weights, grads, opt_state + opt_temp, cache]
        notes.append(f"peak in the optimizer step; activations peak earlier, at {acts / GIB:.3f} GiB")
    if cached_clips:
        notes.append(f"frozen encoder's outputs of {cached_clips} clips kept: {cache / GIB:.3f} GiB (in activations)")
    notes.append(f"speech step: {F} mel frames -> {E} encoder positions x {enc.n_layers} layers, {T} decoder tokens x "
                 f"{dec.n_layers} layers, vocabulary {V:,}")
    if overhead_bytes is None:
        overhead_bytes = framework_overhead(cuda)
    parts = [int(round(x)) for x in parts]
    inputs = {"step": "speech", "strategy": strategy, "precision": precision, "optimizer": optimizer, "batch_size": b,
              "seq_len": T, "gradient_checkpointing": gradient_checkpointing, "lora_rank": lora_rank,
              "trainable_layers": k_dec if strategy == "partial" else None, "lora_targets": list(targets) if lora else None,
              "audio_frames": F, "encoder_positions": E, "saved_activation_bytes": int(round(b * (saved + head_saved))),
              "device": "cuda" if cuda else "cpu", "family": spec.family,
              "model": spec.source}
    return MemoryEstimate(
        weights_bytes=parts[0], gradients_bytes=parts[1], optimizer_bytes=parts[2], activations_bytes=parts[3],
        overhead_bytes=int(overhead_bytes), total_bytes=sum(parts) + int(overhead_bytes),
        rule_of_thumb_bytes=int(RULE_OF_THUMB_FACTOR * params * {"fp32": 4.0, "4bit": 0.5}.get(precision, 2.0)),
        outside_allocator_bytes=CUDA_CONTEXT_BYTES if cuda and overhead_bytes >= CUDA_CONTEXT_BYTES else 0,
        params=params + lora_params, trainable_params=int(trainable), peak_phase=phase, activations_peak_bytes=int(round(acts)),
        tokens_per_step=b * (E + T), inputs=inputs, notes=tuple(notes),
    )
