"""Classification metrics over true and predicted class indices.

Thin wrappers over ``sklearn.metrics`` (a core dependency): labels are integer class indices
``0..n-1``. The conventions are scikit-learn's; the tests pin them with hand-derived cases:

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

# Scalar metrics a classification task reports; any can be eval.primary.
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "weighted_f1")


def _check(y_true: Sequence[int], y_pred: Sequence[int]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    if not y_true:
        raise ValueError("no labels to score")


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> list[list[int]]:
    """Counts ``m[t][p]`` of items of true class ``t`` predicted as ``p`` (scikit-learn's orientation).

    Args:
        y_true: true class indices.
        y_pred: predicted class indices, same length.
        n_classes: size of the (square) matrix; indices must be below it.
    """
    from sklearn import metrics

    _check(y_true, y_pred)
    return metrics.confusion_matrix(y_true, y_pred, labels=list(range(n_classes))).tolist()


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Share of items whose prediction equals the true label."""
    from sklearn import metrics

    _check(y_true, y_pred)
    return float(metrics.accuracy_score(y_true, y_pred))


def per_class(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> list[dict[str, float]]:
    """Precision, recall, F1 and support (true count) of every class index.

    Returns:
        One ``{"precision", "recall", "f1", "support"}`` dict per class index.
    """
    from sklearn import metrics

    _check(y_true, y_pred)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(n_classes)), average=None, zero_division=0)
    return [{"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for p, r, f, s in zip(precision, recall, f1, support)]


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> dict[str, float]:
    """Accuracy and macro/weighted averages (see the module docstring for conventions).

    Returns:
        ``{"accuracy", "macro_f1", "macro_precision", "macro_recall", "weighted_f1"}``.
    """
    from sklearn import metrics

    _check(y_true, y_pred)
    macro = metrics.precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": float(macro[2]),
        "macro_precision": float(macro[0]),
        "macro_recall": float(macro[1]),
        "weighted_f1": float(metrics.f1_score(y_true, y_pred, average="weighted", zero_division=0)),
    }
