"""Shared fixtures: tiny random models built from config (never downloaded) and small data."""

from __future__ import annotations

import json
import os
import random
import string
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOPICS = [
    "permit", "roof", "window", "garage", "fence", "balcony", "heating", "drainage", "facade", "attic",
    "basement", "chimney", "solar", "insulation", "stairs", "terrace", "pool", "shed", "wall", "floor",
]
FILLER = ["please", "tell", "me", "about", "the", "rules", "for", "a", "new", "my", "house", "how", "long", "does", "it", "take"]


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


@pytest.fixture(scope="session")
def tiny_st_model(tmp_path_factory) -> str:
    """Path of a tiny random sentence-transformers model (2 layers, hidden 32)."""
    return str(build_tiny_st_model(tmp_path_factory.mktemp("models") / "tiny-st"))


def make_pairs(n: int = 60, seed: int = 0) -> list[dict[str, str]]:
    """Query/answer pairs sharing a topic word, so even a tiny model can learn them."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        q = " ".join(rng.sample(FILLER, 3) + [topic, f"q{i}"])
        a = f"answer regarding {topic} details {i % 7}"
        rows.append({"query": q, "positive": a, "negative": f"answer regarding {TOPICS[(i + 3) % len(TOPICS)]} info",
                     "label": topic})
    return rows


@pytest.fixture()
def pairs_file(tmp_path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_pairs()), encoding="utf-8")
    return path


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    os.environ["TUNEWISE_CACHE"] = str(tmp_path_factory.mktemp("tunewise-cache"))
    yield
