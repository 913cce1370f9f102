"""Explicit evaluation files (data.eval_queries, eval_corpus, eval_qrels): nothing vanishes silently.

Duplicate ids are errors naming the id and both rows; judgments naming an unknown query or
document, and queries without a relevant judgment, are errors unless data.on_invalid_eval is
drop, which leaves them out and counts them in the data report (report["dropped_eval"]).
"""

from __future__ import annotations

import json

import pytest

from tunewise.config import DataConfig
from tunewise.data.retrieval import prepare_retrieval_data
from tunewise.errors import TunewiseError

QUERIES = [{"id": "Q1", "text": "how do I get a roof permit"}, {"id": "Q2", "text": "fence height limit"}]
CORPUS = [{"id": "D1", "text": "roof permits are issued by the city"}, {"id": "D2", "text": "fences may be 1.8 m"},
          {"id": "D3", "text": "garages need a permit"}]
QRELS = [{"query_id": "Q1", "doc_id": "D1"}, {"query_id": "Q2", "doc_id": "D2", "relevance": 2},
         {"query_id": "Q2", "doc_id": "D3", "relevance": 0}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(str(r.get(h, "")) for h in header) + "\n" for r in rows),
                    encoding="utf-8")
    return str(path)


def run(pairs_file, tmp_path, queries=QUERIES, corpus=CORPUS, qrels=QRELS, **options):
    files = {"eval_queries": write_jsonl(tmp_path / "queries.jsonl", queries),
             "eval_corpus": write_jsonl(tmp_path / "corpus.jsonl", corpus),
             "eval_qrels": write_jsonl(tmp_path / "qrels.jsonl", qrels)}
    return prepare_retrieval_data(DataConfig(train=str(pairs_file), **files, **options), seed=0)


def test_valid_files_are_unchanged_and_report_nothing_dropped(pairs_file, tmp_path):
    data = run(pairs_file, tmp_path)
    assert data.eval.queries == {q["id"]: q["text"] for q in QUERIES}
    assert data.eval.corpus == {d["id"]: d["text"] for d in CORPUS}
    assert data.eval.qrels == {"Q1": {"D1": 1}, "Q2": {"D2": 2}}  # relevance 0 is not relevant
    assert data.report["dropped_eval"] == {"qrels_unknown_query": 0, "qrels_unknown_doc": 0, "queries_without_qrels": 0}


def test_duplicate_document_id_names_id_rows_and_file(pairs_file, tmp_path):
    corpus = CORPUS + [{"id": "D1", "text": "a different text under the same id"}]
    with pytest.raises(TunewiseError, match=r"corpus.jsonl: document id 'D1' appears twice \(rows 1 and 4\); give every document its own id"):
        run(pairs_file, tmp_path, corpus=corpus)


def test_duplicate_query_id_names_id_rows_and_file(pairs_file, tmp_path):
    queries = QUERIES + [{"id": "Q2", "text": "fence height limit"}]  # even with the same text
    with pytest.raises(TunewiseError, match=r"queries.jsonl: query id 'Q2' appears twice \(rows 2 and 3\)"):
        run(pairs_file, tmp_path, queries=queries)


def test_duplicate_ids_are_errors_even_with_drop(pairs_file, tmp_path):
    corpus = CORPUS + [{"id": "D3", "text": "again"}]
    with pytest.raises(TunewiseError, match=r"document id 'D3' appears twice \(rows 3 and 4\)"):
        run(pairs_file, tmp_path, corpus=corpus, on_invalid_eval="drop")


def test_duplicate_id_in_csv_counts_data_rows(pairs_file, tmp_path):
    corpus = write_csv(tmp_path / "corpus.csv", ["id", "text"], CORPUS + [{"id": "D2", "text": "dup"}])
    cfg = DataConfig(train=str(pairs_file), eval_queries=write_jsonl(tmp_path / "q.jsonl", QUERIES), eval_corpus=corpus,
                     eval_qrels=write_jsonl(tmp_path / "r.jsonl", QRELS))
    with pytest.raises(TunewiseError, match=r"corpus.csv: document id 'D2' appears twice \(rows 2 and 4\)"):
        prepare_retrieval_data(cfg, seed=0)


def test_qrels_naming_an_unknown_document(pairs_file, tmp_path):
    qrels = QRELS + [{"query_id": "Q1", "doc_id": "D9"}, {"query_id": "Q2", "doc_id": "D9"}, {"query_id": "Q2", "doc_id": "D8"}]
    with pytest.raises(TunewiseError) as err:
        run(pairs_file, tmp_path, qrels=qrels)
    message = str(err.value)
    assert "qrels.jsonl: 3 judgments name a document id that is not in" in message and "corpus.jsonl" in message
    assert "('D9', 'D8')" in message and "data.on_invalid_eval: drop" in message and "\n" not in message


def test_qrels_naming_an_unknown_query(pairs_file, tmp_path):
    qrels = QRELS + [{"query_id": "Q7", "doc_id": "D1"}]
    with pytest.raises(TunewiseError, match=r"qrels.jsonl: 1 judgment names a query id that is not in .*queries.jsonl \('Q7'\); "
                                            r"fix the ids, add the queries, or set data.on_invalid_eval: drop"):
        run(pairs_file, tmp_path, qrels=qrels)


