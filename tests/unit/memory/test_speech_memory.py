"""The speech step's memory estimate: parameters and saved activations checked against transformers'
Whisper, and Whisper medium / large-v2 (configs as facts in tests/unit/memory/data, no weights)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunewise.errors import TunewiseError
from tunewise.memory.architecture import load_arch
from tunewise.memory.speech import decoder_layer_params, estimate_speech
from tunewise.memory.steps import own_estimator, step_model

DATA = Path(__file__).parent / "data"
GB = 1e9


def _tiny_config(**extra):
    from transformers import WhisperConfig

    return WhisperConfig(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                         encoder_ffn_dim=256, decoder_ffn_dim=256, vocab_size=500, max_source_positions=1500,
                         max_target_positions=64, pad_token_id=1, bos_token_id=1, eos_token_id=1, decoder_start_token_id=2, **extra)


def test_architecture_counts_whisper_parameters_exactly():
    import torch
    from transformers import WhisperForConditionalGeneration

    cfg = _tiny_config()
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg)
    spec = load_arch(cfg)
    enc, dec = spec.towers
    assert spec.family == "audio-seq2seq" and spec.audio_frames == 3000 and spec.mel_bins == 80
    assert spec.formula_params() == sum(p.numel() for p in model.parameters())  # the closed form, no meta count
    assert enc.n_params == sum(p.numel() for p in model.model.encoder.parameters())
    assert dec.n_params == sum(p.numel() for p in model.model.decoder.parameters())
    assert decoder_layer_params(dec) == sum(p.numel() for p in model.model.decoder.layers[0].parameters())


def _saved_bytes(model, b: int, t: int) -> int:
    """Bytes autograd saves in one forward pass (each storage once, parameters left out)."""
    import torch

    seen: dict[int, int] = {}

    def pack(x):
        seen[x.untyped_storage().data_ptr()] = max(seen.get(x.untyped_storage().data_ptr(), 0), x.untyped_storage().nbytes())
        return x

    torch.manual_seed(0)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        model(input_features=torch.randn(b, 80, 3000), labels=torch.randint(3, 500, (b, t)))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(v for k, v in seen.items() if k not in params)


@pytest.mark.parametrize("strategy", ["full", "partial", "lora"])
def test_saved_activations_match_autograd_within_ten_percent(strategy):
    import torch
    from transformers import WhisperForConditionalGeneration

    torch.set_num_threads(1)
    cfg = _tiny_config()
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).train()
    if strategy == "partial":  # the encoder and the decoder's embeddings frozen (speech.partial_layers: decoder, frozen_layers: 0)
        for p in [*model.model.encoder.parameters(), *model.model.decoder.embed_tokens.parameters(),
                  *model.model.decoder.embed_positions.parameters()]:
            p.requires_grad_(False)
    if strategy == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                                                 target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]))
    measured = _saved_bytes(model, 2, 20)
    est = estimate_speech(load_arch(cfg), strategy=strategy, batch_size=2, seq_len=20)
    assert est.inputs["saved_activation_bytes"] == pytest.approx(measured, rel=0.10)


def test_strategies_order_and_the_frozen_encoder_saves_nothing_there():
    spec = load_arch(DATA / "whisper-medium")
    full, partial, lora = (estimate_speech(spec, strategy=s, batch_size=4, seq_len=64, device="cuda") for s in ("full", "partial", "lora"))
    assert lora.trainable_params < partial.trainable_params < full.trainable_params == spec.n_params
    assert lora.total_bytes < full.total_bytes and partial.total_bytes < full.total_bytes
    # the frozen encoder keeps nothing for backward: partial's saved activations are a small share of full's
    assert partial.inputs["saved_activation_bytes"] < 0.2 * full.inputs["saved_activation_bytes"]


def test_medium_and_large_next_to_the_guides_table_8():
    """Table 8 of the fine-tuning guide: Whisper needs about 5 GB (medium) and 10 GB (large) of GPU memory.

    Those figures match LoRA with fp16 autocast, activation checkpointing and one clip per step
    (weights in fp32, adapters' states, little activation memory: with checkpointing the frozen
    base's fp16 copies live one block at a time); full
    fine-tuning in the same setting needs about 3.2x (AdamW states of every parameter).
    """
    medium, large = load_arch(DATA / "whisper-medium"), load_arch(DATA / "whisper-large-v2")
    assert medium.n_params == 763_857_920 and large.n_params == 1_543_304_960  # transformers' counts for these checkpoints
    lean = {"strategy": "lora", "precision": "fp16", "gradient_checkpointing": True, "batch_size": 1, "seq_len": 64, "device": "cuda"}
    # measured on an H200 (benchmarks/results/speech_memory_cuda.md): 3.60 and 7.02 GB through the caching allocator
    assert estimate_speech(medium, **lean).allocator_bytes / GB == pytest.approx(3.60, rel=0.1)
    assert estimate_speech(large, **lean).allocator_bytes / GB == pytest.approx(7.02, rel=0.1)
    assert estimate_speech(medium, **lean).total_bytes / GB == pytest.approx(5.0, rel=0.25)  # Table 8, context included
    assert estimate_speech(large, **lean).total_bytes / GB == pytest.approx(10.0, rel=0.3)
    full = {**lean, "strategy": "full"}
    assert estimate_speech(medium, **full).total_bytes / GB > 15 and estimate_speech(large, **full).total_bytes / GB > 30


def test_the_step_has_its_own_estimator_and_refuses_bad_options():
    step = step_model("speech")
    assert own_estimator(step) is estimate_speech and own_estimator(step_model("lm")) is None
    from tunewise.memory.estimate import estimate

    spec = load_arch(DATA / "whisper-medium")
    # the generic entry point hands the speech step to its closed form (two stacks, cross-attention, conv stem)
    same = {"strategy": "lora", "precision": "fp16", "batch_size": 1, "seq_len": 64, "gradient_checkpointing": True, "device": "cuda"}
    assert estimate(spec, step="speech", **same).total_bytes == estimate_speech(spec, **same).total_bytes
    with pytest.raises(TunewiseError, match="strategy: 'head' does not apply"):
        estimate_speech(spec, strategy="head")
    with pytest.raises(TunewiseError, match="not an encoder-decoder speech model"):
        estimate_speech(load_arch(None, family="encoder", hidden=32, n_layers=2, heads=2, intermediate=64, vocab=100))
    with pytest.raises(TunewiseError, match="trainable-layers: 40 is outside 1..24"):
        estimate_speech(spec, strategy="partial", trainable_layers=40)


def test_task_profile_names_the_speech_step():
    from tunewise.tasks import TASKS

    assert TASKS.get("asr").spec.memory.step == "speech"
    assert step_model("speech").families == ("audio-seq2seq",)


def test_fit_estimates_the_decoder_at_the_longest_training_transcript():
    """A seq2seq task's decoder tokens are its longest training label, not the model's 448-token limit."""
    from types import SimpleNamespace

    from tunewise.config import load_config
    from tunewise.memory.runs import _seq_len

    cfg = load_config(None, values={"task": "asr"})
    assert _seq_len(cfg, None, SimpleNamespace(train_labels=[[1, 2, 3], [1] * 7])) == 7


def test_fit_counts_the_cached_encoder_outputs_of_every_clip():
    """With the encoder frozen and cached, the run keeps E x h floats per clip: the preflight counts them."""
    from types import SimpleNamespace

    from tunewise.config import load_config
    from tunewise.memory.estimate import estimate
    from tunewise.memory.runs import run_settings

    spec = load_arch(DATA / "whisper-medium")
    same = {"step": "speech", "strategy": "partial", "batch_size": 2, "seq_len": 40}
    grown = estimate(spec, **same, cached_clips=100).total_bytes - estimate(spec, **same).total_bytes
    assert grown == pytest.approx(4 * 100 * 1500 * 1024, rel=0.01)  # 1,500 encoder positions x d_model 1,024, fp32
    data = SimpleNamespace(train_labels=[[1] * 9], memory_settings=lambda cfg, model: {"cached_clips": 7})
    settings = run_settings(load_config(None, values={"task": "asr"}), None, "cpu", data)
    assert settings["cached_clips"] == 7 and settings["seq_len"] == 9
