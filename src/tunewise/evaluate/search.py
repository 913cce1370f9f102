"""Exact top-k search of query embeddings against corpus embeddings.

The default backend is a chunked matrix product in torch: queries and corpus are cut into
blocks of ``chunk_size`` rows, so memory stays at ``chunk_size**2`` scores whatever the
sizes, and each block's best ``k`` are merged into a running top-k. The result is exact,
and ties (equal scores as computed) go to the lower corpus index, so a corpus holding the
same answer twice always ranks its first copy first.

faiss (``IndexFlatIP``, also exact) is optional: ``backend="faiss"`` requires it and
``backend="auto"`` uses it only when it is installed and the corpus has more than
:data:`FAISS_AUTO_MIN_CORPUS` rows. Scores from the two backends agree to float32
rounding; on exact ties faiss's own choice of which documents enter the top-k is kept.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tunewise.errors import TunewiseError, did_you_mean

# Names as in the eval.backend config option.
BACKENDS = ("auto", "exact", "faiss")
# Below this corpus size the torch product is as fast as faiss and needs no extra package.
FAISS_AUTO_MIN_CORPUS = 100_000


@functools.cache
def is_faiss_available() -> bool:
    """Whether ``import faiss`` would find a module (cached; nothing is imported)."""
    return importlib.util.find_spec("faiss") is not None


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise TunewiseError(
            'eval.backend: faiss is not installed; run pip install "tunewise[faiss]" '
            "or set eval.backend to exact"
        ) from None
    return faiss


def top_k(
    query_emb: Tensor,
    corpus_emb: Tensor,
    k: int,
    *,
    normalize: bool = True,
    chunk_size: int = 1024,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Best ``k`` corpus rows for every query, by cosine similarity or inner product.

    Args:
        query_emb: query embeddings, shape ``(nq, d)``.
        corpus_emb: corpus embeddings, shape ``(nc, d)``.
        k: how many results per query; capped at ``nc``.
        normalize: L2-normalize both sides first (cosine similarity); else raw inner
            product. Zero vectors normalize to zero and score 0.
        chunk_size: rows of queries and of corpus scored at once by the exact backend.
        backend: ``"exact"`` (torch), ``"faiss"`` or ``"auto"`` (faiss only when installed
            and ``nc > FAISS_AUTO_MIN_CORPUS``).

    Returns:
        ``(scores, indices)``, each ``(nq, min(k, nc))``, best first, on the corpus's
        device. Scores are float32 (float64 from the exact backend for float64 inputs),
        indices int64. Equal scores are ordered by lower corpus index.

    Raises:
        TunewiseError: if ``k <= 0``, the backend is unknown, or faiss is requested but not
            installed.
        ValueError: if the embeddings are not 2-D with the same width, or
            ``chunk_size < 1``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise TunewiseError(f"eval.k: k must be a positive integer, got {k}")
    if backend not in BACKENDS:
        raise TunewiseError(
            f"eval.backend: unknown '{backend}'{did_you_mean(backend, BACKENDS)}; "
            f"use {', '.join(BACKENDS)}"
        )
    if query_emb.ndim != 2 or corpus_emb.ndim != 2 or query_emb.shape[1] != corpus_emb.shape[1]:
        raise ValueError(
            "top_k expects query_emb (nq, d) and corpus_emb (nc, d) with the same d, got "
            f"{tuple(query_emb.shape)} and {tuple(corpus_emb.shape)}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    n_corpus = corpus_emb.shape[0]
    use_faiss = backend == "faiss" or (
        backend == "auto" and n_corpus > FAISS_AUTO_MIN_CORPUS and is_faiss_available()
    )
    faiss = _import_faiss() if use_faiss else None
    k = min(k, n_corpus)
    dtype = _compute_dtype(query_emb, corpus_emb)
    if k == 0 or query_emb.shape[0] == 0:
        empty = torch.empty((query_emb.shape[0], k), device=corpus_emb.device)
        return empty.to(dtype), empty.to(torch.int64)
    if faiss is not None:
        return _faiss_top_k(faiss, query_emb, corpus_emb, k, normalize)
    return _exact_top_k(query_emb, corpus_emb, k, normalize, chunk_size, dtype)


def _compute_dtype(query_emb: Tensor, corpus_emb: Tensor) -> torch.dtype:
    dtype = torch.promote_types(query_emb.dtype, corpus_emb.dtype)
    # Half precision would round close scores together and invent ties.
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.no_grad()
def _exact_top_k(
    query_emb: Tensor,
    corpus_emb: Tensor,
    k: int,
    normalize: bool,
    chunk_size: int,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    device = corpus_emb.device
    out_scores, out_indices = [], []
    for q_start in range(0, query_emb.shape[0], chunk_size):
        queries = query_emb[q_start : q_start + chunk_size].to(device=device, dtype=dtype)
        if normalize:
            queries = F.normalize(queries, dim=-1)  # (bq, d)
        best_scores = best_indices = None
        for c_start in range(0, corpus_emb.shape[0], chunk_size):
            docs = corpus_emb[c_start : c_start + chunk_size].to(dtype=dtype)
            if normalize:
                docs = F.normalize(docs, dim=-1)  # (bc, d)
            scores, indices = _block_top_k(queries @ docs.T, k)  # (bq, <=k)
            indices = indices + c_start
            if best_scores is not None:
                scores, indices = _order(
                    torch.cat([best_scores, scores], dim=1),
                    torch.cat([best_indices, indices], dim=1),
                )
                scores, indices = scores[:, :k], indices[:, :k]
            best_scores, best_indices = scores, indices
        out_scores.append(best_scores)
        out_indices.append(best_indices)
    return torch.cat(out_scores), torch.cat(out_indices)


def _block_top_k(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top ``k`` columns per row of ``scores`` (bq, bc), ties to the lower column."""
    k = min(k, scores.shape[1])
    values, positions = torch.topk(scores, k, dim=1)
    if k < scores.shape[1]:
        # torch.topk picks arbitrarily among values equal to the k-th; when such a tie
        # crosses the cut-off, fall back to a stable sort, which keeps column order.
        kth = values[:, -1:]
        crossing = (scores == kth).sum(dim=1) != (values == kth).sum(dim=1)
        if bool(crossing.any()):
            values, positions = torch.sort(scores, dim=1, descending=True, stable=True)
            return values[:, :k], positions[:, :k]
    return _order(values, positions)


def _order(scores: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row by score descending, then by index ascending."""
    indices, perm = torch.sort(indices, dim=1)
    scores = scores.gather(1, perm)
    scores, perm = torch.sort(scores, dim=1, descending=True, stable=True)
    return scores, indices.gather(1, perm)


def _faiss_top_k(
    faiss: Any, query_emb: Tensor, corpus_emb: Tensor, k: int, normalize: bool
) -> tuple[Tensor, Tensor]:
    def as_numpy(x: Tensor) -> Any:
        x = x.detach().to(device="cpu", dtype=torch.float32)  # faiss works in float32
        if normalize:
            x = F.normalize(x, dim=-1)
        return x.contiguous().numpy()

    index = faiss.IndexFlatIP(corpus_emb.shape[1])
    index.add(as_numpy(corpus_emb))
    scores, indices = index.search(as_numpy(query_emb), k)  # (nq, k) each
    scores, indices = _order(torch.from_numpy(scores), torch.from_numpy(indices).long())
    return scores.to(corpus_emb.device), indices.to(corpus_emb.device)
