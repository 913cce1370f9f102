"""Retrieval data: training pairs/triplets and an evaluation set of queries, corpus and qrels.

Training data comes as pairs (query, positive), triplets (query, positive, negative) or
labeled items (text, label; pairs are formed from items sharing a label). Evaluation data is
either given (queries + corpus + qrels files) or split from the training data: a seeded
share of the distinct queries is held out and searched against the whole answer corpus.
A query found in both train and eval is leakage: it is reported and, by default, removed
from train.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tunewise.config import DataConfig
from tunewise.data.readers import (
    Record,
    label_value,
    no_labels_left,
    read_records,
    require_columns,
    text_value,
)
from tunewise.errors import TunewiseError, did_you_mean

# Role -> default column name. Users rename with data.columns.{role}.
DEFAULT_COLUMNS = {
    "query": "query",
    "positive": "positive",
    "negative": "negative",
    "text": "text",
    "label": "label",
    "id": "id",
    "query_id": "query_id",
    "doc_id": "doc_id",
    "relevance": "relevance",
}
KINDS = ("pairs", "triplets", "labeled")


@dataclass
class IRDataset:
    """An evaluation set: queries and corpus by id, graded relevance per query."""

    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]
    # Queries given but left out because no relevant document of the corpus is judged for them.
    unscorable_queries: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Only queries with at least one relevant document in the corpus can be scored.
        given = len(self.queries)
        self.qrels = {
            q: {d: r for d, r in rel.items() if d in self.corpus and r > 0}
            for q, rel in self.qrels.items()
            if q in self.queries
        }
        self.qrels = {q: rel for q, rel in self.qrels.items() if rel}
        self.queries = {q: self.queries[q] for q in self.qrels}
        self.unscorable_queries = given - len(self.queries)


@dataclass
class RetrievalData:
    """What the embedding task trains and evaluates on."""

    train: list[dict[str, str]]  # rows with anchor, positive[, negative]
    eval: IRDataset
    validation: IRDataset | None = None
    report: dict[str, Any] = field(default_factory=dict)
    # The whole training set a subset (budget point) was drawn from: hard-negative mining
    # searches all of its documents once (tunewise.data.hard_negatives). None: ``train`` is it.
    pool: list[dict[str, str]] | None = None

    @property
    def columns(self) -> list[str]:
        return list(self.train[0].keys()) if self.train else []


def normalize(text: str) -> str:
    """The form used to compare queries for leakage: case-folded, whitespace collapsed."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def column_map(cfg: DataConfig) -> dict[str, str]:
    for role in cfg.columns:
        if role not in DEFAULT_COLUMNS:
            raise TunewiseError(
                f"data.columns: unknown role '{role}'{did_you_mean(role, DEFAULT_COLUMNS)}; "
                f"roles are: {', '.join(DEFAULT_COLUMNS)}"
            )
    return {**DEFAULT_COLUMNS, **cfg.columns}


def load_items(cfg: DataConfig) -> list[tuple[str, ...]]:
    """Read the training file as tuples: (query, positive), (q, pos, neg) or (text, label)."""
    return read_items(cfg)[0]


def read_items(cfg: DataConfig) -> tuple[list[tuple[str, ...]], int]:
    """The training tuples and how many rows were skipped for a missing label (``data.on_missing_label: skip``)."""
    if cfg.kind not in KINDS:
        raise TunewiseError(f"data.kind: unknown '{cfg.kind}'{did_you_mean(cfg.kind, KINDS)}; use pairs, triplets or labeled")
    if cfg.train is None:
        raise TunewiseError("data.train: no training data given; set data.train (or --train) to a CSV/JSONL/Parquet file")
    cols = column_map(cfg)
    roles = {"pairs": ["query", "positive"], "triplets": ["query", "positive", "negative"], "labeled": ["text", "label"]}[cfg.kind]
    records = read_records(cfg.train, cfg.format, option="data.train")
    needed = {role: cols[role] for role in roles}
    require_columns(records, needed, cfg.train)
    if cfg.kind != "labeled":
        return [tuple(text_value(r, needed[role], i, cfg.train) for role in roles) for i, r in enumerate(records)], 0
    items, skipped = [], 0
    for i, r in enumerate(records):
        # A label such as "NaN" or "N/A" would otherwise pair unrelated items as the same class.
        label = label_value(r, needed["label"], i, cfg.train, cfg.on_missing_label)
        if label is None:
            skipped += 1
            continue
        items.append((text_value(r, needed["text"], i, cfg.train), label))
    if not items:
        raise no_labels_left(cfg.train, needed["label"], skipped)
    return items, skipped


