"""Labeled items (text or image, label): class checks and a seeded stratified split.

Classification and image search both hold out a share of every class, so that each class
the model trains on is also scored (small classes keep at least one training item). A class
with a single item can be neither learned nor scored and is an error naming the class.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tunewise.config import DataConfig
from tunewise.data.readers import (
    label_value,
    no_labels_left,
    read_records,
    require_columns,
    text_value,
)
from tunewise.data.retrieval import column_map
from tunewise.errors import TunewiseError

T = TypeVar("T")


@dataclass
class LabeledData(Generic[T]):
    """Training, evaluation and (for early stopping) validation items with class indices."""

    train: list[T]
    train_labels: list[int]
    eval: list[T]
    eval_labels: list[int]
    classes: list[str]  # index -> class name
    validation: list[T] | None = None
    validation_labels: list[int] | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def check_classes(labels: Sequence[str], source: str) -> list[str]:
    """The sorted class names; every class needs at least two items.

    Raises:
        TunewiseError: fewer than two classes, or a class with one item (named).
    """
    counts = Counter(labels)
    if len(counts) < 2:
        raise TunewiseError(f"{source}: only {len(counts)} class ({', '.join(map(str, counts))}); classification and search need at least 2")
    single = sorted(c for c, n in counts.items() if n < 2)
    if single:
        more = f" and {len(single) - 1} more" if len(single) > 1 else ""
        raise TunewiseError(
            f"{source}: class '{single[0]}'{more} has only one item; each class needs at least 2 "
            "(one to train, one to evaluate): add items or remove the class"
        )
    return sorted(counts)


def stratified_split(labels: Sequence[int], fraction: float, size: int | None, seed: int,
                     min_held: int = 1) -> tuple[list[int], list[int]]:
    """Seeded per-class hold-out: (train indices, held-out indices), both sorted.

    Each class gives ``round(n_c * share)`` items (at least ``min_held`` while keeping at least
    1 for training), where ``share`` is ``fraction``, or ``size / n`` when a size is given.
    Search holds out 2 per class at least, so that every held-out image has a match.

    Raises:
        TunewiseError: the held-out set would leave nothing to train on.
    """
    n = len(labels)
    share = size / n if size is not None else fraction
    if size is not None and size >= n:
        raise TunewiseError(f"data.eval_size: {size} held-out items leave nothing to train on ({n} in all); lower it")
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    rng = random.Random(seed)
    held: list[int] = []
    for label in sorted(by_class):
        items = by_class[label]
        rng.shuffle(items)
        k = min(max(min_held, round(len(items) * share)), len(items) - 1)
        held.extend(items[:k])
    held_set = set(held)
    return [i for i in range(n) if i not in held_set], sorted(held)


def split_labeled(items: list[T], names: list[str], cfg: DataConfig, seed: int, source: str,
                  *, need_validation: bool = False, min_held: int = 1) -> LabeledData[T]:
    """Check classes and hold out an evaluation (and optionally validation) share per class."""
    classes = check_classes(names, source)
    index = {c: i for i, c in enumerate(classes)}
    labels = [index[c] for c in names]
    train_idx, eval_idx = stratified_split(labels, cfg.eval_fraction, cfg.eval_size, seed, min_held)
    if cfg.max_train is not None and len(train_idx) > cfg.max_train:
        rng = random.Random(seed)
        train_idx = sorted(rng.sample(train_idx, cfg.max_train))
    val_idx: list[int] = []
    if need_validation:
        sub = [labels[i] for i in train_idx]
        keep, val = stratified_split(sub, cfg.validation_fraction, None, seed + 1, min_held)
        train_idx, val_idx = [train_idx[i] for i in keep], [train_idx[i] for i in val]
    data = LabeledData(
        train=[items[i] for i in train_idx], train_labels=[labels[i] for i in train_idx],
        eval=[items[i] for i in eval_idx], eval_labels=[labels[i] for i in eval_idx], classes=classes,
        validation=[items[i] for i in val_idx] if need_validation else None,
        validation_labels=[labels[i] for i in val_idx] if need_validation else None,
    )
    data.report = {
        "kind": "labeled",
        "items_read": len(items),
        "classes": len(classes),
        "train_examples": len(train_idx),
        "eval_items": len(eval_idx),
        "validation_items": len(val_idx),
        "smallest_class": min(Counter(names).values()),
        "skipped_missing_labels": getattr(names, "skipped_missing", 0),
    }
    return data


class LabelNames(list):
    """Label names (a plain list) that also carry how many rows were skipped for a missing label.

    :func:`read_text_labeled` returns one so that :func:`split_labeled` can put the count in
    the data report while callers keep unpacking ``texts, labels``.
    """

    skipped_missing: int = 0


def read_text_labeled(cfg: DataConfig) -> tuple[list[str], list[str]]:
    """(texts, label names) from the training file's text and label columns.

    A missing label (empty, null, NaN or an NA string such as "N/A") is an error, or with
    ``data.on_missing_label: skip`` the row is left out; the label list's ``skipped_missing``
    counts those rows.

    Raises:
        TunewiseError: no file, a missing column (with a suggestion), an empty text or a
            missing label (row named).
    """
    if cfg.train is None:
        raise TunewiseError("data.train: no training data given; set data.train (or --train) to a CSV/JSONL/Parquet file with text and label columns")
    cols = column_map(cfg)
    records = read_records(cfg.train, cfg.format, option="data.train")
    require_columns(records, {"text": cols["text"], "label": cols["label"]}, cfg.train)
    texts: list[str] = []
    labels = LabelNames()
    for i, r in enumerate(records):
        label = label_value(r, cols["label"], i, cfg.train, cfg.on_missing_label)
        if label is None:
            labels.skipped_missing += 1
            continue
        texts.append(text_value(r, cols["text"], i, cfg.train))
        labels.append(label)
    if not labels:
        raise no_labels_left(cfg.train, cols["label"], labels.skipped_missing)
    return texts, labels


# The data half of the Task contract for tasks over LabeledData (text/image classification,
# image search): the tasks take these functions as their methods (composition, no base class).


def labeled_report(data: LabeledData) -> dict[str, Any]:
    """Task.data_report for LabeledData."""
    return data.report


def labeled_n_train(data: LabeledData) -> int:
    """Task.n_train for LabeledData."""
    return len(data.train)


def labeled_subset(data: LabeledData, indices: list[int]) -> LabeledData:
    """Task.subset for LabeledData: the training items at ``indices`` (a budget-sweep point); evaluation data unchanged."""
    import dataclasses

    report = {**data.report, "train_examples": len(indices)}
    return dataclasses.replace(data, train=[data.train[i] for i in indices],
                               train_labels=[data.train_labels[i] for i in indices], report=report)


def labeled_chance(data: LabeledData, config: Any) -> dict[str, float]:
    """Task.chance for classifiers: always predicting the majority evaluation class."""
    from tunewise.evaluate.chance import majority_share

    share = majority_share(data.eval_labels)
    return {} if share is None else {"accuracy": share}
