"""Retrieval metrics against ranx on random data, and hand-derived cases."""

from __future__ import annotations

import math
import random

import pytest

from tunewise.errors import TunewiseError
from tunewise.evaluate.metrics import (
    METRICS,
    average_precision_at_k,
    hit_rate_at_k,
    ndcg_at_k,
    parse_metric_name,
    precision_at_k,
    recall_at_k,
    reciprocal_rank,
    retrieval_metrics,
)

# ranx's numba kernels warn about an internal integer cast; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:unsafe cast:Warning")

KS = (1, 2, 3, 5, 10, 20)
PER_QUERY = {
    "mrr": reciprocal_rank,
    "recall": recall_at_k,
    "precision": precision_at_k,
    "map": average_precision_at_k,
    "ndcg": ndcg_at_k,
    "hit_rate": hit_rate_at_k,
}


def random_data(seed: int = 0, n_queries: int = 80, n_docs: int = 40):
    """Graded qrels (0-3, several relevant per query) and runs of 0-15 docs (< max k)."""
    rng = random.Random(seed)
    docs = [f"d{i:03d}" for i in range(n_docs)]
    qrels, run = {}, {}
    for q in range(n_queries):
        qid = f"q{q:03d}"
        judged = rng.sample(docs, rng.randint(1, 8))
        qrels[qid] = {d: rng.choice((0, 1, 1, 2, 3)) for d in judged}
        if rng.random() < 0.1:
            continue  # judged query with no run entry
        # Mix judged documents into the ranking so that there are hits at many ranks.
        pool = judged + rng.sample(docs, 10)
        rng.shuffle(pool)
        run[qid] = list(dict.fromkeys(pool))[: rng.randint(0, 15)]
    # A query that only the run knows about: ignored.
    run["unjudged"] = docs[:5]
    return run, qrels


@pytest.fixture(scope="module")
def ranx_scores():
    """ranx's mean and per-query scores for random_data(), every metric at every k."""
    ranx = pytest.importorskip("ranx")
    run, qrels = random_data()
    # ranx counts a query with no relevant document as 0 in the mean, as trec_eval and
    # pytrec_eval do; tunewise skips such queries, so they are left out of ranx's input.
    judged = {q: rel for q, rel in qrels.items() if any(g > 0 for g in rel.values())}
    # Ranked lists become descending scores; ranx re-sorts by score, so no ties allowed.
    scored = {
        q: {d: float(len(ranked) - i) for i, d in enumerate(ranked)}
        for q, ranked in run.items()
        if ranked and q in judged
    }
    ranx_run = ranx.Run(scored)
    metrics = [f"{m}@{k}" for m in METRICS for k in KS]
    means = ranx.evaluate(
        ranx.Qrels(judged), ranx_run, metrics, threads=1, make_comparable=True
    )
    per_query = {m: dict(ranx_run.scores[m]) for m in metrics}
    return run, qrels, judged, means, per_query


def test_random_data_covers_the_edge_cases():
    run, qrels = random_data()
    assert any(q not in run for q in qrels)  # missing from the run
    assert any(not any(g > 0 for g in rel.values()) for rel in qrels.values())  # no relevant
    assert any(sum(g > 0 for g in rel.values()) >= 3 for rel in qrels.values())
    assert any(len(set(rel.values()) - {0}) >= 2 for rel in qrels.values())  # graded
    assert any(0 < len(r) < 5 for r in run.values())  # shorter than k


def test_retrieval_metrics_match_ranx(ranx_scores):
    run, qrels, _, means, _ = ranx_scores
    ours = retrieval_metrics(run, qrels, ks=KS)
    for metric, expected in means.items():
        assert ours[metric] == pytest.approx(expected, abs=1e-6), metric


def test_single_query_functions_match_ranx(ranx_scores):
    run, _, judged, _, per_query = ranx_scores
    for metric, scores in per_query.items():
        name, k = parse_metric_name(metric)
        for qid, expected in scores.items():
            got = PER_QUERY[name](run.get(qid, []), judged[qid], k)
            assert got == pytest.approx(expected, abs=1e-6), (metric, qid)


