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
  CPU saves ``sbh(10 + 8) + 3abs^2`` elements (i = 4h; math attention with dropout), a
  Llama block ``sb(8h + 2 kv d + 4 i)`` (flash attention, no dropout). Gradient
  checkpointing keeps only each block's input, plus one recomputed block in backward.
* The causal-LM loss saves ``log_softmax`` over the vocabulary in fp32 (4 V bytes/token), and
  backward starts with two more such buffers (grad_output, grad_input).
* Overhead: on CPU the measured resident memory of an idle Python process that imported
  torch, transformers and sentence-transformers (``CPU_RUNTIME_BYTES``, measured by
  ``benchmarks/memory_accuracy.py``); on CUDA the context (not seen by
  ``max_memory_allocated``) plus the cuBLAS workspace.

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
CPU_RUNTIME_BYTES = 560 * 2**20
CUDA_CONTEXT_BYTES = 512 * 2**20  # driver + kernels; 300-800 MiB depending on GPU/driver
CUDA_WORKSPACE_BYTES = 32 * 2**20  # cuBLAS workspace, allocated through the caching allocator
NF4_BYTES_PER_PARAM = 0.5 + 4 / 64
OPTIMIZER_STATE_BYTES = {"adamw": 8.0, "adamw8bit": 2.0, "sgd": 0.0}
DEFAULT_LORA_TARGETS = {"decoder": ("q", "v"), "encoder": ("q", "v"), "vit": ("q", "v"), "clip": ("q", "v"), "cnn": ()}


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
    tokens_per_step: int = 0
    inputs: dict = field(default_factory=dict)
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
    """Bytes per element: c = matmul inputs/outputs, r = residual stream and norms, m = dropout mask."""

    c: int
    r: int
    m: int


def _dtypes(precision: str, device: str) -> _Dtypes:
    cuda = device.startswith("cuda")
    c = 4 if precision == "fp32" else 2
    # CPU dropout multiplies by a noise tensor of the input dtype; CUDA keeps a bool mask.
    return _Dtypes(c=c, r=4, m=1 if cuda else c)


def block_activation_bytes_per_token(
    spec: ArchSpec, seq_len: int, *, mode: str, targets: tuple[str, ...], lora_rank: int, dt: _Dtypes, math_attention: bool
) -> float:
    """Bytes autograd saves per token in one transformer block.

    Args:
        spec: the tower's architecture.
        seq_len: tokens per sequence s (the math attention path stores a*s per token).
        mode: "full" (block weights train) or "frozen" (no weight trains; LoRA ``targets``
            still save their input).
        targets: LoRA target projections among q, k, v, o, mlp_in, mlp_out.
        lora_rank: r; each LoRA module saves its A output (r per token).
        dt: bytes per element of each kind of tensor.
        math_attention: SDPA's math path (CPU with attention dropout): keeps the a*s
            probabilities, the dropout mask and the dropped probabilities per token.

    Returns:
        Bytes per token. Sources: counted with ``torch.autograd.graph.saved_tensors_hooks`` on
        transformers 5 BertLayer/LlamaDecoderLayer (tests pin the coefficients).
    """
    h, i, a, d, kv = spec.hidden, spec.intermediate, spec.heads, spec.head_dim, spec.kv_heads
    full = mode == "full"
    on = set(targets)
    saved = 0.0
    if full or on & {"q", "k", "v"}:
        saved += h * dt.c  # input of q/k/v projections
    if math_attention and (full or "o" in on):
        saved += a * d * dt.c  # o-proj input: a copy made by transpose+reshape
    if full or "mlp_in" in on:
        saved += h * dt.c  # input of fc1 / gate+up
    if full or "mlp_out" in on:
        saved += i * dt.c  # input of fc2 / down
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
    saved += len(on) * lora_rank * dt.c
    return saved


def block_backward_transient_per_token(spec: ArchSpec, seq_len: int, dt: _Dtypes, math_attention: bool) -> float:
    """Gradient buffers in flight while one block runs backward (bytes per token).

    Two MLP-wide buffers (grad of the activation's output and input), two fp32 residual
    gradients, and with math attention two a*s gradient buffers of the probabilities.
    """
    t = 2 * spec.intermediate * dt.c + 2 * spec.hidden * 4
    if math_attention:
        t += 2 * spec.heads * seq_len * dt.c
    return t
