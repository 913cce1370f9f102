"""A long-document search set built from packaged text: FAQ answers concatenated into ~N-token documents.

Real corpora (manuals, tickets, contracts) hold documents of hundreds of tokens, where encoding
dominates evaluation; the packaged construction FAQ has short answers (~40 tokens). This joins
consecutive answers of one FAQ category into a document of about ``tokens`` tokens (a window
over the category's answers, moved by ``stride`` answers), and keeps every FAQ question as a
query relevant to each document that contains its answer. Benchmarks of encoding speed and of
anything that depends on document length use it; it is deterministic and offline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import groupby

from tunewise.data.retrieval import IRDataset
from tunewise.errors import TunewiseError


def approx_tokens(text: str) -> int:
    """A WordPiece-like token count without a tokenizer: ~1.5 tokens per word (Swedish in an
    English vocabulary splits more; pass a tokenizer's count for exact lengths)."""
    return int(len(text.split()) * 1.5) + 2


def long_document_set(rows: Sequence[dict], *, tokens: int = 256, stride: int | None = None,
                      count: Callable[[str], int] = approx_tokens, prefix: str = "") -> IRDataset:
    """Questions -> long documents made of concatenated answers.

    Args:
        rows: FAQ rows with ``id``, ``category``, ``q`` (or ``query``) and ``a`` (or ``positive``),
            e.g. :func:`tunewise.data.packaged.load_faq`.
        tokens: target document length; answers are added while the document stays under it
            (a document holds at least one answer).
        stride: answers the window moves per document (default: the answers of the last
            document, so documents do not overlap; 1 gives about one document per answer).
        count: tokens of a text (e.g. ``lambda t: len(tokenizer(t).input_ids)``).
        prefix: prepended to every query and document id (to merge two languages).

    Returns:
        An :class:`IRDataset`; a question is relevant to every document holding its answer.

    Raises:
        TunewiseError: a row lacks a field, or ``tokens``/``stride`` is below 1.
    """
    if tokens < 1 or (stride is not None and stride < 1):
        raise TunewiseError(f"long documents: tokens and stride must be at least 1, got {tokens} and {stride}")
    try:
        items = [(r["id"], r["category"], r.get("q", r.get("query")), r.get("a", r.get("positive"))) for r in rows]
    except KeyError as err:
        raise TunewiseError(f"long documents: every row needs id, category, q and a; missing {err}") from None
    if any(q is None or a is None for _, _, q, a in items):
        raise TunewiseError("long documents: every row needs a question (q or query) and an answer (a or positive)")
    queries = {f"{prefix}{i}": q for i, _, q, _ in items}
    corpus: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {q: {} for q in queries}
    for category, group in groupby(sorted(items, key=lambda r: r[1]), key=lambda r: r[1]):
        members = list(group)
        start = 0
        while start < len(members):
            end, size = start + 1, count(members[start][3])
            while end < len(members) and size + count(members[end][3]) <= tokens:
                size += count(members[end][3])
                end += 1
            doc_id = f"{prefix}{category}-{start:03d}"
            corpus[doc_id] = " ".join(m[3] for m in members[start:end])
            for m in members[start:end]:
                qrels[f"{prefix}{m[0]}"][doc_id] = 1
            if end == len(members):
                break
            start += stride if stride is not None else end - start
    return IRDataset(queries, corpus, qrels)


def faq_long_documents(langs: Sequence[str] = ("sv",), *, tokens: int = 256, stride: int | None = None,
                       count: Callable[[str], int] = approx_tokens) -> IRDataset:
    """:func:`long_document_set` over the packaged construction FAQ, one or more languages merged
    (ids prefixed ``sv:``, ``en:``); needs ``zaragoza-construction-faq``."""
    from tunewise.data.packaged import load_faq

    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for lang in langs:
        part = long_document_set(load_faq(lang), tokens=tokens, stride=stride, count=count, prefix=f"{lang}:")
        queries.update(part.queries)
        corpus.update(part.corpus)
        qrels.update(part.qrels)
    return IRDataset(queries, corpus, qrels)
