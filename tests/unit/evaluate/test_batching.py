"""Length-sorted batching: the order helpers, and classifier paths that give results in input order."""

from __future__ import annotations

import torch

from tunewise.evaluate.batching import in_order, inverse, length_order, restore_order


def test_length_order_is_longest_first_and_stable():
    texts = ["bb", "a", "dddd", "cc", "eeee"]
    order = length_order(texts)
    assert order == [2, 4, 0, 3, 1]  # 4-char texts in input order, then the 2-char ones, then "a"
    assert in_order(texts, order) == ["dddd", "eeee", "bb", "cc", "a"]
    assert restore_order(in_order(texts, order), order) == texts
    rows = torch.arange(5)[order]
    assert rows[inverse(order)].tolist() == [0, 1, 2, 3, 4]


def test_items_without_length_keep_their_order():
    assert length_order([b"x", 3, None]) == [0, 1, 2]
    assert length_order([]) == []


def test_sorted_batches_pad_less():
    """Padded tokens per batch of 2: input order pairs long with short, sorted order does not."""
    lengths = [30, 2, 29, 3, 31, 1]

    def padded(order):
        ls = [lengths[i] for i in order]
        return sum(max(ls[i:i + 2]) * len(ls[i:i + 2]) for i in range(0, len(ls), 2))

    assert padded(range(6)) == 180  # (30 + 29 + 31) * 2
    assert padded(length_order(["x" * n for n in lengths])) == 124  # batches (31, 30), (29, 3), (2, 1): (31 + 29 + 2) * 2


def test_classifier_predictions_come_back_in_input_order(tiny_bert):
    """predict() sorts by length internally; each text's prediction equals predicting it alone."""
    from tunewise.config import load_config
    from tunewise.tasks.classification import ClassificationTask

    task = ClassificationTask()
    cfg = load_config(None, values={"task": "classification", "model": str(tiny_bert)})
    task._classes = ["a", "b", "c"]
    model = task._load(cfg, ["a", "b", "c"], "cpu", None)
    texts = ["w1", "w2 w3 w4 w5 w6 w7", "w8 w9", "w10 w11 w12 w13", "w14"]
    together = task.predict(model, texts, batch_size=2)
    alone = [task.predict(model, [t], batch_size=1)[0] for t in texts]
    assert together == alone
