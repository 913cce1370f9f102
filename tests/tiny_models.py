"""Tiny random models built from config, shared by the tests (never downloaded).

Builders return the folder they wrote; ``conftest.py`` wraps them in session fixtures
(``tiny_st_model``, ``tiny_bert``, ``tiny_llama``, ``tiny_gpt2``, ``tiny_resnet``, ``tiny_vit``,
``tiny_clip``). Test modules import the builders and data helpers from here.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

TOPICS = [
    "permit", "roof", "window", "garage", "fence", "balcony", "heating", "drainage", "facade", "attic",
    "basement", "chimney", "solar", "insulation", "stairs", "terrace", "pool", "shed", "wall", "floor",
]
FILLER = ["please", "tell", "me", "about", "the", "rules", "for", "a", "new", "my", "house", "how", "long", "does", "it", "take"]

SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def tiny_tokenizer(chat_template: str | None = CHATML):
    """Character-level fast tokenizer: one token per character, ChatML markers as special tokens."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    chars = list(string.ascii_letters + string.digits + string.punctuation + " \n")
    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(SPECIALS + chars)}, merges=[], unk_token="<unk>"))
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="</s>", additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = chat_template
    return tok


def build_tiny_lm(path: Path, arch: str, hidden: int = 32) -> str:
    """A tiny random causal LM folder: Llama (with a ChatML template) or GPT-2 (no template)."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    torch.manual_seed(0)
    tok = tiny_tokenizer(CHATML if arch == "llama" else None)
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    if arch == "llama":
        config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256, **ids)
    else:
        config = GPT2Config(vocab_size=len(tok), n_embd=hidden, n_layer=2, n_head=2, n_positions=256, **ids)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def json_rows(n: int = 40) -> list[dict]:
    """Prompt -> a fixed JSON shape: a format a random model does not follow but learns fast."""
    words = ["roof", "door", "wall", "yard", "gate"]
    return [{"prompt": f"item {words[i % 5]} {i}", "completion": json.dumps({"id": i % 5})} for i in range(n)]


def lm_config(tmp_path: Path, model: str, data: str, **extra) -> dict:
    """A causal-LM run config dict for the tiny models (``section__key=value`` overrides)."""
    cfg = {"task": "causal_lm", "model": model, "output_dir": str(tmp_path / "run"), "overwrite": True,
           "data": {"train": data, "eval_size": 8},
           "train": {"epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.0},
           "llm": {"max_length": 64, "max_new_tokens": 12, "format_check": "json"}, "eval": {"examples": 2}}
    for key, value in extra.items():
        section, _, name = key.partition("__")
        if name:
            cfg.setdefault(section, {})[name] = value
        else:
            cfg[section] = value
    return cfg


def build_tiny_bert(path):
    """A tiny random BertModel with a word-level tokenizer over w0..w39 (classification tests)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=32)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(str(path))
    fast.save_pretrained(str(path))
    return path


def build_tiny_resnet(path):
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(0)
    ResNetModel(ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                             layer_type="basic")).save_pretrained(str(path))
    return path


def build_tiny_vit(path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=32)).save_pretrained(str(path))
    return path


def build_tiny_clip(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizerFast

    # A character-level BPE vocabulary: enough for CLIP's tokenizer class, tiny to build.
    vocab = ["<pad>", "<unk>", "<s>", "</s>"] + list(string.ascii_lowercase) + [c + "</w>" for c in string.ascii_lowercase]
    tok = Tokenizer(models.BPE({w: i for i, w in enumerate(vocab)}, [], unk_token="<unk>", end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = CLIPTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>", model_max_length=32)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, eos_token_id=3, bos_token_id=2, pad_token_id=0),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2),
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(str(path))
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=tokenizer).save_pretrained(str(path))
    return path


def _vocab() -> list[str]:
    words = sorted(set(TOPICS + FILLER + ["what", "is", "answer", "info", "regarding", "details"]))
    chars = list(string.ascii_lowercase + string.digits + ".,?!-:;'\"åäö")
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + chars + [f"##{c}" for c in chars]


def build_tiny_st_model(path: Path, *, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """A sentence-transformers folder: random BertModel (from config) + WordPiece tokenizer + mean pooling."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    raw = path.parent / f"{path.name}-hf"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "vocab.txt").write_text("\n".join(_vocab()) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(raw / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(_vocab()), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=hidden * 2, max_position_embeddings=64)
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    word = Transformer(str(raw), max_seq_length=32)
    model = SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension(), "mean")], device="cpu")
    model.save(str(path), create_model_card=False)
    return path


def build_tiny_whisper(path: Path, *, multilingual: bool = False, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """A random WhisperForConditionalGeneration (from config) with a WhisperProcessor built offline.

    The tokenizer is byte-level BPE over single printable ASCII characters (no merges) plus
    Whisper's special tokens in their real order (every language token when ``multilingual``,
    so that the tokenizer's language ids line up); the generation config carries what
    ``generate()`` needs (``is_multilingual``, ``lang_to_id``, ``task_to_id``, no-timestamps id).
    """
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    to_unicode = bytes_to_unicode()
    chars = [to_unicode[b] for b in (string.ascii_letters + string.digits + string.punctuation + " ").encode()]
    vocab = {c: i for i, c in enumerate(dict.fromkeys(chars))}
    langs = list(LANGUAGES) if multilingual else []
    specials = ["<|endoftext|>", "<|startoftranscript|>", *[f"<|{code}|>" for code in langs], "<|translate|>", "<|transcribe|>",
                "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[], model_max_length=64)
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.pad_token = "<|endoftext|>"
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in specials}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(vocab_size=len(tokenizer), num_mel_bins=80, encoder_layers=layers, decoder_layers=layers,
                           encoder_attention_heads=2, decoder_attention_heads=2, d_model=hidden, encoder_ffn_dim=2 * hidden,
                           decoder_ffn_dim=2 * hidden, max_source_positions=1500, max_target_positions=64,
                           pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    generation = GenerationConfig(decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot, bos_token_id=eot,
                                  no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=multilingual, max_length=64,
                                  suppress_tokens=[], begin_suppress_tokens=[eot])
    if multilingual:
        generation.lang_to_id = {f"<|{code}|>": ids[f"<|{code}|>"] for code in langs}
        generation.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    model.generation_config = generation
    model.save_pretrained(path)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(path)
    return path


def write_speech_csv(folder: Path, texts: list[str], *, seconds: float = 1.0, seed: int = 0, name: str = "speech.csv") -> Path:
    """Synthetic clips (a tone per clip plus a little noise, 16 kHz WAV) and a CSV of (audio, text) rows."""
    import csv

    import numpy as np
    import soundfile as sf

    folder = Path(folder)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000.0
    rows = []
    for i, text in enumerate(texts):
        audio = 0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t) + 0.01 * rng.standard_normal(t.size)
        rel = f"clips/{name.split('.')[0]}_{i}.wav"
        sf.write(folder / rel, audio.astype(np.float32), 16000)
        rows.append({"audio": rel, "text": text})
    out = folder / name
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["audio", "text"])
        writer.writeheader()
        writer.writerows(rows)
    return out
