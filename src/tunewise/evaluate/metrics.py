"""Retrieval metrics over ranked document ids and graded relevance judgments.

Pure functions, no torch: a ranking is a sequence of document ids, best first; judgments
(qrels) map a document id to an integer grade. A document is relevant when its grade is
> 0; unjudged documents have grade 0. Every metric is cut at a rank ``k`` and follows
trec_eval (through pytrec_eval) exactly, which ranx 0.3 also matches for these metrics:

* ``precision@k`` divides by ``k`` even when fewer than ``k`` documents were returned
  (trec_eval ``P_k``), not by the number returned.
* ``map@k`` divides by the number of relevant documents ``R`` of the query, not by
  ``min(R, k)`` (trec_eval ``map_cut_k``; sentence-transformers uses ``min(R, k)``).
* ``ndcg@k`` uses the grade itself as gain and ``log2(rank + 1)`` as discount
  (trec_eval ``ndcg_cut_k`` since 9.0.x and ranx ``ndcg``; not the ``2**rel - 1`` gain of
  Burges et al., which ranx calls ``ndcg_burges``). The ideal ranking sorts all judged
  relevant documents of the query by grade, whether retrieved or not.
* ``mrr@k`` is the reciprocal rank of the first relevant document within the top ``k``
  (trec_eval ``recip_rank`` on the run truncated to ``k``).
* ``hit_rate@k`` is 1 when any of the top ``k`` is relevant (trec_eval ``success_k``).

Averaging (:func:`retrieval_metrics`) is over the queries of the qrels that have at least
one relevant document. A query with no run entry scores 0 (trec_eval ``-c``). Queries
whose judgments are all non-relevant are skipped: trec_eval, pytrec_eval and ranx would
score them 0 and count them in the mean, which only scales every system's score down.
A document id repeated within the top ``k`` of one ranking is an error, as in trec_eval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence

from tunewise.errors import TunewiseError, did_you_mean

METRICS = ("mrr", "recall", "precision", "map", "ndcg", "hit_rate")

# Judgments: graded ({doc_id: grade}) or a plain collection of relevant ids (grade 1 each).
Relevance = Mapping[str, float] | Collection[str]


def parse_metric_name(name: str) -> tuple[str, int]:
    """Split a metric name such as ``"mrr@20"`` into ``("mrr", 20)``.

    Args:
        name: ``"<metric>@<k>"`` with metric one of :data:`METRICS` (case-insensitive).

    Returns:
        The metric and its cutoff.

    Raises:
        TunewiseError: for an unknown metric, a missing cutoff, or ``k <= 0``.
    """
    # Metric names reach users through eval.primary; the cutoffs through eval.k.
    metric, sep, k_text = str(name).strip().lower().partition("@")
    if metric not in METRICS:
        raise TunewiseError(
            f"eval.primary: unknown metric '{metric}'{did_you_mean(metric, METRICS)}; "
            f"choose from {', '.join(METRICS)}, written as name@k (e.g. 'ndcg@10')"
        )
    if not sep:
        raise TunewiseError(f"eval.primary: '{name}' needs a cutoff; write it as '{metric}@10'")
    try:
        k = int(k_text)
    except ValueError:
        raise TunewiseError(f"eval.k: k must be a positive integer, got '{k_text}'") from None
    return metric, _check_k(k)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise TunewiseError(f"eval.k: k must be a positive integer, got {k}")
    return k


def _grades(relevance: Relevance) -> dict[str, float]:
    """Relevant documents only (grade > 0); a collection of ids means grade 1 each."""
    if isinstance(relevance, str):
        raise TypeError("relevance must be a mapping {doc_id: grade} or a collection of ids")
    if isinstance(relevance, Mapping):
        return {d: g for d, g in relevance.items() if g > 0}
    return dict.fromkeys(relevance, 1)


def _gains(
    ranked: Sequence[str], grades: Mapping[str, float], k: int, where: str = "run"
) -> list[float]:
    """Grade of each of the top ``k`` documents (0 when not relevant)."""
    top = list(ranked[:k])
    seen: set[str] = set()
    for doc in top:
        if doc in seen:
            raise TunewiseError(
                f"{where}: document '{doc}' appears more than once in one query's ranking; "
                "each document may be ranked once per query (trec_eval rejects this too)"
            )
        seen.add(doc)
    return [grades.get(d, 0) for d in top]


# Formulas on the gain list of the top-k ("g"), with R = number of relevant documents.
def _rr(g: Sequence[float]) -> float:
    return next((1.0 / (i + 1) for i, x in enumerate(g) if x > 0), 0.0)


def _recall(g: Sequence[float], k: int, n_rel: int) -> float:
    return sum(1 for x in g[:k] if x > 0) / n_rel


def _precision(g: Sequence[float], k: int) -> float:
    return sum(1 for x in g[:k] if x > 0) / k


def _ap(g: Sequence[float], k: int, n_rel: int) -> float:
    hits, total = 0, 0.0
    for i, x in enumerate(g[:k]):
        if x > 0:
            hits += 1
            total += hits / (i + 1)
    return total / n_rel


def _dcg(g: Sequence[float], k: int) -> float:
    return sum(x / math.log2(i + 2) for i, x in enumerate(g[:k]) if x > 0)


def _ndcg(g: Sequence[float], k: int, ideal: Sequence[float]) -> float:
    idcg = _dcg(ideal, k)
    return _dcg(g, k) / idcg if idcg > 0 else 0.0


def _hit(g: Sequence[float], k: int) -> float:
    return 1.0 if any(x > 0 for x in g[:k]) else 0.0


def reciprocal_rank(ranked: Sequence[str], relevance: Relevance, k: int | None = None) -> float:
    r"""Reciprocal rank of the first relevant document within the top ``k``.

    .. math:: \mathrm{RR@k} = 1 / \min\{i \le k : d_i \text{ relevant}\}, \quad 0 \text{ if none}

    E.g. the first relevant document at rank 3 gives 1/3. MRR@k is its mean over queries.

    Args:
        ranked: document ids, best first.
        relevance: ``{doc_id: grade}`` (relevant when grade > 0) or a collection of ids.
        k: cutoff; ``None`` looks at the whole ranking (trec_eval ``recip_rank``).

    Returns:
        A value in [0, 1]; 0 when the query has no relevant document.

    Raises:
        TunewiseError: if ``k <= 0`` or a document repeats within the top ``k``.

    References:
        trec_eval ``recip_rank``; ranx ``mrr@k``.
    """
    k = len(ranked) if k is None else _check_k(k)
    return _rr(_gains(ranked, _grades(relevance), k))


def recall_at_k(ranked: Sequence[str], relevance: Relevance, k: int) -> float:
    r"""Share of the relevant documents found in the top ``k``.

    .. math:: \mathrm{Recall@k} = |\{d_1..d_k\} \cap \mathrm{Rel}| \,/\, |\mathrm{Rel}|

    Args:
        ranked: document ids, best first.
        relevance: ``{doc_id: grade}`` (relevant when grade > 0) or a collection of ids.
        k: cutoff.

    Returns:
        A value in [0, 1]; 0 when the query has no relevant document.

    Raises:
        TunewiseError: if ``k <= 0`` or a document repeats within the top ``k``.

    References:
        trec_eval ``recall_k``; ranx ``recall@k``.
    """
    grades = _grades(relevance)
    g = _gains(ranked, grades, _check_k(k))
    return _recall(g, k, len(grades)) if grades else 0.0


def precision_at_k(ranked: Sequence[str], relevance: Relevance, k: int) -> float:
    r"""Share of the top ``k`` that is relevant, always over ``k``.

    .. math:: \mathrm{P@k} = |\{d_1..d_k\} \cap \mathrm{Rel}| \,/\, k

    A ranking shorter than ``k`` is not rewarded for stopping early: 1 relevant document
    out of 2 returned gives P@5 = 1/5, not 1/2.

    Args:
        ranked: document ids, best first.
        relevance: ``{doc_id: grade}`` (relevant when grade > 0) or a collection of ids.
        k: cutoff.

    Returns:
        A value in [0, 1].

    Raises:
        TunewiseError: if ``k <= 0`` or a document repeats within the top ``k``.

    References:
        trec_eval ``P_k``; ranx ``precision@k``.
    """
    return _precision(_gains(ranked, _grades(relevance), _check_k(k)), k)


def average_precision_at_k(ranked: Sequence[str], relevance: Relevance, k: int) -> float:
    r"""Average precision cut at ``k``, over all relevant documents of the query.

    .. math::
        \mathrm{AP@k} = \frac{1}{|\mathrm{Rel}|}
        \sum_{i \le k,\; d_i \in \mathrm{Rel}} \mathrm{P@i}

    The denominator is the number of relevant documents ``R``, not ``min(R, k)``: with 3
    relevant documents, AP@1 is at most 1/3. MAP@k is its mean over queries.

    Args:
        ranked: document ids, best first.
        relevance: ``{doc_id: grade}`` (relevant when grade > 0) or a collection of ids.
        k: cutoff.

    Returns:
        A value in [0, 1]; 0 when the query has no relevant document.

    Raises:
        TunewiseError: if ``k <= 0`` or a document repeats within the top ``k``.

    References:
        trec_eval ``map_cut_k``; ranx ``map@k``.
    """
    grades = _grades(relevance)
    g = _gains(ranked, grades, _check_k(k))
    return _ap(g, k, len(grades)) if grades else 0.0


def ndcg_at_k(ranked: Sequence[str], relevance: Relevance, k: int) -> float:
    r"""Normalized discounted cumulative gain at ``k`` with graded gains.

    .. math::
        \mathrm{DCG@k} = \sum_{i=1}^{k} \frac{\mathrm{rel}(d_i)}{\log_2(i + 1)}, \qquad
        \mathrm{nDCG@k} = \mathrm{DCG@k} \,/\, \mathrm{IDCG@k}

    where IDCG@k is the DCG@k of the judged relevant documents sorted by grade,
    descending. The gain is the grade itself (Järvelin & Kekäläinen), not ``2**rel - 1``.

    Args:
        ranked: document ids, best first.
        relevance: ``{doc_id: grade}`` (relevant when grade > 0) or a collection of ids.
        k: cutoff.

    Returns:
        A value in [0, 1]; 0 when the query has no relevant document.

    Raises:
        TunewiseError: if ``k <= 0`` or a document repeats within the top ``k``.

    References:
        Järvelin & Kekäläinen, "Cumulated gain-based evaluation of IR techniques",
        ACM TOIS 20(4), 2002; trec_eval ``ndcg_cut_k``; ranx ``ndcg@k``.
    """
    grades = _grades(relevance)
    g = _gains(ranked, grades, _check_k(k))
    return _ndcg(g, k, sorted(grades.values(), reverse=True))


def hit_rate_at_k(ranked: Sequence[str], relevance: Relevance, k: int) -> float:
    r"""1 when at least one of the top ``k`` is relevant, else 0.

    .. math:: \mathrm{Hit@k} = \mathbb{1}[\{d_1..d_k\} \cap \mathrm{Rel} \neq \emptyset]

    Args:
        ranked: document ids, best first.
        relevance: ``{doc_id: grade}`` (relevant when grade > 0) or a collection of ids.
        k: cutoff.

    Returns:
        0.0 or 1.0.

    Raises:
        TunewiseError: if ``k <= 0`` or a document repeats within the top ``k``.

    References:
        trec_eval ``success_k``; ranx ``hit_rate@k``.
    """
    return _hit(_gains(ranked, _grades(relevance), _check_k(k)), k)


# metric -> value from (gains of the top max-k, k, number of relevant docs, ideal gains).
_FORMULAS: dict[str, Callable[[list[float], int, int, list[float]], float]] = {
    "mrr": lambda g, k, n_rel, ideal: _rr(g[:k]),
    "recall": lambda g, k, n_rel, ideal: _recall(g, k, n_rel),
    "precision": lambda g, k, n_rel, ideal: _precision(g, k),
    "map": lambda g, k, n_rel, ideal: _ap(g, k, n_rel),
    "ndcg": lambda g, k, n_rel, ideal: _ndcg(g, k, ideal),
    "hit_rate": lambda g, k, n_rel, ideal: _hit(g, k),
}


def _metric_keys(ks: Sequence[int], names: Sequence[str], extra: Sequence[str]) -> list[str]:
    keys: list[str] = []
    for k in ks:
        _check_k(k)
    for name in names:
        for k in ks:
            keys.append(f"{name}@{k}")
    keys.extend(extra)
    out: list[str] = []
    for key in keys:
        metric, k = parse_metric_name(key)
        canonical = f"{metric}@{k}"
        if canonical not in out:
            out.append(canonical)
    return out


def retrieval_metrics(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    ks: Sequence[int] = (1, 5, 10, 20),
    names: Sequence[str] = METRICS,
    extra: Sequence[str] = ("ndcg@10",),
) -> dict[str, float]:
    """Mean of each metric at each cutoff over the judged queries.

    See the module docstring for the conventions; each metric is defined in its
    single-query function (:func:`reciprocal_rank`, :func:`recall_at_k`, ...).

    Args:
        run: query id -> ranked document ids, best first. Queries not in ``qrels`` are
            ignored; documents beyond the largest cutoff are never looked at.
        qrels: query id -> {document id: grade}; grade > 0 means relevant.
        ks: cutoffs applied to every metric in ``names``.
        names: metrics from :data:`METRICS`.
        extra: further ``"name@k"`` entries, e.g. ``("ndcg@10",)``.

    Returns:
        ``{"mrr@1": ..., "recall@1": ..., "ndcg@10": ...}``: names in the order given,
        each over ``ks`` in order, then the extras not already present.

    Raises:
        TunewiseError: for an unknown metric, ``k <= 0``, qrels without any relevant
            document, or a document repeated in one query's ranking.
    """
    return mean_per_metric(retrieval_metrics_per_query(run, qrels, ks, names, extra))


def mean_per_metric(items: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Mean of each metric's per-query values (summed in query order, as trec_eval does)."""
    means = {}
    for key, values in items.items():
        total = 0.0
        for value in values:
            total += value
        means[key] = total / len(values)
    return means