def test_retrieval_metrics_equal_mean_of_single_query_functions():
    run, qrels = random_data(seed=1)
    ours = retrieval_metrics(run, qrels, ks=(3, 7))
    judged = [q for q, rel in qrels.items() if any(g > 0 for g in rel.values())]
    for key, value in ours.items():
        name, k = parse_metric_name(key)
        values = [PER_QUERY[name](run.get(q, []), qrels[q], k) for q in judged]
        assert value == pytest.approx(sum(values) / len(values), abs=1e-12)


# Hand-derived cases. Ranking x y a z b against relevant {a, b, c} (R = 3).
RANKED = ["x", "y", "a", "z", "b"]
REL = {"a": 1, "b": 1, "c": 1, "x": 0}  # x judged non-relevant


def test_reciprocal_rank_by_hand():
    assert reciprocal_rank(RANKED, REL) == pytest.approx(1 / 3)  # first relevant at rank 3
    assert reciprocal_rank(RANKED, REL, k=3) == pytest.approx(1 / 3)  # rank 3 is inside k=3
    assert reciprocal_rank(RANKED, REL, k=2) == 0.0  # nothing relevant in the top 2
    assert reciprocal_rank([], REL) == 0.0  # empty ranking


def test_recall_by_hand():
    assert recall_at_k(RANKED, REL, 5) == pytest.approx(2 / 3)  # a and b of a, b, c
    assert recall_at_k(RANKED, REL, 3) == pytest.approx(1 / 3)  # only a
    assert recall_at_k(RANKED, REL, 100) == pytest.approx(2 / 3)  # c never retrieved
    assert recall_at_k(["b", "c"], {"b", "c", "d"}, 2) == pytest.approx(2 / 3)  # id set


def test_precision_by_hand():
    assert precision_at_k(RANKED, REL, 5) == pytest.approx(2 / 5)  # 2 relevant of 5
    assert precision_at_k(RANKED, REL, 3) == pytest.approx(1 / 3)  # a among x y a
    # Only 5 documents returned, still divided by k = 10 (trec_eval P_10).
    assert precision_at_k(RANKED, REL, 10) == pytest.approx(2 / 10)
    assert precision_at_k(["a"], REL, 1) == 1.0  # the single returned doc is relevant


def test_average_precision_by_hand():
    # Hits at rank 3 (P@3 = 1/3) and rank 5 (P@5 = 2/5), divided by R = 3.
    assert average_precision_at_k(RANKED, REL, 5) == pytest.approx((1 / 3 + 2 / 5) / 3)
    assert average_precision_at_k(RANKED, REL, 4) == pytest.approx((1 / 3) / 3)  # rank 3 only
    # Relevant at rank 1, but the denominator is R = 3, not min(R, k) = 1.
    assert average_precision_at_k(["a", "x"], REL, 1) == pytest.approx(1 / 3)
    # All three relevant at ranks 1-3: (1 + 1 + 1) / 3.
    assert average_precision_at_k(["a", "b", "c"], REL, 3) == 1.0


