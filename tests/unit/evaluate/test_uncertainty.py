"""Paired bootstrap intervals and the paired permutation test, checked against what is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tunewise.evaluate.classification import classification_metrics
from tunewise.evaluate.metrics import retrieval_metrics, retrieval_metrics_per_query
from tunewise.evaluate.uncertainty import (
    classification_statistic,
    describe,
    gain_intervals,
    metric_intervals,
    p_value_line,
    paired_interval,
)


def test_interval_of_a_known_paired_sample_contains_the_true_difference():
    rng = np.random.default_rng(0)
    before = rng.normal(0.5, 0.2, 400)
    after = before + 0.1 + rng.normal(0, 0.1, 400)  # true mean gain 0.1, per-item noise sd 0.1
    out = paired_interval(before, after, resamples=2000, seed=1)
    assert out["n"] == 400 and out["confidence"] == 0.95
    assert out["abs_low"] < 0.1 < out["abs_high"]
    # Normal theory for a mean of paired differences: half-width 1.96 * sd / sqrt(n) ~ 0.0098.
    half = 1.96 * np.std(after - before, ddof=1) / math.sqrt(400)
    assert (out["abs_high"] - out["abs_low"]) / 2 == pytest.approx(half, rel=0.15)
    # Relative gain: ratio of means, from the same resamples; its point value sits inside.
    assert out["relative"] == pytest.approx(after.mean() / before.mean() - 1)
    assert out["rel_low"] < out["relative"] < out["rel_high"]
    assert out["rel_low"] == pytest.approx(out["abs_low"] / before.mean(), rel=0.1)
    assert out["p_value"] < 0.001


def test_zero_difference_gives_p_near_one_and_an_interval_around_zero():
    rng = np.random.default_rng(2)
    before = rng.random(200)
    d = rng.random(100) * 0.3
    after = before + np.concatenate([d, -d])  # differences symmetric about 0: mean gain exactly 0
    out = paired_interval(before, after, seed=0)
    assert out["difference"] == pytest.approx(0, abs=1e-12)
    assert out["abs_low"] < 0 < out["abs_high"]
    assert out["rel_low"] < 0 < out["rel_high"]
    assert out["p_value"] > 0.95


def test_identical_scores_are_exactly_zero_with_p_one():
    items = [1.0, 0.0, 0.5, 0.25]
    out = paired_interval(items, items)
    assert (out["abs_low"], out["abs_high"], out["rel_low"], out["rel_high"], out["p_value"]) == (0, 0, 0, 0, 1)


def test_large_consistent_gain_gives_a_small_p_value():
    before = [0.0] * 30 + [1.0] * 10
    after = [1.0] * 40  # 30 items gained, none lost
    out = paired_interval(before, after, resamples=1000, seed=3)
    assert out["p_value"] < 0.01
    assert out["abs_low"] > 0 and out["rel_low"] > 0
    assert out["difference"] == pytest.approx(0.75) and out["relative"] == pytest.approx(3.0)


def test_exact_permutation_test_on_few_items():
    # 5 items, all gained by 1: of the 2**5 sign flips only "all +" and "all -" reach |mean| = 1.
    out = paired_interval([0] * 5, [1] * 5, resamples=1000)
    assert out["p_value"] == pytest.approx(2 / 32)
    assert out["relative"] is None and out["rel_low"] is None  # no ratio from a pre-trained score of 0


def test_seeded_and_reproducible():
    rng = np.random.default_rng(4)
    b, a = rng.random(100), rng.random(100)
    assert paired_interval(b, a, seed=7) == paired_interval(b, a, seed=7)
    assert paired_interval(b, a, seed=7)["abs_low"] != paired_interval(b, a, seed=8)["abs_low"]


def test_too_few_items_and_bad_arguments():
    assert paired_interval([1.0], [0.0])["abs_low"] is None and paired_interval([1.0], [0.0])["difference"] == -1
    with pytest.raises(ValueError, match="same length"):
        paired_interval([1, 2], [1])
    with pytest.raises(ValueError, match="confidence"):
        paired_interval([1, 2], [1, 2], confidence=1.0)


def test_many_metrics_at_once_equal_one_at_a_time():
    rng = np.random.default_rng(5)
    before = {f"m{i}": rng.random(103).tolist() for i in range(4)}
    after = {k: (np.array(v) + rng.normal(0.05, 0.2, 103)).tolist() for k, v in before.items()}
    after["m2"] = before["m2"]
    together = metric_intervals(before, after, resamples=500, seed=11)
    assert list(together) == list(before)
    for name in before:
        alone = paired_interval(before[name], after[name], resamples=500, seed=11)
        for key, value in alone.items():
            assert together[name][key] == pytest.approx(value, abs=1e-12), (name, key)


@pytest.mark.parametrize("n_classes", [2, 3, 7])
def test_classification_statistic_recomputes_scikit_learn_metrics(n_classes):
    rng = np.random.default_rng(n_classes)
    y_true = rng.integers(0, n_classes, 80)
    y_pred = np.where(rng.random(80) < 0.6, y_true, rng.integers(0, n_classes, 80))
    y_pred[y_pred == n_classes - 1] = 0  # a class never predicted: zero_division conventions matter
    codes = y_true * n_classes + y_pred
    for name, value in classification_metrics(y_true.tolist(), y_pred.tolist(), n_classes).items():
        stacked = classification_statistic(name, n_classes)(np.stack([codes, codes]), axis=-1)  # vectorised
        assert stacked == pytest.approx([value, value]), name


def test_gain_intervals_resample_codes_for_macro_metrics():
    from tunewise.tasks.classifier_shared import score

    y_true = [0, 1, 2] * 20
    before = score(y_true, [0] * 60, ["a", "b", "c"], ["x"] * 60, 0.0, 0)
    after = score(y_true, [t if i % 4 else 0 for i, t in enumerate(y_true)], ["a", "b", "c"], ["x"] * 60, 0.0, 0)
    out = gain_intervals(before, after, resamples=500)
    assert set(out) == set(before.metrics)
    for name, interval in out.items():
        assert interval["difference"] == pytest.approx(after.metrics[name] - before.metrics[name]), name
        assert interval["abs_low"] <= interval["difference"] <= interval["abs_high"]
        assert interval["p_value"] < 0.01
    assert gain_intervals(object(), after) == {}  # a result without items has nothing to resample


def test_retrieval_items_average_to_the_metrics():
    run = {"q1": ["a", "b", "c"], "q2": ["c", "a"], "q3": ["x"], "q4": ["z"]}
    qrels = {"q1": {"b": 1}, "q2": {"a": 2, "c": 1}, "q3": {"y": 1}, "q4": {"z": 0}}  # q4: nothing relevant
    per_query = retrieval_metrics_per_query(run, qrels, ks=(1, 2))
    assert per_query["mrr@2"] == [0.5, 1.0, 0.0]  # q1: b at rank 2; q2: c at 1; q3: none; q4 skipped
    assert per_query["recall@1"] == [0.0, 0.5, 0.0]
    for name, value in retrieval_metrics(run, qrels, ks=(1, 2)).items():
        assert value == pytest.approx(sum(per_query[name]) / 3, abs=1e-15), name


def test_rendering_of_an_interval():
    interval = {"confidence": 0.95, "rel_low": 0.58, "rel_high": 1.031, "p_value": 0.0004, "difference": 0.1,
                "abs_low": 0.05, "abs_high": 0.15, "n": 103}
    assert describe(0.799, interval) == "+79.9% (95% CI +58% to +103%)"
    assert describe(0.799, None) == "+79.9%" and describe(None, interval) == "n/a (95% CI +58% to +103%)"
    assert p_value_line("mrr@20", interval) == (
        "mrr@20: gain +0.1000 (95% CI +0.0500 to +0.1500) over 103 paired items; paired permutation test p < 0.001")


def test_lower_is_better_interval_is_of_the_improvement():
    """A fall in a lower-is-better metric (WER, a loss) is a positive gain with the bounds swapped."""
    from tunewise.evaluate.uncertainty import metric_intervals, p_value_line

    rng = np.random.default_rng(3)
    before = rng.uniform(0.3, 0.6, 80)
    after = before - rng.uniform(0.05, 0.15, 80)  # every item's error falls
    raw = metric_intervals({"wer": before}, {"wer": after}, resamples=500)["wer"]
    up = metric_intervals({"wer": before}, {"wer": after}, resamples=500, directions={"wer": False})["wer"]
    assert raw["difference"] < 0 < up["difference"] and up["difference"] == pytest.approx(-raw["difference"])
    assert up["abs_low"] == pytest.approx(-raw["abs_high"]) and up["abs_high"] == pytest.approx(-raw["abs_low"])
    assert 0 < up["abs_low"] <= up["difference"] <= up["abs_high"]
    assert up["relative"] == pytest.approx(1 - after.mean() / before.mean())
    assert 0 < up["rel_low"] <= up["relative"] <= up["rel_high"]
    assert up["p_value"] == raw["p_value"]
    assert "reduction" in p_value_line("wer", up)

