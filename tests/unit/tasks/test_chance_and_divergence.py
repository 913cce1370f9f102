"""Chance levels (exact expectations, checked by simulation) and the divergence guard."""

from __future__ import annotations

import random
import types

import pytest
import torch

from tunewise.evaluate.chance import at_or_below_chance, majority_share, ranking_chance
from tunewise.tasks.divergence import Diverged, DivergenceGuard, nonfinite_gradients, nonfinite_weights


def test_ranking_chance_hand_derived():
    # one relevant among 4, k=2: rank 1 or 2 with probability 1/4 each -> MRR (1 + 1/2) / 4
    assert ranking_chance("mrr", 2, 4, [1]) == pytest.approx(0.375)
    assert ranking_chance("hit_rate", 2, 4, [1]) == pytest.approx(0.5)
    assert ranking_chance("recall", 2, 4, [1]) == pytest.approx(0.5)
    assert ranking_chance("ndcg", 2, 4, [1]) is None  # no closed form here: not flagged


def test_ranking_chance_matches_simulation():
    rng = random.Random(0)
    n, r, k, trials = 30, 3, 5, 20000
    mrr = hit = 0.0
    for _ in range(trials):
        first = min(rng.sample(range(1, n + 1), r))
        mrr += 1 / first if first <= k else 0
        hit += first <= k
    assert ranking_chance("mrr", k, n, [r]) == pytest.approx(mrr / trials, abs=0.01)
    assert ranking_chance("hit_rate", k, n, [r]) == pytest.approx(hit / trials, abs=0.01)


def test_majority_share_and_flag():
    assert majority_share(["a", "a", "b", "c"]) == 0.5
    assert at_or_below_chance(0.5, 0.5) and not at_or_below_chance(0.51, 0.5)
    assert at_or_below_chance(3.0, 2.0, higher_is_better=False)
    assert not at_or_below_chance(None, 0.5)


def _args():
    return types.SimpleNamespace(learning_rate=1e6, fp16=False, bf16=False)


def test_guard_stops_on_nonfinite_gradients():
    model = torch.nn.Linear(3, 2)
    model(torch.ones(1, 3)).sum().backward()
    assert not nonfinite_gradients(model)
    model.weight.grad[0, 0] = float("nan")
    state = types.SimpleNamespace(global_step=4, max_steps=10, epoch=0.4)
    with pytest.raises(Diverged, match="step 5 of 10.*Lower the learning rate \\(now 1e\\+06\\)"):
        DivergenceGuard().on_pre_optimizer_step(_args(), state, None, model=model)


def test_guard_stops_on_nonfinite_weights_at_the_end():
    model = torch.nn.Linear(3, 2)
    DivergenceGuard().on_train_end(_args(), None, None, model=model)  # finite: nothing happens
    with torch.no_grad():
        model.weight[1, :] = float("inf")
    assert nonfinite_weights(model) == (3, 8)
    with pytest.raises(Diverged, match="3 of 8 weights"):
        DivergenceGuard().on_train_end(_args(), None, None, model=model)