EVAL_DROPPED_KEYS = ("qrels_unknown_query", "qrels_unknown_doc", "queries_without_qrels")


def _id_table(records: list[Record], cols: dict[str, str], path: str, what: str) -> dict[str, str]:
    """id -> text of a queries or corpus file; a repeated id is an error naming both rows."""
    table: dict[str, str] = {}
    rows: dict[str, int] = {}
    for i, r in enumerate(records):
        key = text_value(r, cols["id"], i, path)
        if key in rows:
            raise TunewiseError(
                f"{path}: {what} id '{key}' appears twice (rows {rows[key]} and {i + 1}); "
                f"give every {what} its own id (merge or rename one of them)"
            )
        rows[key] = i + 1
        table[key] = text_value(r, cols["text"], i, path)
    return table


def _first(ids: list[str], n: int = 3) -> str:
    shown = ", ".join(f"'{x}'" for x in ids[:n])
    return shown + (f" and {len(ids) - n} more" if len(ids) > n else "")


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def load_eval_files(cfg: DataConfig) -> tuple[IRDataset, dict[str, int]]:
    """The evaluation set of the queries, corpus and qrels files, and what was dropped (by EVAL_DROPPED_KEYS).

    Duplicate ids are errors. Judgments naming an unknown query or document, and queries
    without a relevant judgment (relevance > 0), are errors too, or with
    ``data.on_invalid_eval: drop`` left out and counted.
    """
    cols = column_map(cfg)
    assert cfg.eval_queries and cfg.eval_corpus and cfg.eval_qrels
    tables = {}
    for option, path, what in (("data.eval_queries", cfg.eval_queries, "query"), ("data.eval_corpus", cfg.eval_corpus, "document")):
        records = read_records(path, "auto", option=option)
        require_columns(records, {"id": cols["id"], "text": cols["text"]}, path)
        tables[option] = _id_table(records, cols, path, what)
    queries, corpus = tables["data.eval_queries"], tables["data.eval_corpus"]
    qrel_records = read_records(cfg.eval_qrels, "auto", option="data.eval_qrels")
    require_columns(qrel_records, {"query_id": cols["query_id"], "doc_id": cols["doc_id"]}, cfg.eval_qrels)
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    seen: dict[tuple[str, str], tuple[int, int]] = {}  # (query, doc) -> (row, relevance)
    unknown_query: list[str] = []  # one entry per judgment (the ids are listed once each in errors)
    unknown_doc: list[str] = []
    for i, r in enumerate(qrel_records):
        q = text_value(r, cols["query_id"], i, cfg.eval_qrels)
        d = text_value(r, cols["doc_id"], i, cfg.eval_qrels)
        rel = 1
        if r.get(cols["relevance"]) not in (None, ""):
            try:
                rel = int(float(r[cols["relevance"]]))
            except (TypeError, ValueError):
                raise TunewiseError(
                    f"{cfg.eval_qrels}: row {i + 1}, column '{cols['relevance']}' must be a number, got {r[cols['relevance']]!r}"
                ) from None
        if (q, d) in seen and seen[q, d][1] != rel:
            raise TunewiseError(
                f"{cfg.eval_qrels}: query '{q}' and document '{d}' are judged twice with different relevance "
                f"(rows {seen[q, d][0]} and {i + 1}: {seen[q, d][1]} and {rel}); keep one judgment"
            )
        seen[q, d] = (i + 1, rel)
        if q not in queries:
            unknown_query.append(q)
        elif d not in corpus:
            unknown_doc.append(d)
        else:
            qrels[q][d] = rel
    judged = {q for q, rel in qrels.items() if any(r > 0 for r in rel.values())}
    unjudged = [q for q in queries if q not in judged]
    if not judged:
        if not unknown_query and not unknown_doc:
            raise TunewiseError(f"{cfg.eval_qrels}: no judgment has a relevance above 0; mark the relevant documents with 1 or more")
        example = (f"unknown query ids: {_first(list(dict.fromkeys(unknown_query)))}" if unknown_query
                   else f"unknown document ids: {_first(list(dict.fromkeys(unknown_doc)))}")
        raise TunewiseError(
            f"{cfg.eval_qrels}: no judgment matches a query id in {cfg.eval_queries} and a document id in {cfg.eval_corpus} "
            f"({example}); check the ids"
        )
    drop = "or set data.on_invalid_eval: drop to leave them out"
    if cfg.on_invalid_eval != "drop":
        if unknown_query:
            ids = list(dict.fromkeys(unknown_query))
            raise TunewiseError(
                f"{cfg.eval_qrels}: {_count(len(unknown_query), 'judgment names', 'judgments name')} a query id that is not in {cfg.eval_queries} "
                f"({_first(ids)}); fix the ids, add the queries, {drop}"
            )
        if unknown_doc:
            ids = list(dict.fromkeys(unknown_doc))
            raise TunewiseError(
                f"{cfg.eval_qrels}: {_count(len(unknown_doc), 'judgment names', 'judgments name')} a document id that is not in {cfg.eval_corpus} "
                f"({_first(ids)}); fix the ids, add the documents, {drop}"
            )
        if unjudged:
            raise TunewiseError(
                f"{cfg.eval_queries}: {_count(len(unjudged), 'query has', 'queries have')} no relevant judgment (relevance > 0) in {cfg.eval_qrels} "
                f"({_first(unjudged)}); add judgments, remove the queries, {drop}"
            )
    dropped = {"qrels_unknown_query": len(unknown_query), "qrels_unknown_doc": len(unknown_doc),
               "queries_without_qrels": len(unjudged)}
    return IRDataset(queries, corpus, dict(qrels)), dropped