def test_ndcg_by_hand():
    graded = {"a": 3, "b": 2, "c": 1}
    # DCG@3 of b x a = 2/log2(2) + 0 + 3/log2(4) = 2 + 1.5 = 3.5.
    # IDCG@3 of a b c = 3/log2(2) + 2/log2(3) + 1/log2(4) = 3 + 1.2619 + 0.5.
    expected = 3.5 / (3 + 2 / math.log2(3) + 0.5)
    assert ndcg_at_k(["b", "x", "a"], graded, 3) == pytest.approx(expected)
    assert ndcg_at_k(["b", "x", "a"], graded, 1) == pytest.approx(2 / 3)  # gain 2 of ideal 3
    # The ideal counts relevant documents that were never retrieved:
    # DCG@2 = 1, IDCG@2 = 1 + 1/log2(3).
    assert ndcg_at_k(["a"], {"a": 1, "b": 1}, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(["a", "b", "c"], graded, 3) == pytest.approx(1.0)  # ideal order


def test_hit_rate_by_hand():
    assert hit_rate_at_k(RANKED, REL, 2) == 0.0  # x (judged 0) and y
    assert hit_rate_at_k(RANKED, REL, 3) == 1.0  # a at rank 3


def test_no_relevant_document_scores_zero_per_query():
    for name, fn in PER_QUERY.items():
        assert fn(["a", "b"], {"a": 0}, 2) == 0.0, name


def test_retrieval_metrics_by_hand():
    run = {"q1": ["a", "x"], "q2": ["x", "b"], "extra": ["a"]}
    qrels = {
        "q1": {"a": 1},  # relevant at rank 1 -> RR 1
        "q2": {"b": 2, "c": 1},  # relevant at rank 2 -> RR 1/2; b found, c not
        "q3": {"d": 1},  # not in the run -> 0 everywhere
        "q4": {"a": 0},  # no relevant document -> skipped
    }
    out = retrieval_metrics(run, qrels, ks=(1, 2), names=("mrr", "recall"), extra=("hit_rate@2",))
    assert list(out) == ["mrr@1", "mrr@2", "recall@1", "recall@2", "hit_rate@2"]
    assert out["mrr@1"] == pytest.approx((1 + 0 + 0) / 3)  # only q1 has a hit at rank 1
    assert out["mrr@2"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert out["recall@2"] == pytest.approx((1 + 1 / 2 + 0) / 3)  # q2 finds 1 of 2
    assert out["hit_rate@2"] == pytest.approx(2 / 3)  # q1 and q2


def test_queries_without_relevant_documents_are_skipped():
    run, qrels = random_data(seed=2)
    with_empty = dict(qrels, empty={"d001": 0, "d002": 0})
    assert retrieval_metrics(run, with_empty) == retrieval_metrics(run, qrels)


def test_default_keys():
    out = retrieval_metrics({"q": ["a"]}, {"q": {"a": 1}})
    expected = [f"{m}@{k}" for m in METRICS for k in (1, 5, 10, 20)]
    assert list(out) == expected  # ndcg@10 from `extra` is not repeated
    assert all(out[key] == 1.0 for key in out if not key.startswith("precision"))
    assert out["precision@5"] == pytest.approx(1 / 5)  # 1 relevant, divided by k


def test_documents_beyond_k_are_ignored():
    # A duplicate after the largest cut-off is never looked at.
    out = retrieval_metrics(
        {"q": ["a", "b", "b"]}, {"q": {"b": 1}}, ks=(2,), names=("mrr",), extra=()
    )
    assert out == {"mrr@2": 0.5}


def test_duplicate_document_in_ranking_is_an_error():
    with pytest.raises(TunewiseError, match=r"run\['q'\]: document 'b' appears more than once"):
        retrieval_metrics({"q": ["b", "a", "b"]}, {"q": {"b": 1}}, ks=(3,))
    with pytest.raises(TunewiseError, match="appears more than once"):
        recall_at_k(["b", "b"], {"b": 1}, 2)


def test_no_relevant_document_anywhere_is_an_error():
    with pytest.raises(TunewiseError, match="qrels: no query has a relevant document"):
        retrieval_metrics({"q": ["a"]}, {"q": {"a": 0}})


def test_parse_metric_name():
    assert parse_metric_name("mrr@20") == ("mrr", 20)
    assert parse_metric_name("nDCG@10") == ("ndcg", 10)
    assert parse_metric_name("hit_rate@1") == ("hit_rate", 1)


def test_parse_metric_name_errors():
    with pytest.raises(TunewiseError, match=r"unknown metric 'ndgc' \(did you mean 'ndcg'\?\)"):
        parse_metric_name("ndgc@10")
    with pytest.raises(TunewiseError) as err:
        parse_metric_name("mrr@0")
    assert str(err.value) == "eval.k: k must be a positive integer, got 0"
    with pytest.raises(TunewiseError, match="got -3"):
        parse_metric_name("map@-3")
    with pytest.raises(TunewiseError, match="got 'x'"):
        parse_metric_name("map@x")
    with pytest.raises(TunewiseError, match="needs a cutoff"):
        parse_metric_name("mrr")


def test_bad_k_and_names_in_retrieval_metrics():
    with pytest.raises(TunewiseError, match="eval.k: k must be a positive integer, got 0"):
        retrieval_metrics({}, {"q": {"a": 1}}, ks=(0, 5))
    with pytest.raises(TunewiseError, match="did you mean 'recall'"):
        retrieval_metrics({}, {"q": {"a": 1}}, names=("recal",))
    with pytest.raises(TunewiseError, match="eval.k: k must be a positive integer, got 0"):
        ndcg_at_k(["a"], {"a": 1}, 0)
