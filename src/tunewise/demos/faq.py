"""Demos on the packaged Swedish construction FAQ (zaragoza-construction-faq, CC-BY-4.0).

* ``embedding`` (``tunewise demo``): fine-tune the packaged all-MiniLM-L6-v2 on questions ->
  answers: 400 question/answer pairs train, the other questions are held out and searched
  against all 503 answers.
* ``classification``: question -> one of 39 categories, on the same model with a new head.

Its budget sweep (``tunewise demo --budget``): a geometric grid 25..400 (5 sizes) x 2 seeds at 2
epochs each (one seed at 400, all the data: its seeds would train on the same pairs), then a
4-epoch time curve at the size the data sweep recommends: 10 training runs and 15 evaluations of
the 503-answer corpus, "before" being the demo's pre-trained score. Measured side by side with one
``tunewise demo`` in ``benchmarks/results/budget_cost.md``.
"""

from __future__ import annotations

from pathlib import Path

from tunewise.data.packaged import load_faq
from tunewise.demos.base import Demo, cached_jsonl, register_demo

DEMO_TRAIN_PAIRS = 400


def faq_pairs_file(lang: str = "sv") -> Path:
    """The FAQ as a JSONL of {id, category, query, positive}, written once to the cache."""
    return cached_jsonl(f"faq_{lang}_pairs.jsonl", lambda: (
        {"id": r["id"], "category": r["category"], "query": r["q"], "positive": r["a"]} for r in load_faq(lang)))


def _held_out(path: Path) -> dict[str, int]:
    """400 training pairs; the other questions are held out (all answers are searched)."""
    with path.open(encoding="utf-8") as lines:
        return {"data.eval_size": sum(1 for _ in lines) - DEMO_TRAIN_PAIRS}


EMBEDDING = register_demo(Demo(
    name="embedding",
    task="embedding",
    data=faq_pairs_file,
    data_values=_held_out,
    values={"data.kind": "pairs", "eval.k": [1, 10, 20]},
    output_dir="runs/demo",
    banner="[bold]tunewise demo[/]: all-MiniLM-L6-v2 on the construction FAQ ({lang}), questions -> answers",
    budget_values={"train.epochs": 2},
    sweep={"seeds": 2, "largest_seeds": 1, "epochs": 4.0, "validate": True},
    budget_banner="[bold]tunewise budget demo[/]: all-MiniLM-L6-v2 on the construction FAQ ({lang})",
))

CLASSIFICATION = register_demo(Demo(
    name="classification",
    task="classification",
    data=faq_pairs_file,
    values={
        "data.columns": {"text": "query", "label": "category"},
        "data.eval_fraction": 0.2,
        "train.epochs": 5.0,  # measured: 0.43 -> 0.52 accuracy (seed 42); 10 epochs reach ~0.55
        "train.learning_rate": 1e-4,
        "eval.examples": 5,
    },
))
