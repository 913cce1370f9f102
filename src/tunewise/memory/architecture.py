"""Read the architecture of a model without loading its weights.

The memory estimate (:mod:`tunewise.memory.estimate`) needs a handful of numbers: the
parameter count and, for activations, the layer count, widths and vocabulary. They are read
from a config (a local ``config.json``, ``AutoConfig`` for a hub id, or a transformers config
object) and the parameters are counted on the meta device (``accelerate.init_empty_weights``),
which allocates nothing; where that is impossible they come from closed-form formulas.

Supported families (what tunewise fine-tunes):

* ``encoder``: BERT-like text encoders (BERT, RoBERTa, MiniLM, MPNet, DistilBERT, ...).
* ``decoder``: Llama-like causal LMs (Llama, Mistral, Qwen2/3, SmolLM, Gemma; GPT-2 ungated).
* ``vit``: vision transformers (ViT, DeiT, ...), tokens = (image/patch)^2 + 1.
* ``clip``: a text tower and a vision tower, each an encoder.
* ``cnn``: ResNet-like convolutional networks (stage widths and depths).
* ``audio-seq2seq``: Whisper-like speech models: an encoder tower over log-mel frames
  (``max_source_positions`` positions after the stride-2 convolution stem) and a decoder tower
  over transcript tokens with cross-attention (estimated by :mod:`tunewise.memory.speech`).

Anything else can be described with explicit overrides (``hidden=..., n_layers=...``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError, did_you_mean

FAMILIES = ("encoder", "decoder", "vit", "clip", "cnn", "audio-seq2seq")
# model_type values whose decoder block is Llama-like: RMSNorm, SwiGLU MLP, RoPE, no dropout.
LLAMA_LIKE = {
    "llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3",
    "smollm3", "olmo", "olmo2", "granite", "cohere", "stablelm", "internlm2", "deepseek_v3",
}
# Attribute names (first found wins) per field; transformers' attribute_map also aliases many.
_ALIASES: dict[str, tuple[str, ...]] = {
    "hidden": ("hidden_size", "d_model", "dim", "n_embd", "embed_dim"),
    "n_layers": ("num_hidden_layers", "n_layers", "n_layer", "num_layers"),
    "heads": ("num_attention_heads", "n_heads", "n_head", "num_heads"),
    "intermediate": ("intermediate_size", "hidden_dim", "n_inner", "ffn_dim", "dim_feedforward"),
    "vocab": ("vocab_size",),
    "kv_heads": ("num_key_value_heads", "num_kv_heads"),
    "head_dim": ("head_dim",),
    "max_positions": ("max_position_embeddings", "n_positions", "max_seq_len"),
}
# The flag a user passes for each field (CLI spelling), used in error messages.
FLAG = {
    "family": "--family", "hidden": "--hidden-size", "n_layers": "--num-layers",
    "heads": "--num-heads", "intermediate": "--intermediate-size", "vocab": "--vocab-size",
    "image_size": "--image-size", "patch_size": "--patch-size", "n_params": "--num-params",
}


@dataclass(frozen=True)
class TracedActivations:
    """What one forward pass of a network without a config saved for backward (per image, fp32 elements).

    Args:
        image_size: the input side it was traced at (other sizes scale with the area).
        blocks: saved elements per block of its layer stack, bottom to top.
        stem: saved before the first block; top: after the last one (head convolution, norm).
        params: parameters the forward pass used (an unused classifier is left out).
        largest_param: elements of its largest parameter tensor.
    """

    image_size: int
    blocks: tuple[float, ...]
    stem: float
    top: float
    params: int
    largest_param: int


@dataclass(frozen=True)
class ArchSpec:
    """The numbers of an architecture that memory depends on.

    Args:
        family: one of ``FAMILIES``.
        n_layers: transformer blocks (or, for ``cnn``, the sum of ``stage_depths``).
        hidden: model width h.
        heads: attention heads a.
        intermediate: MLP width i (per branch for gated MLPs).
        vocab: vocabulary size V (0 for vision).
        kv_heads: key/value heads (grouped-query attention); default ``heads``.
        head_dim: per-head width d; default ``hidden // heads``.
        n_params: total parameters; default from :meth:`formula_params`.
        tie_embeddings: decoder's output projection shares the input embedding.
        gated_mlp: SwiGLU-style MLP (gate, up, down) instead of fc1/fc2.
        norm: "layernorm" (fused op) or "rmsnorm" (HF's Python implementation).
        mlp_activation: the config's ``hidden_act``; ``quick_gelu`` (CLIP), computed as
            ``x * sigmoid(1.702 x)``, keeps two MLP-wide tensors where GELU keeps one.
        hidden_dropout: dropout on residual branches in training (BERT: 0.1).
        attention_dropout: dropout on attention probabilities in training.
        max_positions: learned absolute positions (encoders).
        image_size: default input size for vision families.
        patch_size: ViT patch size.
        stage_channels: CNN output channels per stage.
        stage_depths: CNN blocks per stage.
        bottleneck: CNN blocks are bottlenecks (ResNet-50+) rather than basic blocks.
        towers: CLIP's (text, vision) sub-specs; audio-seq2seq's (encoder, decoder).
        audio_frames: audio-seq2seq: log-mel frames per clip (Whisper: 3000, 30 s); the encoder
            sees half as many positions after its stride-2 convolution.
        mel_bins: audio-seq2seq: log-mel channels (80, or 128 for large-v3).
        projection_dim: CLIP's shared embedding width (each tower projects into it).
        traced: a network without a config, counted on one forward pass
            (:mod:`tunewise.memory.traced`): its saved activations per block.
        source: where the numbers came from (for reports).
    """

    family: str
    n_layers: int
    hidden: int
    heads: int = 1
    intermediate: int = 0
    vocab: int = 0
    kv_heads: int | None = None
    head_dim: int | None = None
    n_params: int | None = None
    tie_embeddings: bool = False
    gated_mlp: bool = False
    norm: str = "layernorm"
    mlp_activation: str = ""
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    max_positions: int = 512
    image_size: int | None = None
    patch_size: int | None = None
    channels: int = 3
    stage_channels: tuple[int, ...] = ()
    stage_depths: tuple[int, ...] = ()
    bottleneck: bool = True
    towers: tuple[ArchSpec, ...] = field(default=(), compare=False)
    projection_dim: int = 0
    traced: TracedActivations | None = field(default=None, compare=False)
    audio_frames: int = 0
    mel_bins: int = 0
    model_type: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise TunewiseError(
                f"family: unknown '{self.family}'{did_you_mean(self.family, FAMILIES)}; choose one of: {', '.join(FAMILIES)}"
            )
        for name in ("n_layers", "hidden", "heads"):
            if getattr(self, name) <= 0 and self.family != "clip":
                raise TunewiseError(f"{FLAG.get(name, name)}: must be a positive integer, got {getattr(self, name)}")
        if self.kv_heads is None:
            object.__setattr__(self, "kv_heads", self.heads)
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", max(1, self.hidden // max(1, self.heads)))
        if self.n_params is None:
            object.__setattr__(self, "n_params", self.formula_params())

    # ---- parameter counts (closed form) -------------------------------------------------
    def attention_params(self) -> int:
        """q, o: h*a*d each; k, v: h*kv*d each (biases on encoders)."""
        d, a, kv, h = self.head_dim, self.heads, self.kv_heads, self.hidden
        weights = 2 * h * a * d + 2 * h * kv * d
        return weights if self.family == "decoder" else weights + 2 * a * d + 2 * kv * d

    def mlp_params(self) -> int:
        """Gated: 3*h*i (gate, up, down); plain: 2*h*i + i + h (fc1, fc2 with biases)."""
        h, i = self.hidden, self.intermediate
        return 3 * h * i if self.gated_mlp else 2 * h * i + i + h

    def layer_params(self) -> int:
        """One transformer block: attention + MLP + two norms (RMSNorm: h, LayerNorm: 2h)."""
        norms = 2 * self.hidden if self.norm == "rmsnorm" else 4 * self.hidden
        return self.attention_params() + self.mlp_params() + norms

    def linear_params_per_layer(self) -> int:
        """Weights of the block's nn.Linear layers: what QLoRA stores in 4 bits."""
        h, i, a, kv, d = self.hidden, self.intermediate, self.heads, self.kv_heads, self.head_dim
        return 2 * h * a * d + 2 * h * kv * d + (3 if self.gated_mlp else 2) * h * i

    def embedding_params(self) -> int:
        """Token (+ learned position) embeddings, or patch embedding for ViT."""
        h = self.hidden
        if self.family == "decoder":
            return self.vocab * h
        if self.family == "vit":
            patches = (self.image_size or 224) // (self.patch_size or 16)
            return self.channels * (self.patch_size or 16) ** 2 * h + h + (patches**2 + 1) * h + h
        return (self.vocab + self.max_positions + 2) * h + 2 * h

    def lm_head_params(self) -> int:
        """Untied output projection V*h (0 when tied or not a decoder)."""
        return 0 if (self.family != "decoder" or self.tie_embeddings) else self.vocab * self.hidden

    def cnn_params(self) -> int:
        """ResNet-like: 3x3 stem + per block 1x1-3x3-1x1 (bottleneck) or 3x3-3x3 convs."""
        total, c_in = self.channels * 49 * 64, 64
        for c, depth in zip(self.stage_channels, self.stage_depths, strict=False):
            for _ in range(depth):
                mid = c // 4 if self.bottleneck else c
                total += (c_in * mid + 9 * mid * mid + mid * c) if self.bottleneck else (9 * c_in * c + 9 * c * c)
                total += c_in * c if c_in != c else 0
                c_in = c
        return total

    def formula_params(self) -> int:
        """Total parameters from the closed-form counts above (as ``AutoModel`` builds them)."""
        if self.traced is not None:
            return self.traced.params
        if self.family == "audio-seq2seq":  # the towers (the decoder's output projection is tied)
            return sum(t.n_params or 0 for t in self.towers)
        if self.family == "clip":  # the towers, their projections and the logit scale
            projections = self.projection_dim * sum(t.hidden for t in self.towers)
            return sum(t.n_params or 0 for t in self.towers) + projections + (1 if self.projection_dim else 0)
        if self.family == "cnn":
            return self.cnn_params()
        h = self.hidden
        body = self.embedding_params() + self.n_layers * self.layer_params()
        if self.family == "decoder":
            return body + (h if self.norm == "rmsnorm" else 2 * h) + self.lm_head_params()
        pooler = h * h + h  # BertModel/ViTModel's pooler (AutoModel adds it)
        return body + pooler + (2 * h if self.family == "vit" else 0)  # ViT: final LayerNorm

    def replace(self, **changes: Any) -> ArchSpec:
        """A copy with fields changed (``n_params`` recomputed unless given)."""
        if "n_params" not in changes and any(k != "source" for k in changes):
            changes["n_params"] = None
        return dataclasses.replace(self, **changes)


def _get(config: Any, key: str) -> Any:
    for name in _ALIASES[key]:
        value = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
        if value is not None:
            return value
    return None


def _family(config: Any, model_type: str) -> str:
    get = (lambda k: config.get(k)) if isinstance(config, dict) else (lambda k: getattr(config, k, None))
    if get("text_config") is not None and get("vision_config") is not None:
        return "clip"
    if model_type == "whisper" or (get("encoder_layers") and get("decoder_layers") and get("num_mel_bins")):
        return "audio-seq2seq"
    if get("hidden_sizes") is not None and get("depths") is not None:
        return "cnn"
    if get("patch_size") is not None and get("image_size") is not None:
        return "vit"
    archs = " ".join(get("architectures") or [])
    if model_type in LLAMA_LIKE or model_type in {"gpt2", "gpt_neox", "gptj", "opt", "falcon", "phi"} or "CausalLM" in archs:
        return "decoder"
    return "encoder"


def spec_from_config(config: Any, source: str = "", **overrides: Any) -> ArchSpec:
    """Build an :class:`ArchSpec` from a transformers config object or a ``config.json`` dict.

    Args:
        config: a ``PretrainedConfig`` or the parsed ``config.json``.
        source: a label for reports (path or hub id).
        **overrides: ArchSpec fields that win over the config (and fill in missing ones).

    Raises:
        TunewiseError: a field the family needs is missing; the message names the flags.
    """
    model_type = str((config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", "")) or "")
    family = overrides.pop("family", None) or _family(config, model_type)
    get = (lambda k: config.get(k)) if isinstance(config, dict) else (lambda k: getattr(config, k, None))
    if family == "clip" and "hidden" not in overrides:
        towers = tuple(
            spec_from_config(get(name), source=f"{source}:{name}", family=fam)
            for name, fam in (("text_config", "encoder"), ("vision_config", "vit"))
        )
        return ArchSpec(family="clip", n_layers=0, hidden=0, heads=0, towers=towers, projection_dim=int(get("projection_dim") or 512),
                        n_params=overrides.get("n_params"), image_size=towers[1].image_size, model_type=model_type, source=source)
    if family == "audio-seq2seq" and "hidden" not in overrides:
        return _audio_seq2seq_spec(get, model_type, source, overrides.get("n_params"))
    values: dict[str, Any] = {k: _get(config, k) for k in _ALIASES}
    if family == "cnn":
        values["stage_channels"] = tuple(get("hidden_sizes") or ())
        values["stage_depths"] = tuple(get("depths") or ())
        values["n_layers"] = sum(values["stage_depths"]) or None
        values["hidden"] = values["stage_channels"][-1] if values["stage_channels"] else None
        values["bottleneck"] = get("layer_type") != "basic"
        values["heads"] = 1
    if family in ("vit", "cnn"):
        values["image_size"] = get("image_size") or 224
        values["patch_size"] = get("patch_size")
        values["channels"] = get("num_channels") or 3
    if family == "decoder":
        # Llama-like unless the config says otherwise (explicit values without a model_type too).
        values["gated_mlp"] = model_type in LLAMA_LIKE or not model_type or (get("hidden_act") in ("silu", "swiglu") and model_type != "gpt2")
        values["norm"] = "rmsnorm" if values["gated_mlp"] else "layernorm"
        values["tie_embeddings"] = bool(get("tie_word_embeddings"))
        if values["intermediate"] is None and values["hidden"] is not None:
            values["intermediate"] = 4 * values["hidden"]  # GPT-2: n_inner=None means 4h
    values["mlp_activation"] = str(get("hidden_act") or "")
    hidden_dropout = get("hidden_dropout_prob") if get("hidden_dropout_prob") is not None else get("dropout")
    values["hidden_dropout"] = float(hidden_dropout or 0.0)
    attn_dropout = get("attention_probs_dropout_prob") if get("attention_probs_dropout_prob") is not None else get("attention_dropout")
    values["attention_dropout"] = float(attn_dropout or 0.0)
    values.update({k: v for k, v in overrides.items() if v is not None})
    needed = ["n_layers", "hidden"] + (["heads", "intermediate"] if family != "cnn" else [])
    needed += ["vocab"] if family in ("encoder", "decoder") else []
    needed += ["patch_size"] if family == "vit" else []
    missing = [k for k in needed if not values.get(k)]
    if missing:
        flags = " ".join(f"{FLAG.get(k, k)} N" for k in missing)
        raise TunewiseError(
            f"model: cannot read the architecture of {source or 'the model'} (model_type '{model_type or '?'}', family '{family}'): "
            f"missing {', '.join(missing)}; pass them as {flags}"
        )
    fields = {f.name for f in dataclasses.fields(ArchSpec)}
    kwargs = {k: v for k, v in values.items() if k in fields and v is not None}
    return ArchSpec(family=family, model_type=model_type, source=source, **kwargs)


def _audio_seq2seq_spec(get: Any, model_type: str, source: str, n_params: int | None) -> ArchSpec:
    """Whisper-like config -> an ``audio-seq2seq`` spec with (encoder, decoder) towers.

    Parameters per tower: the encoder's two convolutions (mel bins -> h, kernel 3; h -> h),
    its (sinusoidal, stored) positions and final norm; the decoder's token and position
    embeddings, cross-attention (q, k, v, o and a norm per layer) and final norm.
    """
    h = get("d_model")
    needed = {"d_model": h, "encoder_layers": get("encoder_layers"), "decoder_layers": get("decoder_layers"),
              "vocab_size": get("vocab_size")}
    missing = [k for k, v in needed.items() if not v]
    if missing:
        raise TunewiseError(f"model: cannot read the speech architecture of {source or 'the model'}: missing {', '.join(missing)} "
                            "in its config")
    mels, positions = int(get("num_mel_bins") or 80), int(get("max_source_positions") or 1500)
    dropout = float(get("dropout") or 0.0)
    attn_dropout = float(get("attention_dropout") or 0.0)
    common = dict(hidden=h, mlp_activation=str(get("activation_function") or "gelu"), hidden_dropout=dropout,
                  attention_dropout=attn_dropout, norm="layernorm")
    enc = ArchSpec(family="encoder", n_layers=int(get("encoder_layers")), heads=int(get("encoder_attention_heads")),
                   intermediate=int(get("encoder_ffn_dim")), vocab=0, max_positions=positions, source=f"{source}:encoder", **common)
    # (Whisper's k projections have no bias: one h fewer per layer than a BERT block)
    enc_params = enc.n_layers * (enc.layer_params() - h) + (mels * 3 * h + h) + (h * 3 * h + h) + positions * h + 2 * h
    enc = dataclasses.replace(enc, n_params=enc_params)
    dec = ArchSpec(family="decoder", n_layers=int(get("decoder_layers")), heads=int(get("decoder_attention_heads")),
                   intermediate=int(get("decoder_ffn_dim")), vocab=int(get("vocab_size")), tie_embeddings=True,
                   max_positions=int(get("max_target_positions") or 448), source=f"{source}:decoder", **common)
    # decoder attention has biases on q, v, o (the +4h below); cross-attention: 4 h^2 + 3h biases + a norm (2h)
    cross = 4 * h * h + 3 * h + 2 * h
    dec_params = dec.n_layers * (dec.layer_params() + 3 * h + cross) + dec.vocab * h + dec.max_positions * h + 2 * h
    dec = dataclasses.replace(dec, n_params=dec_params)
    return ArchSpec(family="audio-seq2seq", n_layers=enc.n_layers + dec.n_layers, hidden=h, heads=dec.heads,
                    intermediate=dec.intermediate, vocab=dec.vocab, towers=(enc, dec), audio_frames=2 * positions, mel_bins=mels,
                    max_positions=dec.max_positions, tie_embeddings=True, n_params=n_params, model_type=model_type, source=source)


def count_params_meta(config: Any, family: str) -> int | None:
    """Parameters counted on the meta device (no memory allocated), or None if it fails."""
    try:
        from accelerate import init_empty_weights
        from transformers import AutoModel, AutoModelForCausalLM

        with init_empty_weights():
            factory = AutoModelForCausalLM if family == "decoder" else AutoModel
            model = factory.from_config(config)
        # Tie outside the context: init_empty_weights re-creates every registered parameter.
        model.tie_weights()
        return sum(p.numel() for p in model.parameters())
    except Exception:  # noqa: BLE001 - any failure just means "use the formula"
        return None


def _config_dir(path: Path) -> Path:
    """A sentence-transformers folder may keep the HF config in its Transformer module's folder."""
    if (path / "config.json").is_file():
        return path
    modules = path / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text()):
            sub = path / module.get("path", "")
            if (sub / "config.json").is_file():
                return sub
    raise TunewiseError(f"model: {path} has no config.json; give a model folder, or describe it with --family and --hidden-size ...")


def load_arch(model: Any = None, **overrides: Any) -> ArchSpec:
    """Resolve ``model`` to an :class:`ArchSpec` without loading weights.

    Args:
        model: an ArchSpec, a transformers config object, a local folder, a hub id, or None
            (the packaged all-MiniLM-L6-v2; or, when ``overrides`` name a family, nothing).
        **overrides: ArchSpec fields set explicitly (they win, and fill what a config lacks).

    Raises:
        TunewiseError: the folder/hub id cannot be read or fields are missing.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(model, ArchSpec):
        return model.replace(**overrides) if overrides else model
    if model is None and "family" in overrides:
        family = overrides.pop("family")
        return spec_from_config({}, source="explicit values", family=family, **overrides)
    if model is not None and not isinstance(model, (str, Path)):
        spec = spec_from_config(model, source=type(model).__name__, **overrides)
        if "n_params" not in overrides:
            counted = count_params_meta(model, spec.family)
            spec = dataclasses.replace(spec, n_params=counted) if counted else spec
        return spec
    from tunewise.models.loading import load_errors, load_pretrained, resolve_model

    # None: the packaged MiniLM; a path that does not exist is a missing folder, not a hub id
    source = resolve_model(None if model is None else str(model))
    path = Path(source)
    if path.is_dir():
        config_path = _config_dir(path) / "config.json"
        try:
            from transformers import AutoConfig

            config: Any = load_pretrained(AutoConfig, str(config_path.parent))
        except (ValueError, KeyError, OSError):
            config = json.loads(config_path.read_text())  # unknown model_type: read the raw fields
    else:
        from transformers import AutoConfig

        try:
            with load_errors(source, " as a model config"):
                config = load_pretrained(AutoConfig, source)
        except TunewiseError as err:
            raise TunewiseError(f"{err}; or describe the model with --family --hidden-size --num-layers --num-heads "
                                "--intermediate-size --vocab-size") from None
    spec = spec_from_config(config, source=source, **overrides)
    if "n_params" not in overrides and not isinstance(config, dict):
        counted = count_params_meta(config, spec.family)
        spec = dataclasses.replace(spec, n_params=counted) if counted else spec
    return spec
