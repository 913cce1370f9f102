"""The rows a text task trains on: its labeled items plus what the data levers add.

The levers of issue 16 (more from the same labels) each own one step; a task calls
:func:`search_rows` (embedding search: ``{"anchor", "positive"[, "negative..."]}`` rows) or
:func:`labeled_texts` (classification: texts and their labels) just before training, so that
every strategy, ``fit``, ``compare`` and every budget point get the same treatment:

1. synthetic pairs from unlabeled documents (:mod:`tunewise.data.synthetic`);
2. augmentation of training text only (:mod:`tunewise.data.augment`);
3. mined hard negatives (:mod:`tunewise.data.hard_negatives`), last, so that synthetic and
   augmented pairs get negatives too.

Each step records what it did and what it cost in ``report`` (``<lever>_seconds`` counts the
full cost of the lever even when its cache answered, so the budget planner can price it, and
``<lever>_cached`` says whether this run paid it); tasks keep that dict on
``TrainStats.details["levers"]``.
"""

from __future__ import annotations

from typing import Any


def search_rows(rows: list[dict[str, str]], data: Any, config: Any, model: Any = None) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The embedding task's training rows after every lever the config turns on.

    Args:
        rows: the labeled (subset of) training rows.
        data: the task's prepared data (its evaluation corpus must stay out of mining).
        config: the run config.
        model: the pre-trained model as training starts (mining and round-trip filtering use it).

    Returns:
        ``(rows, report)``.
    """
    report: dict[str, Any] = {}
    rows = list(rows)
    # 1. synthetic queries for documents without a labeled one (data.unlabeled or uncovered training documents)
    from tunewise.data.synthetic import synthetic_rows

    rows, done = synthetic_rows(rows, data, config, model)
    report.update(done)
    # 2. augmentation (training rows only: evaluation and validation were split off before)
    from tunewise.data.augment import augment_search_rows

    rows, done = augment_search_rows(rows, config.data.augment, seed=config.seed, config=config, model=model)
    report.update(done)
    # 3. mined hard negatives, last: synthetic and augmented pairs get theirs too
    from tunewise.data.hard_negatives import add_hard_negatives

    rows = add_hard_negatives(rows, data, config, model, report)
    return rows, report


def labeled_texts(texts: list[str], labels: list[int], config: Any, model: Any = None) -> tuple[list[str], list[int], dict[str, Any]]:
    """Classification's training texts and labels after the levers that apply to it (augmentation).

    ``model``: ``(tokenizer, transformers model)`` for ops that read the model (``synonym``).
    """
    from tunewise.data.augment import augment_labeled

    texts, labels, report = augment_labeled(texts, labels, config.data.augment, seed=config.seed, config=config, model=model)
    return texts, labels, report