def retrieval_metrics_per_query(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    ks: Sequence[int] = (1, 5, 10, 20),
    names: Sequence[str] = METRICS,
    extra: Sequence[str] = ("ndcg@10",),
) -> dict[str, list[float]]:
    """Each metric of each judged query, in the order of ``qrels`` (what :func:`retrieval_metrics` averages).

    Two runs scored against the same ``qrels`` list their queries in the same order, so the
    values are paired item by item (:mod:`tunewise.evaluate.uncertainty`). Queries without
    a relevant document are skipped, as in the mean.

    Args and Raises: as :func:`retrieval_metrics`.

    Returns:
        ``{"mrr@1": [q1, q2, ...], ...}``, keys in the order of :func:`retrieval_metrics`.
    """
    keys = _metric_keys(ks, names, extra)
    if not keys:
        raise TunewiseError("eval.k: give at least one cut-off, e.g. [1, 10, 20]")
    parsed = [parse_metric_name(key) for key in keys]
    max_k = max(k for _, k in parsed)
    values: dict[str, list[float]] = {key: [] for key in keys}
    for qid, judged in qrels.items():
        grades = _grades(judged)
        if not grades:
            continue  # no relevant document: nothing to find (see module docstring)
        g = _gains(run.get(qid, ()), grades, max_k, where=f"run['{qid}']")
        ideal = sorted(grades.values(), reverse=True)
        n_rel = len(grades)
        for key, (metric, k) in zip(keys, parsed):
            values[key].append(_FORMULAS[metric](g, k, n_rel, ideal))
    if not values[keys[0]]:
        raise TunewiseError(
            "qrels: no query has a relevant document (grade > 0), so retrieval metrics are "
            "undefined; check the relevance labels of the evaluation data"
        )
    return values
