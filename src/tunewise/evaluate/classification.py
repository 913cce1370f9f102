"""Classification metrics over true and predicted class indices.

Pure functions, no torch, no scikit-learn: labels are integer class indices ``0..n-1``.
Conventions follow scikit-learn (``sklearn.metrics``) exactly, which the tests check:

* ``precision`` of a class is TP / (TP + FP) and 0 when the class was never predicted
  (scikit-learn ``zero_division=0``); ``recall`` is TP / (TP + FN) and 0 for a class absent
  from the true labels; ``f1`` is their harmonic mean, 0 when both are 0.
* ``macro_*`` averages over the classes that occur in the true labels **or** the
  predictions (scikit-learn's default ``labels=None``), so a class the model never meets
  and never predicts does not dilute the average.
* The confusion matrix is indexed ``[true][predicted]`` (scikit-learn's orientation).
"""

from __future__ import annotations

from collections.abc import Sequence

from tunewise.errors import TunewiseError, did_you_mean

# Scalar metrics a classification task reports; any can be eval.primary.
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "weighted_f1")


def check_metric_name(name: str) -> str:
    """Canonical (lower-case) name of a classification metric, or a TunewiseError."""
    canonical = str(name).strip().lower()
    if canonical not in CLASSIFICATION_METRICS:
        raise TunewiseError(
            f"eval.primary: '{name}' is not a classification metric{did_you_mean(canonical, CLASSIFICATION_METRICS)}; "
            f"choose from {', '.join(CLASSIFICATION_METRICS)}"
        )
    return canonical


def _check(y_true: Sequence[int], y_pred: Sequence[int]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    if not y_true:
        raise ValueError("no labels to score")


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> list[list[int]]:
    """Counts ``m[t][p]`` of items of true class ``t`` predicted as ``p``.

    Args:
        y_true: true class indices.
        y_pred: predicted class indices, same length.
        n_classes: size of the (square) matrix; indices must be below it.
    """
    _check(y_true, y_pred)
    matrix = [[0] * n_classes for _ in range(n_classes)]
    for t, p in zip(y_true, y_pred):
        matrix[t][p] += 1
    return matrix


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Share of items whose prediction equals the true label."""
    _check(y_true, y_pred)
    return sum(t == p for t, p in zip(y_true, y_pred)) / len(y_true)


def per_class(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> list[dict[str, float]]:
    """Precision, recall, F1 and support (true count) of every class index.

    Returns:
        One ``{"precision", "recall", "f1", "support"}`` dict per class index.
    """
    m = confusion_matrix(y_true, y_pred, n_classes)
    out = []
    for c in range(n_classes):
        tp = m[c][c]
        predicted = sum(m[t][c] for t in range(n_classes))
        support = sum(m[c])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append({"precision": precision, "recall": recall, "f1": f1, "support": support})
    return out


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> dict[str, float]:
    """Accuracy and macro/weighted averages (see the module docstring for conventions).

    Returns:
        ``{"accuracy", "macro_f1", "macro_precision", "macro_recall", "weighted_f1"}``.
    """
    rows = per_class(y_true, y_pred, n_classes)
    present = sorted(set(y_true) | set(y_pred))  # scikit-learn's labels=None
    n = len(present)
    total = sum(r["support"] for r in rows)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": sum(rows[c]["f1"] for c in present) / n,
        "macro_precision": sum(rows[c]["precision"] for c in present) / n,
        "macro_recall": sum(rows[c]["recall"] for c in present) / n,
        "weighted_f1": sum(r["f1"] * r["support"] for r in rows) / total,
    }
