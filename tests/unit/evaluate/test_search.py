"""Exact top-k search against a numpy brute force; tie-breaking; the faiss switch."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from tunewise.errors import TunewiseError
from tunewise.evaluate import search
from tunewise.evaluate.search import top_k


def brute_force(queries: np.ndarray, corpus: np.ndarray, k: int, normalize: bool):
    if normalize:
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        corpus = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    scores = queries @ corpus.T  # (nq, nc)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # ties -> lower index
    return np.take_along_axis(scores, order, axis=1), order


@pytest.fixture(autouse=True)
def fresh_faiss_check():
    search.is_faiss_available.cache_clear()
    yield
    search.is_faiss_available.cache_clear()


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
def test_matches_brute_force(normalize, chunk_size):
    gen = torch.Generator().manual_seed(0)
    queries = torch.randn(9, 16, generator=gen, dtype=torch.float64)
    corpus = torch.randn(50, 16, generator=gen, dtype=torch.float64)
    scores, indices = top_k(queries, corpus, 6, normalize=normalize, chunk_size=chunk_size)
    want_scores, want_indices = brute_force(queries.numpy(), corpus.numpy(), 6, normalize)
    assert scores.shape == indices.shape == (9, 6)
    assert indices.dtype == torch.int64 and scores.dtype == torch.float64
    np.testing.assert_array_equal(indices.numpy(), want_indices)
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=0, atol=1e-12)


def test_float32_and_half_inputs_score_in_float32():
    gen = torch.Generator().manual_seed(1)
    queries = torch.randn(4, 8, generator=gen)
    corpus = torch.randn(30, 8, generator=gen)
    scores, indices = top_k(queries.half(), corpus, 5, chunk_size=8)
    assert scores.dtype == torch.float32
    want_scores, _ = brute_force(queries.half().double().numpy(), corpus.double().numpy(), 5, True)
    np.testing.assert_allclose(scores.numpy(), want_scores, atol=1e-5)


def test_ties_go_to_the_lower_corpus_index():
    e = torch.eye(3)
    # Copies of e0 at 0, 2, 4 and 5; e1 at 1 and 6; e2 at 3. Axis vectors: exact scores.
    corpus = torch.stack([e[0], e[1], e[0], e[2], e[0], e[0], e[1]])
    queries = torch.stack([e[0], e[1]])
    for chunk_size in (1, 2, 3, 1024):  # ties inside one block and across blocks
        scores, indices = top_k(queries, corpus, 3, chunk_size=chunk_size)
        # e0: four docs score 1, the first three by index enter the top 3.
        assert indices[0].tolist() == [0, 2, 4], chunk_size
        assert scores[0].tolist() == [1.0, 1.0, 1.0]
        # e1: docs 1 and 6 score 1, then five docs score 0, of which index 0 is first.
        assert indices[1].tolist() == [1, 6, 0], chunk_size
        assert scores[1].tolist() == [1.0, 1.0, 0.0]


def test_all_scores_equal_keeps_corpus_order():
    # A zero query normalizes to zero: every document scores 0.
    corpus = torch.randn(20, 4, generator=torch.Generator().manual_seed(2))
    for chunk_size in (3, 1024):
        scores, indices = top_k(torch.zeros(1, 4), corpus, 5, chunk_size=chunk_size)
        assert indices.tolist() == [[0, 1, 2, 3, 4]]
        assert scores.tolist() == [[0.0] * 5]


def test_k_larger_than_corpus_is_capped():
    corpus = torch.randn(4, 5, generator=torch.Generator().manual_seed(3))
    queries = corpus[[2, 0]]
    scores, indices = top_k(queries, corpus, 10, chunk_size=3)
    assert indices.shape == scores.shape == (2, 4)
    assert indices[:, 0].tolist() == [2, 0]  # each query finds itself first
    assert sorted(indices[0].tolist()) == [0, 1, 2, 3]
    assert torch.all(scores[:, :-1] >= scores[:, 1:])


def test_empty_inputs():
    scores, indices = top_k(torch.randn(3, 4), torch.empty(0, 4), 5)
    assert scores.shape == indices.shape == (3, 0)
    scores, indices = top_k(torch.empty(0, 4), torch.randn(6, 4), 5)
    assert scores.shape == indices.shape == (0, 5)


def test_bad_arguments():
    q, c = torch.randn(2, 4), torch.randn(5, 4)
    with pytest.raises(TunewiseError) as err:
        top_k(q, c, 0)
    assert str(err.value) == "eval.k: k must be a positive integer, got 0"
    with pytest.raises(TunewiseError, match="did you mean 'faiss'"):
        top_k(q, c, 2, backend="fais")
    with pytest.raises(ValueError, match="same d"):
        top_k(q, torch.randn(5, 3), 2)
    with pytest.raises(ValueError, match="chunk_size"):
        top_k(q, c, 2, chunk_size=0)


def test_faiss_missing_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` fail
    q, c = torch.randn(2, 4), torch.randn(5, 4)
    with pytest.raises(TunewiseError) as err:
        top_k(q, c, 2, backend="faiss")
    assert 'pip install "tunewise[faiss]"' in str(err.value)
    assert str(err.value).startswith("eval.backend:")


def test_auto_without_faiss_uses_exact_search(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    monkeypatch.setattr(search, "FAISS_AUTO_MIN_CORPUS", 2)  # corpus of 5 counts as large
    q, c = torch.randn(2, 4), torch.randn(5, 4)
    auto = top_k(q, c, 3, backend="auto")
    exact = top_k(q, c, 3, backend="exact")
    assert torch.equal(auto[1], exact[1]) and torch.equal(auto[0], exact[0])


def test_faiss_backend_agrees_with_exact():
    pytest.importorskip("faiss")
    gen = torch.Generator().manual_seed(4)
    queries, corpus = torch.randn(5, 8, generator=gen), torch.randn(40, 8, generator=gen)
    scores, indices = top_k(queries, corpus, 7, backend="faiss")
    want_scores, want_indices = top_k(queries, corpus, 7, backend="exact")
    assert torch.equal(indices, want_indices)
    torch.testing.assert_close(scores, want_scores, atol=1e-5, rtol=0)


def test_auto_picks_faiss_only_for_large_corpora(monkeypatch):
    calls = []

    def fake_faiss_top_k(faiss, queries, corpus, k, normalize):
        calls.append(corpus.shape[0])
        return torch.zeros(queries.shape[0], k), torch.zeros(queries.shape[0], k, dtype=torch.long)

    monkeypatch.setattr(search, "is_faiss_available", lambda: True)
    monkeypatch.setattr(search, "_import_faiss", lambda: object())
    monkeypatch.setattr(search, "_faiss_top_k", fake_faiss_top_k)
    monkeypatch.setattr(search, "FAISS_AUTO_MIN_CORPUS", 5)
    q = torch.randn(2, 4)
    top_k(q, torch.randn(5, 4), 2)  # 5 rows: not more than the threshold -> exact
    top_k(q, torch.randn(6, 4), 2)  # 6 rows -> faiss
    top_k(q, torch.randn(6, 4), 2, backend="exact")  # explicit exact wins
    assert calls == [6]
