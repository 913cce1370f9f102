"""Retrieval evaluation: encode the corpus once, exact top-k search, IR metrics at k.

The same code scores the pre-trained and the fine-tuned model, so "before" and "after"
differ only in the weights. It is also wrapped as a sentence-transformers evaluator so the
Trainer can call it during training (early stopping, the budget planner's time curve).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from tunewise.config import EvalConfig
from tunewise.data.retrieval import IRDataset
from tunewise.errors import TunewiseError
from tunewise.evaluate.metrics import METRICS, mean_per_metric, parse_metric_name, retrieval_metrics_per_query
from tunewise.evaluate.search import top_k


@dataclass
class EvalResult:
    """Metrics of one model state on one evaluation set."""

    metrics: dict[str, float]
    seconds: float
    examples: list[dict[str, Any]] = field(default_factory=list)
    rankings: dict[str, list[str]] = field(default_factory=dict, repr=False)
    # metric -> its value on every judged query (qrels order, the same for every model): what
    # ``metrics`` averages, kept for the paired intervals of :mod:`tunewise.evaluate.uncertainty`
    items: dict[str, list[float]] = field(default_factory=dict, repr=False)


def canonical(name: str) -> str:
    """``"NDCG@10"`` -> ``"ndcg@10"``; unknown names raise TunewiseError."""
    metric, k = parse_metric_name(name)
    return f"{metric}@{k}"


def metric_names(cfg: EvalConfig) -> list[str]:
    """Every metric at every k, then nDCG@10 and the primary metric if not among them."""
    names = [f"{m}@{k}" for m in METRICS for k in sorted(set(cfg.k))]
    for extra in ("ndcg@10", canonical(cfg.primary)):
        if extra not in names:
            names.append(extra)
    return names


def evaluate_retrieval(model, data: IRDataset, cfg: EvalConfig, *, show_progress: bool = True) -> EvalResult:
    """Score ``model`` on ``data``: every query against the whole corpus.

    Args:
        model: a SentenceTransformer (anything with ``encode``).
        data: queries, corpus and qrels.
        cfg: cut-offs, encoding batch size, examples to keep, search backend.

    Returns:
        Metrics averaged over the judged queries, seconds spent, and example rankings.
    """
    names = metric_names(cfg)
    depth = max(parse_metric_name(n)[1] for n in names)
    start = time.perf_counter()
    q_ids, d_ids = list(data.queries), list(data.corpus)
    if not d_ids or not q_ids:
        raise TunewiseError("evaluation set: no judged query with a relevant document in the corpus; check the eval data")
    with torch.inference_mode():
        # (n_corpus, dim) and (n_queries, dim), L2-normalised: cosine = dot product
        d_emb = model.encode([data.corpus[d] for d in d_ids], batch_size=cfg.batch_size, convert_to_tensor=True,
                             normalize_embeddings=True, show_progress_bar=show_progress)
        q_emb = model.encode([data.queries[q] for q in q_ids], batch_size=cfg.batch_size, convert_to_tensor=True,
                             normalize_embeddings=True, show_progress_bar=False)
    q_emb, d_emb = q_emb.float(), d_emb.float()  # out of bf16/fp16 autocast: similarities in fp32
    scores, idx = top_k(q_emb, d_emb, min(depth, len(d_ids)), normalize=False, backend=cfg.backend)
    scores, idx = scores.cpu().tolist(), idx.cpu().tolist()
    run = {q: [d_ids[i] for i in row] for q, row in zip(q_ids, idx)}
    per_query = retrieval_metrics_per_query(run, data.qrels, ks=sorted({parse_metric_name(n)[1] for n in names}))
    all_metrics = mean_per_metric(per_query)
    metrics = {n: float(all_metrics[n]) for n in names}
    seconds = time.perf_counter() - start
    examples = []
    for q, row_scores in list(zip(q_ids, scores))[: cfg.examples]:
        examples.append({
            "query": data.queries[q],
            "relevant": [data.corpus[d] for d in data.qrels[q]][:3],
            "top": [{"text": data.corpus[d], "score": round(s, 4), "relevant": d in data.qrels[q]}
                    for d, s in zip(run[q][:3], row_scores[:3])],
        })
    return EvalResult(metrics, seconds, examples, run, {n: per_query[n] for n in names})


def make_trainer_evaluator(data: IRDataset, cfg: EvalConfig, name: str = "val"):
    """A sentence-transformers evaluator running :func:`evaluate_retrieval` during training."""
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

    class TunewiseRetrievalEvaluator(SentenceEvaluator):
        def __init__(self) -> None:
            super().__init__()
            self.name = name
            self.primary_metric = cfg.primary
            self.history: list[dict[str, float]] = []

        def __call__(self, model, output_path=None, epoch: float = -1, steps: int = -1) -> dict[str, float]:
            result = evaluate_retrieval(model, data, cfg, show_progress=False)
            self.history.append({"epoch": epoch, "steps": steps, "eval_seconds": result.seconds, **result.metrics})
            return self.prefix_name_to_metrics(result.metrics, self.name)

    return TunewiseRetrievalEvaluator()
