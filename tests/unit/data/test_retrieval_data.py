"""Retrieval data: splits, corpus, qrels, leakage, labeled pairs, explicit eval files."""

from __future__ import annotations

import json

import pytest

from tunewise.config import DataConfig
from tunewise.data.retrieval import normalize, prepare_retrieval_data
from tunewise.errors import TunewiseError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_pairs_split_holds_out_queries_and_keeps_whole_corpus(pairs_file):
    data = prepare_retrieval_data(DataConfig(train=str(pairs_file), eval_fraction=0.25), seed=1)
    train_queries = {normalize(r["anchor"]) for r in data.train}
    assert len(data.eval.queries) == 15 and len(data.train) == 45
    assert not train_queries & {normalize(q) for q in data.eval.queries.values()}
    # Every distinct answer is searchable, including the answers of training pairs.
    assert len(data.eval.corpus) == len({r["positive"] for r in json.loads("[" + ",".join(pairs_file.read_text().splitlines()) + "]")})
    for rel in data.eval.qrels.values():
        assert rel and all(d in data.eval.corpus for d in rel)


def test_split_is_seeded(pairs_file):
    a = prepare_retrieval_data(DataConfig(train=str(pairs_file)), seed=3)
    b = prepare_retrieval_data(DataConfig(train=str(pairs_file)), seed=3)
    c = prepare_retrieval_data(DataConfig(train=str(pairs_file)), seed=4)
    assert a.eval.queries == b.eval.queries and a.train == b.train
    assert a.eval.queries != c.eval.queries


def test_duplicate_query_has_all_its_answers_relevant(tmp_path):
    rows = [{"query": "Roof?", "positive": "a1"}, {"query": "roof? ", "positive": "a2"}] + [
        {"query": f"q{i}", "positive": f"a{i + 3}"} for i in range(10)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    held_out = 0
    for seed in range(6):
        data = prepare_retrieval_data(DataConfig(train=path, eval_size=5), seed=seed)
        roof = [q for q, t in data.eval.queries.items() if normalize(t) == "roof?"]
        if roof:  # both spellings are one query, relevant to both answers, and neither trains
            held_out += 1
            assert len(data.eval.qrels[roof[0]]) == 2
            assert all(normalize(r["anchor"]) != "roof?" for r in data.train)
    assert held_out


def test_triplets_keep_negative_and_add_it_to_corpus(pairs_file):
    data = prepare_retrieval_data(DataConfig(train=str(pairs_file), kind="triplets"), seed=0)
    assert set(data.train[0]) == {"anchor", "positive", "negative"}
    assert any(t.endswith("info") for t in data.eval.corpus.values())


def test_labeled_items_form_same_label_pairs(pairs_file):
    data = prepare_retrieval_data(DataConfig(train=str(pairs_file), kind="labeled", columns={"text": "query"}), seed=0)
    texts = {json.loads(line)["query"]: json.loads(line)["label"] for line in pairs_file.read_text().splitlines()}
    assert data.train and all(texts[r["anchor"]] == texts[r["positive"]] and r["anchor"] != r["positive"] for r in data.train)
    for qid, rel in data.eval.qrels.items():
        label = texts[data.eval.queries[qid]]
        assert all(texts[data.eval.corpus[d]] == label for d in rel)


def _eval_files(tmp_path, leaked_query):
    q = write_jsonl(tmp_path / "q.jsonl", [{"id": "Q1", "text": leaked_query}, {"id": "Q2", "text": "fresh question"}])
    c = write_jsonl(tmp_path / "c.jsonl", [{"id": "D1", "text": "doc one"}, {"id": "D2", "text": "doc two"}])
    r = write_jsonl(tmp_path / "r.jsonl", [{"query_id": "Q1", "doc_id": "D1"}, {"query_id": "Q2", "doc_id": "D2", "relevance": 2},
                                           {"query_id": "Q2", "doc_id": "D1", "relevance": 1}])
    return q, c, r


def test_explicit_eval_files_and_leakage_removed(pairs_file, tmp_path):
    leaked = json.loads(pairs_file.read_text().splitlines()[0])["query"]
    q, c, r = _eval_files(tmp_path, leaked.upper())
    data = prepare_retrieval_data(DataConfig(train=str(pairs_file), eval_queries=q, eval_corpus=c, eval_qrels=r), seed=0)
    assert data.eval.qrels == {"Q1": {"D1": 1}, "Q2": {"D2": 2, "D1": 1}}
    assert data.report["leaked_queries"] == 1 and data.report["leaked_removed"]
    assert len(data.train) == 59


def test_leakage_can_be_kept(pairs_file, tmp_path):
    leaked = json.loads(pairs_file.read_text().splitlines()[0])["query"]
    q, c, r = _eval_files(tmp_path, leaked)
    data = prepare_retrieval_data(DataConfig(train=str(pairs_file), eval_queries=q, eval_corpus=c, eval_qrels=r,
                                             drop_leaked=False), seed=0)
    assert data.report["leaked_queries"] == 1 and len(data.train) == 60


def test_qrels_matching_nothing(pairs_file, tmp_path):
    q = write_jsonl(tmp_path / "q.jsonl", [{"id": "Q1", "text": "x"}])
    c = write_jsonl(tmp_path / "c.jsonl", [{"id": "D1", "text": "y"}])
    r = write_jsonl(tmp_path / "r.jsonl", [{"query_id": "Q9", "doc_id": "D1"}])
    with pytest.raises(TunewiseError, match="no judgment matches"):
        prepare_retrieval_data(DataConfig(train=str(pairs_file), eval_queries=q, eval_corpus=c, eval_qrels=r), seed=0)


def test_too_few_training_pairs(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"query": "a", "positive": "b"}, {"query": "c", "positive": "d"}])
    with pytest.raises(TunewiseError, match="only 1 training items left"):
        prepare_retrieval_data(DataConfig(train=path, eval_size=1), seed=0)


def test_max_train_and_validation(pairs_file):
    data = prepare_retrieval_data(DataConfig(train=str(pairs_file), max_train=20), seed=0, need_validation=True)
    assert data.validation is not None and len(data.validation.queries) == 2 and len(data.train) == 18


def test_unknown_column_role(pairs_file):
    with pytest.raises(TunewiseError, match=r"unknown role 'querry' \(did you mean 'query'\?\)"):
        prepare_retrieval_data(DataConfig(train=str(pairs_file), columns={"querry": "q"}), seed=0)
