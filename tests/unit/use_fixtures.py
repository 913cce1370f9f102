"""Finished tiny runs shared by the predict, export and model-card tests.

Each test module makes its own module-scoped fixture of them: ``embedding_run = pytest.fixture(scope="module")(build_embedding_run)``.
"""

from __future__ import annotations

import json
import random

from rich.console import Console

import tunewise
from tunewise.config import load_config

from conftest import make_pairs  # noqa: E402
from tiny_models import write_jsonl  # noqa: E402

QUIET = Console(quiet=True)


def build_embedding_run(tmp_path_factory, tiny_st_model):
    """A tiny sentence-transformers run (one epoch on topic pairs)."""
    root = tmp_path_factory.mktemp("emb")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in make_pairs()), encoding="utf-8")
    cfg = load_config(None, [f"model={tiny_st_model}", f"data.train={pairs}", f"output_dir={root / 'run'}",
                             "train.epochs=1", "train.batch_size=8", "train.learning_rate=1e-3"])
    return tunewise.fit(cfg, console=QUIET).output_dir


def build_classifier_run(tmp_path_factory, tiny_bert):
    """A tiny BERT text classifier run (three word-topic classes)."""
    root = tmp_path_factory.mktemp("cls")
    rng = random.Random(0)
    rows = [{"text": " ".join(f"w{rng.choice(list(words))}" for _ in range(5)), "label": label}
            for label, words in (("alpha", range(0, 3)), ("beta", range(10, 13)), ("gamma", range(20, 23))) for _ in range(12)]
    data = write_jsonl(root / "texts.jsonl", rows)
    cfg = load_config(None, ["task=classification", f"model={tiny_bert}", f"data.train={data}", f"output_dir={root / 'run'}",
                             "train.epochs=2", "train.learning_rate=1e-3", "train.batch_size=8", "data.eval_fraction=0.25",
                             "train.warmup_ratio=0"])
    return tunewise.fit(cfg, console=QUIET).output_dir