def test_many_unknown_ids_show_the_first_few(pairs_file, tmp_path):
    qrels = QRELS + [{"query_id": f"X{i}", "doc_id": "D1"} for i in range(10)]
    with pytest.raises(TunewiseError, match=r"10 judgments name a query id .*\('X0', 'X1', 'X2' and 7 more\)"):
        run(pairs_file, tmp_path, qrels=qrels)


def test_query_without_judgments(pairs_file, tmp_path):
    queries = QUERIES + [{"id": "Q3", "text": "an unjudged question"}]
    with pytest.raises(TunewiseError, match=r"queries.jsonl: 1 query has no relevant judgment \(relevance > 0\) in .*qrels.jsonl "
                                            r"\('Q3'\); add judgments, remove the queries, or set data.on_invalid_eval: drop"):
        run(pairs_file, tmp_path, queries=queries)


def test_query_judged_only_non_relevant_counts_as_without_judgments(pairs_file, tmp_path):
    queries = QUERIES + [{"id": "Q3", "text": "only misses"}]
    qrels = QRELS + [{"query_id": "Q3", "doc_id": "D3", "relevance": 0}]
    with pytest.raises(TunewiseError, match=r"1 query has no relevant judgment .*\('Q3'\)"):
        run(pairs_file, tmp_path, queries=queries, qrels=qrels)


def test_drop_leaves_them_out_and_counts_them(pairs_file, tmp_path):
    queries = QUERIES + [{"id": "Q3", "text": "an unjudged question"}, {"id": "Q4", "text": "judged only for a missing doc"}]
    qrels = QRELS + [{"query_id": "Q1", "doc_id": "D9"}, {"query_id": "Q4", "doc_id": "D9"},
                     {"query_id": "Q8", "doc_id": "D1"}]
    data = run(pairs_file, tmp_path, queries=queries, qrels=qrels, on_invalid_eval="drop")
    assert data.eval.queries == {"Q1": QUERIES[0]["text"], "Q2": QUERIES[1]["text"]}
    assert data.eval.qrels == {"Q1": {"D1": 1}, "Q2": {"D2": 2}}  # relevance 0 is not relevant
    assert len(data.eval.corpus) == 3
    assert data.report["dropped_eval"] == {"qrels_unknown_query": 1, "qrels_unknown_doc": 2, "queries_without_qrels": 2}
    json.dumps(data.report)  # the runner copies it into metrics.json


def test_nothing_matching_is_an_error_even_with_drop(pairs_file, tmp_path):
    qrels = [{"query_id": "q1", "doc_id": "D1"}, {"query_id": "q2", "doc_id": "D2"}]  # ids in the wrong case
    with pytest.raises(TunewiseError, match=r"no judgment matches a query id .*\(unknown query ids: 'q1', 'q2'\); check the ids"):
        run(pairs_file, tmp_path, qrels=qrels, on_invalid_eval="drop")


def test_only_non_relevant_judgments_is_an_error(pairs_file, tmp_path):
    qrels = [{"query_id": "Q1", "doc_id": "D1", "relevance": 0}]
    with pytest.raises(TunewiseError, match="qrels.jsonl: no judgment has a relevance above 0"):
        run(pairs_file, tmp_path, qrels=qrels, on_invalid_eval="drop")


def test_conflicting_duplicate_judgment_is_an_error(pairs_file, tmp_path):
    qrels = QRELS + [{"query_id": "Q1", "doc_id": "D1", "relevance": 0}]
    with pytest.raises(TunewiseError, match=r"qrels.jsonl: query 'Q1' and document 'D1' are judged twice with different "
                                            r"relevance \(rows 1 and 4: 1 and 0\); keep one judgment"):
        run(pairs_file, tmp_path, qrels=qrels)


def test_repeated_identical_judgment_is_fine(pairs_file, tmp_path):
    data = run(pairs_file, tmp_path, qrels=QRELS + [{"query_id": "Q1", "doc_id": "D1", "relevance": 1}])
    assert data.eval.qrels["Q1"] == {"D1": 1}


def test_on_invalid_eval_is_validated():
    with pytest.raises(TunewiseError, match=r"data.on_invalid_eval: unknown 'dorp' \(did you mean 'drop'\?\); use error or drop"):
        DataConfig(on_invalid_eval="dorp")


def test_split_from_labeled_training_data_counts_unmatched_held_out_items(tmp_path):
    """A held-out item whose class has no item left in the corpus cannot be scored: counted, not silent."""
    rows = [{"text": f"text {i}", "label": f"c{i % 4}"} for i in range(12)] + [{"text": "lonely", "label": "solo"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    dropped = []
    for seed in range(12):
        data = prepare_retrieval_data(DataConfig(train=path, kind="labeled", eval_size=4), seed=seed)
        n = data.report["dropped_eval"]["queries_without_qrels"]
        assert len(data.eval.queries) + n == 4
        dropped.append(n)
    assert any(dropped)
