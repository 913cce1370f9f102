"""Shared fixtures: tiny random models built from config (never downloaded) and small data."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny_models import (  # noqa: E402 - after the offline switches
    FILLER,
    TOPICS,
    build_tiny_bert,
    build_tiny_clip,
    build_tiny_lm,
    build_tiny_resnet,
    build_tiny_st_model,
    build_tiny_vit,
)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    return build_tiny_lm(tmp_path_factory.mktemp("lm") / "tiny-llama", "llama")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> str:
    return build_tiny_lm(tmp_path_factory.mktemp("lm") / "tiny-gpt2", "gpt2")


@pytest.fixture(scope="session")
def tiny_resnet(tmp_path_factory):
    return build_tiny_resnet(tmp_path_factory.mktemp("resnet"))


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory):
    return build_tiny_vit(tmp_path_factory.mktemp("vit"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


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
