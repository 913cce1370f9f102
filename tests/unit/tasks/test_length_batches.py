"""Length-grouped training batches (train.group_by_length): same rows per epoch, less padding."""

from __future__ import annotations

import random

import pytest
import torch
from datasets import Dataset
from sentence_transformers.base.sampler import BatchSamplers, NoDuplicatesBatchSampler

from tunewise.config import load_config
from tunewise.tasks.embedding import training_arguments
from tunewise.tasks.length_batches import (
    LengthGroupedBatchSampler,
    LengthGroupedNoDuplicatesSampler,
    grouped_batches,
    row_lengths,
)


def _rows(n: int = 300, shared: int = 0, seed: int = 0) -> list[dict[str, str]]:
    """Short queries, answers of 10-600 characters (Swedish letters included); ``shared`` rows
    reuse one answer text, as FAQ pairs whose questions share an answer do."""
    rng = random.Random(seed)
    rows = [{"anchor": f"fråga {i} " + "x" * rng.randint(3, 40), "positive": f"svar {i} " + "å" * rng.randint(10, 600)}
            for i in range(n)]
    for i in range(shared):
        rows[i]["positive"] = "samma svar för alla"
    return rows


def _padding(batches: list[list[int]], lengths: list[int]) -> float:
    return sum(len(b) * max(lengths[i] for i in b) for b in batches) / sum(lengths[i] for b in batches for i in b)


def _epoch(sampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("cls", [LengthGroupedNoDuplicatesSampler, LengthGroupedBatchSampler])
def test_every_row_once_per_epoch_with_less_padding_than_random_batches(cls):
    ds = Dataset.from_list(_rows())
    lengths = row_lengths(ds)
    grouped = _epoch(cls(ds, 16, False, generator=torch.Generator(), seed=5), 0)
    plain = _epoch(NoDuplicatesBatchSampler(ds, 16, False, generator=torch.Generator(), seed=5), 0)
    assert sorted(i for b in grouped for i in b) == list(range(len(ds)))
    assert len(grouped) == len(plain) == 19 and sorted(len(b) for b in grouped) == [12] + [16] * 18
    assert _padding(grouped, lengths) < 0.8 * _padding(plain, lengths)
    # the batch with the most characters comes first: a run that does not fit fails at step 1
    assert sum(lengths[i] for i in grouped[0]) == max(sum(lengths[i] for i in b) for b in grouped)


def test_the_same_seed_and_epoch_draw_the_same_batches_and_epochs_differ():
    ds = Dataset.from_list(_rows())
    a = LengthGroupedNoDuplicatesSampler(ds, 16, False, generator=torch.Generator(), seed=1)
    b = LengthGroupedNoDuplicatesSampler(ds, 16, False, generator=torch.Generator(), seed=1)
    assert _epoch(a, 0) == _epoch(b, 0)  # a resumed run (fresh sampler, same epoch) gets the same batches
    assert _epoch(a, 1) != _epoch(a, 0)
    c = LengthGroupedNoDuplicatesSampler(ds, 16, False, generator=torch.Generator(), seed=2)
    assert _epoch(c, 0) != _epoch(a, 0)


def test_no_batch_holds_a_text_twice_when_negatives_come_from_the_batch():
    rows = _rows(200, shared=40)  # 40 questions share one answer: at most one of them per batch
    ds = Dataset.from_list(rows)
    batches = _epoch(LengthGroupedNoDuplicatesSampler(ds, 16, False, generator=torch.Generator(), seed=0), 0)
    for batch in batches:
        texts = [rows[i][k] for i in batch for k in ("anchor", "positive")]
        assert len(texts) == len(set(texts))
    # the shared answer's rows wait for later batches (single-row ones at the end); none is lost
    assert sorted(i for b in batches for i in b) == list(range(200))


def test_drop_last_keeps_only_full_batches():
    ds = Dataset.from_list(_rows(100))
    batches = _epoch(LengthGroupedNoDuplicatesSampler(ds, 16, True, generator=torch.Generator(), seed=0), 0)
    assert len(batches) == 6 and all(len(b) == 16 for b in batches)


def test_grouping_only_sorts_within_windows_of_the_shuffled_order():
    """A batch is still a random draw: rows are grouped with their window's neighbours only."""
    lengths = list(range(256))  # row i has length i
    order = list(range(256))
    batches = grouped_batches(order, lengths, 4, drop_last=False, window=2)
    for batch in batches:
        windows = {i // 8 for i in batch}  # each window holds 2 batches of 4 consecutive rows of the order
        assert len(windows) == 1


def test_training_arguments_pick_the_grouped_sampler_unless_switched_off(tmp_path):
    grouped = load_config(None, values={"task": "embedding"})
    plain = load_config(None, values={"task": "embedding", "train.group_by_length": False})
    assert training_arguments(grouped, tmp_path, "cpu", in_batch_negatives=True, evaluate=False).batch_sampler \
        is LengthGroupedNoDuplicatesSampler
    assert training_arguments(grouped, tmp_path, "cpu", in_batch_negatives=False, evaluate=False).batch_sampler \
        is LengthGroupedBatchSampler
    assert training_arguments(plain, tmp_path, "cpu", in_batch_negatives=True, evaluate=False).batch_sampler \
        == BatchSamplers.NO_DUPLICATES
