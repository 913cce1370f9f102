"""What a model that knows nothing scores: the chance level a fine-tuned model must beat.

A diverged or collapsed run can still print a plausible-looking number; compared with the
chance level of the same evaluation set it is flagged. Pure functions, exact expectations:

* ranking (one query, ``r`` relevant documents among ``n``, a uniformly random order): the
  probability that the first relevant document sits at rank ``j`` is
  ``C(n - j, r - 1) / C(n, r)``; MRR@k, hit rate@k and recall@k follow from it (recall@k
  is ``min(k, n) / n`` in expectation: each relevant document is in the top k with that
  probability).
* classification: predicting the majority class of the evaluation set scores its share
  as accuracy (a constant predictor; a uniform random one scores 1/C, which is lower).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from math import comb


def _first_relevant_at(j: int, n: int, r: int) -> float:
    """P(the first of r relevant documents among n is at rank j) under a random order."""
    return comb(n - j, r - 1) / comb(n, r)


def ranking_chance(metric: str, k: int, n_docs: int, relevant: Sequence[int]) -> float | None:
    """Expected ``metric@k`` of a random ranking, averaged over queries with ``relevant[i]`` relevant documents.

    Returns:
        The expectation, or None for metrics without a closed form here (ndcg, map, precision).
    """
    if not relevant or n_docs < 1:
        return None
    values = []
    for r in relevant:
        r = max(1, min(int(r), n_docs))
        top = min(k, n_docs)
        if metric == "mrr":
            values.append(sum(_first_relevant_at(j, n_docs, r) / j for j in range(1, top + 1)))
        elif metric == "hit_rate":
            values.append(1 - comb(n_docs - r, top) / comb(n_docs, top))
        elif metric == "recall":
            values.append(top / n_docs)
        else:
            return None
    return sum(values) / len(values)


def majority_share(labels: Sequence[int | str]) -> float | None:
    """Accuracy of always predicting the most frequent evaluation label."""
    if not labels:
        return None
    return Counter(labels).most_common(1)[0][1] / len(labels)


def at_or_below_chance(value: float | None, chance: float | None, higher_is_better: bool = True) -> bool:
    """Whether a score is no better than chance (a small tolerance for float noise)."""
    if value is None or chance is None:
        return False
    return value <= chance + 1e-9 if higher_is_better else value >= chance - 1e-9
