"""The long-document search set: answers joined per category up to a token budget, qrels to every holder."""

from __future__ import annotations

import pytest

from tunewise.data.long_docs import long_document_set
from tunewise.errors import TunewiseError

ROWS = [  # 3 answers in "roof" (4 words each), 1 in "wall"
    {"id": "r1", "category": "roof", "q": "roof one?", "a": "a b c d"},
    {"id": "r2", "category": "roof", "q": "roof two?", "a": "e f g h"},
    {"id": "r3", "category": "roof", "q": "roof three?", "a": "i j k l"},
    {"id": "w1", "category": "wall", "q": "wall one?", "a": "m n o p"},
]
WORDS = lambda t: len(t.split())  # noqa: E731 - one token per word keeps the arithmetic visible


def test_answers_join_up_to_the_budget_without_overlap():
    ds = long_document_set(ROWS, tokens=8, count=WORDS)
    # roof: r1 + r2 = 8 words fit, r3 starts the next document; wall: one document
    assert ds.corpus == {"roof-000": "a b c d e f g h", "roof-002": "i j k l", "wall-000": "m n o p"}
    assert ds.qrels["r2"] == {"roof-000": 1} and ds.qrels["r3"] == {"roof-002": 1}
    assert set(ds.queries) == {"r1", "r2", "r3", "w1"}


def test_stride_one_makes_overlapping_windows():
    ds = long_document_set(ROWS, tokens=8, stride=1, count=WORDS, prefix="sv:")
    assert sorted(ds.corpus) == ["sv:roof-000", "sv:roof-001", "sv:wall-000"]
    assert ds.qrels["sv:r2"] == {"sv:roof-000": 1, "sv:roof-001": 1}  # r2's answer is in both windows


def test_an_answer_longer_than_the_budget_is_its_own_document():
    ds = long_document_set(ROWS[:1], tokens=2, count=WORDS)
    assert ds.corpus == {"roof-000": "a b c d"}


def test_bad_rows_and_options_are_one_line_errors():
    with pytest.raises(TunewiseError, match="needs id, category, q and a"):
        long_document_set([{"id": "x", "q": "?", "a": "!"}])
    with pytest.raises(TunewiseError, match="tokens and stride must be at least 1"):
        long_document_set(ROWS, tokens=0)
    with pytest.raises(TunewiseError, match="question .* and an answer"):
        long_document_set([{"id": "x", "category": "c", "q": "?"}])


def test_packaged_faq_documents_are_long():
    pytest.importorskip("zaragoza_construction_faq")
    from tunewise.data.long_docs import faq_long_documents

    ds = faq_long_documents(("sv",), tokens=256)
    words = sorted(len(t.split()) for t in ds.corpus.values())
    assert len(ds.queries) == 503 and 100 < len(ds.corpus) < 503
    assert words[len(words) // 2] > 80  # most documents hold several answers