def _held_out_count(n: int, cfg: DataConfig) -> int:
    count = cfg.eval_size if cfg.eval_size is not None else round(n * cfg.eval_fraction)
    if count >= n:
        raise TunewiseError(f"data.eval_size: {count} held-out items leave nothing to train on ({n} in all); lower it")
    return max(1, count)


def pairs_from_labels(items: list[tuple[str, ...]], rng: random.Random) -> list[dict[str, str]]:
    by_label: dict[str, list[str]] = defaultdict(list)
    for text, label in items:
        by_label[label].append(text)
    rows = []
    for texts in by_label.values():
        if len(texts) < 2:
            continue
        for i, text in enumerate(texts):
            j = rng.randrange(len(texts) - 1)
            rows.append({"anchor": text, "positive": texts[j if j < i else j + 1]})
    return rows


def split_labeled_items(items, cfg: DataConfig, seed: int, eval_ds: IRDataset | None):
    rng = random.Random(seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    if eval_ds is None:
        n_eval = _held_out_count(len(items), cfg)
        held, kept = order[:n_eval], order[n_eval:]
        corpus = {f"d{i}": items[i][0] for i in kept}
        by_label: dict[str, list[str]] = defaultdict(list)
        for i in kept:
            by_label[items[i][1]].append(f"d{i}")
        queries = {f"q{i}": items[i][0] for i in held}
        qrels = {f"q{i}": {d: 1 for d in by_label.get(items[i][1], [])} for i in held}
        eval_ds = IRDataset(queries, corpus, qrels)
        train_items = [items[i] for i in sorted(kept)]
    else:
        train_items = list(items)
    return train_items, eval_ds


def split_pair_items(items, cfg: DataConfig, seed: int, eval_ds: IRDataset | None):
    """Hold out distinct queries; the corpus is every distinct positive (and negative)."""
    if eval_ds is not None:
        return list(items), eval_ds
    doc_ids: dict[str, str] = {}
    for item in items:
        for text in item[1:]:
            doc_ids.setdefault(text, f"d{len(doc_ids)}")
    by_query: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_query[normalize(item[0])].append(i)
    keys = sorted(by_query)
    random.Random(seed).shuffle(keys)
    n_eval = _held_out_count(len(keys), cfg)
    held = keys[:n_eval]
    queries, qrels = {}, {}
    for n, key in enumerate(held):
        qid = f"q{n}"
        queries[qid] = items[by_query[key][0]][0]
        qrels[qid] = {doc_ids[items[i][1]]: 1 for i in by_query[key]}
    held_set = set(held)
    train_items = [item for item in items if normalize(item[0]) not in held_set]
    return train_items, IRDataset(queries, {d: t for t, d in doc_ids.items()}, qrels)


def prepare_retrieval_data(cfg: DataConfig, seed: int, *, need_validation: bool = False) -> RetrievalData:
    """Read, split and check the data of a retrieval run.

    Args:
        cfg: the data section of the run config.
        seed: seeds the held-out split and label pairing (reproducible).
        need_validation: carve a validation set out of train (for early stopping).

    Returns:
        Training rows, the evaluation set, an optional validation set and a report of
        counts and leakage.

    Raises:
        TunewiseError: unreadable data, missing columns, fewer than two training items.
    """
    items, skipped_labels = read_items(cfg)
    eval_ds, eval_dropped = load_eval_files(cfg) if cfg.eval_queries else (None, None)
    split = split_labeled_items if cfg.kind == "labeled" else split_pair_items
    train_items, eval_ds = split(items, cfg, seed, eval_ds)
    if eval_dropped is None:  # split from the training data: held-out items nothing matches are left out
        eval_dropped = {**dict.fromkeys(EVAL_DROPPED_KEYS, 0), "queries_without_qrels": eval_ds.unscorable_queries}

    eval_norm = {normalize(t) for t in eval_ds.queries.values()}
    leaked = [it for it in train_items if normalize(it[0]) in eval_norm]
    if leaked and cfg.drop_leaked:
        train_items = [it for it in train_items if normalize(it[0]) not in eval_norm]
    if cfg.max_train is not None and len(train_items) > cfg.max_train:
        rng = random.Random(seed)
        train_items = [train_items[i] for i in sorted(rng.sample(range(len(train_items)), cfg.max_train))]

    validation = None
    if need_validation:
        train_items, validation = split_pair_items(train_items, validation_config(cfg), seed + 1, None) if cfg.kind != "labeled" \
            else split_labeled_items(train_items, validation_config(cfg), seed + 1, None)

    rng = random.Random(seed)
    if cfg.kind == "labeled":
        rows = pairs_from_labels(train_items, rng)
    else:
        names = ["anchor", "positive", "negative"]
        rows = [dict(zip(names, item)) for item in train_items]
    if len(rows) < 2:
        what = "pairs of same-label items" if cfg.kind == "labeled" else "training items"
        raise TunewiseError(
            f"data.train: only {len(rows)} {what} left after holding out the evaluation set; "
            "need at least 2 (add data or lower data.eval_fraction)"
        )
    report = {
        "kind": cfg.kind,
        "items_read": len(items),
        "train_examples": len(rows),
        "eval_queries": len(eval_ds.queries),
        "eval_corpus": len(eval_ds.corpus),
        "validation_queries": len(validation.queries) if validation else 0,
        "leaked_queries": len(leaked),
        "leaked_removed": bool(leaked and cfg.drop_leaked),
        "leaked_examples": [it[0] for it in leaked[:3]],
        "dropped_eval": eval_dropped,  # not "eval_*": run.py prints those keys as scalars
    }
    if cfg.kind == "labeled":
        report["skipped_missing_labels"] = skipped_labels
    return RetrievalData(rows, eval_ds, validation, report)


def validation_config(cfg: DataConfig) -> DataConfig:
    return DataConfig(train=cfg.train, kind=cfg.kind, eval_fraction=cfg.validation_fraction,
                      on_missing_label=cfg.on_missing_label, on_invalid_eval=cfg.on_invalid_eval)
