"""The ``llm`` demo: teach the packaged SmolLM2-135M-Instruct to answer in a fixed JSON format.

Seed 001: fine-tune an LLM to change its *format* (SQL, API calls, a JSON shape), not to add
knowledge. Here every English question of the packaged construction FAQ is answered with one
fixed JSON object, ``{"category": "<slug>"}`` (the FAQ's 39 category slugs, e.g.
``bygglov``). The pre-trained model answers in prose, so before fine-tuning almost no output
has the format; after two minutes of LoRA on 2 CPU cores nearly all do. ``format_valid``
(a regular expression for the fixed object) is the primary metric; ``exact_match`` also
needs the right category, which is harder for a 135M model: the gap between the two is
seed 001's point, made visible.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tunewise.data.packaged import load_faq
from tunewise.demos.base import Demo, cached_jsonl, register_demo

# 200 questions x 2 epochs, 40 held out: about 2 minutes end to end on an idle 2-core CPU with
# LoRA on every linear layer (format_valid 0 -> 0.97-1.00, exact_match 0 -> 0.175; q/v-only
# adapters learned the format but no category): benchmarks/results/llm_strategies.md.
LLM_DEMO_TRAIN = 200
LLM_DEMO_EVAL = 40
FORMAT_REGEX = r'\{"category": "[a-z0-9åäö-]+"\}'


def faq_json_file(lang: str = "en") -> Path:
    """The FAQ as prompt/completion JSONL: question -> ``{"category": "<slug>"}``, written once."""
    def rows() -> list[dict]:
        out = [{"id": r["id"], "prompt": r["q"], "completion": json.dumps({"category": r["category"]}, ensure_ascii=False)}
               for r in load_faq(lang)]
        random.Random(0).shuffle(out)  # the file is in category order; the split is seeded anyway
        return out

    return cached_jsonl(f"faq_{lang}_json_format.jsonl", rows)


LLM = register_demo(Demo(
    name="llm",
    task="causal-lm",
    data=faq_json_file,
    lang="en",
    values={
        "data.eval_size": LLM_DEMO_EVAL,
        "data.max_train": LLM_DEMO_TRAIN,
        "strategy": {"name": "lora", "rank": 8, "alpha": 16},
        "train.epochs": 2,
        "train.batch_size": 8,
        "train.learning_rate": 1e-3,
        "train.warmup_ratio": 0.05,
        "llm.max_length": 96,
        "llm.max_new_tokens": 16,  # the longest answer, {"category": "yrkesbevis-certifikat"}, is 14 tokens + end
        "llm.system_prompt": "Reply in JSON.",  # short: SmolLM2's default system prompt costs 13 tokens per example
        "llm.format_check": f"regex:{FORMAT_REGEX}",
        "llm.eval_batch_size": 20,
        "eval.examples": 3,
    },
    banner="[bold]tunewise demo --task llm[/]: SmolLM2-135M-Instruct ({strategy}) learns to answer as a JSON object",
))
