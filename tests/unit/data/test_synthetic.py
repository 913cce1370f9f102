"""Synthetic queries for unlabeled documents (tunewise.data.synthetic): cleaning, round trip, cache, file, bad input.

The generator is a tiny random Llama built from config: its output is garbage but deterministic,
which is all the plumbing needs; what the queries are worth is measured in benchmarks/synthetic.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from tunewise.config import load_config
from tunewise.data import synthetic
from tunewise.data.synthetic import (
    KEPT,
    SyntheticQuery,
    clean_query,
    detect_language,
    read_queries,
    round_trip,
    screen,
    synthetic_rows,
    write_queries,
)
from tunewise.errors import TunewiseError
from tunewise.models import generator as gen


def _config(tmp_path, pairs_file, model, llm, **values):
    overrides = [f"data.train={pairs_file}", f"model={model}", f"output_dir={tmp_path / 'run'}", "data.eval_fraction=0.2",
                 f"synthetic.generator={llm}", "synthetic.max_new_tokens=6", "synthetic.batch_size=8", "synthetic.filter_top_k=0"]
    return load_config(None, overrides + [f"{k}={v}" for k, v in values.items()])


def _prepared(cfg):
    from tunewise.tasks.embedding import EmbeddingTask

    return EmbeddingTask().prepare_data(cfg)


def test_clean_query_takes_the_first_line_without_label_or_quotes():
    assert clean_query('Question: "Hur länge gäller bygglovet?"\nIt is valid for...') == "Hur länge gäller bygglovet?"
    assert clean_query("\n\n  Fråga:  Vad kostar   det? ") == "Vad kostar det?"
    assert clean_query("") == ""


def test_screen_drops_empty_long_copies_and_duplicates():
    seen = {"how long is a permit valid?"}  # a labeled query
    doc = "A building permit is valid for five years."
    assert screen("  ? ", doc, seen, max_words=10) == "empty"
    assert screen("word " * 11, doc, seen, max_words=10) == "too long"
    assert screen("a building permit is valid for five years.", doc, seen, max_words=10) == "copies the document"
    assert screen("How long is a permit VALID?", doc, seen, max_words=10) == "duplicate"  # case and space folded
    assert screen("When does a permit expire?", doc, seen, max_words=10) == ""
    assert screen("when does a permit  expire?", doc, seen, max_words=10) == "duplicate"  # the kept one is now seen


def test_detect_language():
    assert detect_language(["Det är inte svårt att söka bygglov för en altan och det kan ta tid."]) == "Swedish"
    assert detect_language(["It is not hard to apply for a permit and it can take a while for the city."]) == "English"
    assert detect_language(["12345 67890"]) == synthetic.UNKNOWN_LANGUAGE


class _StubEncoder:
    """Encodes a text as a fixed unit vector: the round trip's ranking is known in advance."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = vectors

    def encode(self, texts, **_):
        out = torch.tensor([self.vectors[t] for t in texts], dtype=torch.float)
        return torch.nn.functional.normalize(out, dim=1)


def test_round_trip_keeps_queries_whose_source_ranks_in_top_k():
    pool = ["doc a", "doc b", "doc c"]
    stub = _StubEncoder({"doc a": [1, 0, 0], "doc b": [0, 1, 0], "doc c": [0, 0, 1],
                         "q near a": [0.9, 0.1, 0], "q near c, from b": [0, 0.3, 0.9], "q flat": [1, 1, 1]})
    queries = ["q near a", "q near c, from b", "q flat"]
    # q near a: source a ranks 1st; q near c (source b) ranks b 2nd; q flat ties everything (ties count against)
    assert round_trip(stub, queries, [0, 1, 2], pool, k=1) == [True, False, False]
    assert round_trip(stub, queries, [0, 1, 2], pool, k=2) == [True, True, False]
    assert round_trip(stub, queries, [0, 1, 2], pool, k=3) == [True, True, True]


def test_generation_is_cached_per_input(tiny_llama, monkeypatch):
    calls = []
    real = gen._generate_batch
    monkeypatch.setattr(gen, "_generate_batch", lambda *a, **k: calls.append(len(a[3])) or real(*a, **k))
    settings = gen.GenerationSettings(template="Ask about: {document}", language="English", max_new_tokens=5, batch_size=2,
                                      seed=3)
    first = gen.generate(["roof permit", "fence height", "roof permit"], tiny_llama, settings)
    assert calls == [2] and first.cached == 0 and first.paid_seconds > 0  # the repeated input is generated once
    assert first.outputs[0] == first.outputs[2]
    again = gen.generate(["fence height", "roof permit"], tiny_llama, settings)
    assert calls == [2] and again.cached == 2 and again.paid_seconds == 0.0  # nothing generated
    assert again.outputs == [first.outputs[1], first.outputs[0]]
    assert again.seconds == pytest.approx(first.seconds)  # the full cost is still reported
    other = gen.generate(["roof permit"], tiny_llama, gen.GenerationSettings(**{**vars(settings), "seed": 4}))
    assert calls == [2, 1] and other.cached == 0  # another seed is another cache entry


def test_synthetic_rows_cover_the_training_documents_without_a_labeled_query(tmp_path, pairs_file, tiny_st_model, tiny_llama):
    cfg = _config(tmp_path, pairs_file, tiny_st_model, tiny_llama, **{"data.max_train": 10, "synthetic.queries": 1000})
    data = _prepared(cfg)
    rows, report = synthetic_rows(data.train, data, cfg, model=None)
    items, _ = synthetic.synthesize(data.train, data, cfg)
    documents = {i.document for i in items}
    held_out = {data.eval.corpus[d] for rel in data.eval.qrels.values() for d in rel}
    assert documents and not documents & held_out  # evaluation answers never get queries
    assert not documents & {r["positive"] for r in data.train}  # nor documents that have a labeled query
    assert report["eval_documents"] == 0 and report["documents"] == len(documents)
    assert report["generated"] == len(items) == report["kept"] + sum(report["filtered"].values())
    assert len(rows) == len(data.train) + report["used"] and report["used"] == report["kept"]
    assert {"synthetic_seconds", "synthetic_cached"} <= set(report)
    _, second = synthetic_rows(data.train, data, cfg, model=None)
    assert second["synthetic_cached"] is True and second["synthetic_seconds"] == report["synthetic_seconds"]


def test_queries_and_ratio_cap_the_synthetic_share(tmp_path, pairs_file, tiny_st_model, tiny_llama, monkeypatch):
    cfg = _config(tmp_path, pairs_file, tiny_st_model, tiny_llama, **{"data.max_train": 10, "synthetic.queries": 3})
    data = _prepared(cfg)
    fake = [SyntheticQuery(f"query {i}", f"doc {i}", str(i), "g") for i in range(20)]
    monkeypatch.setattr(synthetic, "synthesize", lambda *a, **k: (list(fake), {"documents": 20}))
    rows, report = synthetic_rows(data.train, data, cfg)
    assert report["used"] == 3 and len(rows) == 13
    cfg.synthetic.queries, cfg.synthetic.ratio = 100, 0.5  # at most one synthetic pair per labeled pair
    assert synthetic_rows(data.train, data, cfg)[1]["used"] == 10
    cfg.synthetic.ratio = 0.0
    assert synthetic_rows(data.train, data, cfg)[1]["used"] == 0


def test_round_trip_filter_in_synthetic_rows_uses_the_model(tmp_path, pairs_file, tiny_st_model, tiny_llama):
    from sentence_transformers import SentenceTransformer

    cfg = _config(tmp_path, pairs_file, tiny_st_model, tiny_llama, **{"data.max_train": 10, "synthetic.queries": 1000,
                                                                      "synthetic.filter_top_k": 1})
    data = _prepared(cfg)
    _, report = synthetic_rows(data.train, data, cfg, model=SentenceTransformer(tiny_st_model, device="cpu"))
    assert report["generated"] == report["kept"] + sum(report["filtered"].values())
    assert any(reason.startswith("round trip") for reason in report["filtered"]) or report["kept"] == report["generated"]


def test_queries_file_round_trips_and_edits_win(tmp_path, pairs_file, tiny_st_model, tiny_llama):
    items = [SyntheticQuery("Hur länge gäller lovet?", "Lovet gäller i fem år.", "d1", "smol", KEPT, 0.5),
             SyntheticQuery("x", "Lovet gäller i fem år.", "d1", "smol", "too long", 0.5)]
    path = write_queries(tmp_path / "q.jsonl", items)
    assert read_queries(path) == items
    edited = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    edited[0]["query"] = "Hur länge gäller ett bygglov?"  # the user fixes a query...
    edited[1]["status"] = "kept"  # ...and keeps one the filter dropped
    edited[1]["query"] = "Gäller lovet fem år?"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in edited), encoding="utf-8")
    cfg = _config(tmp_path, pairs_file, tiny_st_model, tiny_llama, **{"synthetic.queries": 10, "synthetic.file": str(path)})
    data = _prepared(cfg)
    rows, report = synthetic_rows(data.train, data, cfg)
    added = {r["anchor"] for r in rows[len(data.train):]}
    assert added == {"Hur länge gäller ett bygglov?", "Gäller lovet fem år?"}
    assert report["used"] == 2 and report["synthetic_seconds"] == 1.0 and report["file"] == str(path)


def test_unlabeled_file_documents_and_transductive_count(tmp_path, pairs_file, tiny_st_model, tiny_llama):
    cfg0 = _config(tmp_path, pairs_file, tiny_st_model, tiny_llama)
    data = _prepared(cfg0)
    eval_doc = data.eval.corpus[next(iter(next(iter(data.eval.qrels.values()))))]
    unlabeled = tmp_path / "docs.csv"
    unlabeled.write_text(f"body\nnew document about roofs\n\"{eval_doc}\"\n\nnew document about roofs\n", encoding="utf-8")
    cfg = _config(tmp_path, pairs_file, tiny_st_model, tiny_llama, **{"data.unlabeled": str(unlabeled), "synthetic.queries": 5,
                                                                      "synthetic.text_column": "body"})
    assert synthetic.read_unlabeled(cfg) == ["new document about roofs", eval_doc]  # empty and repeated rows dropped
    _, report = synthetic_rows(data.train, data, cfg)
    assert report["documents"] == 2 and report["eval_documents"] == 1


def test_paraphrase_returns_one_text_per_input(tmp_path, pairs_file, tiny_st_model, tiny_llama):
    cfg = _config(tmp_path, pairs_file, tiny_st_model, tiny_llama)
    texts = ["how long is a permit valid", "can I build a fence"]
    out = synthetic.paraphrase(texts, cfg, seed=1)
    assert len(out) == 2 and all(isinstance(t, str) and t for t in out)
    assert synthetic.paraphrase(texts, cfg, seed=1) == out  # cached and seeded


# --------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written


def test_unlabeled_without_text_column_or_rows_is_refused(tmp_path, pairs_file, tiny_st_model, tiny_llama):
    no_column = tmp_path / "docs.jsonl"
    no_column.write_text('{"body": "a document"}\n', encoding="utf-8")
    cfg = _config(tmp_path, pairs_file, tiny_st_model, tiny_llama, **{"data.unlabeled": str(no_column), "synthetic.queries": 5})
    with pytest.raises(TunewiseError, match=r"data.unlabeled: .* no column 'text'.*synthetic.text_column"):
        synthetic.read_unlabeled(cfg)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    cfg.data.unlabeled = str(empty)
    with pytest.raises(TunewiseError, match="data.unlabeled: .* has no rows"):
        synthetic.read_unlabeled(cfg)


def test_a_generator_that_does_not_generate_is_refused(tiny_st_model, tiny_bert):
    with pytest.raises(TunewiseError, match="synthetic.generator: .* not a text generator"):
        gen.generator_kind(tiny_st_model)
    with pytest.raises(TunewiseError, match="synthetic.generator: .* not a text generator"):
        gen.generator_kind(str(tiny_bert))


def test_generator_kind_reads_the_config(tiny_llama, tiny_gpt2, tmp_path):
    from transformers import T5Config

    assert gen.generator_kind(tiny_llama)[1] == "causal"
    assert gen.generator_kind(tiny_gpt2)[1] == "causal"
    T5Config(vocab_size=32, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2,
             architectures=["T5ForConditionalGeneration"]).save_pretrained(tmp_path / "t5")
    assert gen.generator_kind(str(tmp_path / "t5"))[1] == "seq2seq"  # no weights needed to tell


@pytest.mark.parametrize("override, message", [
    ("synthetic.ratio=1.5", "synthetic.ratio: must be in"),
    ("synthetic.queries=-1", "synthetic.queries: must be"),
    ("synthetic.prompt=no placeholder", "synthetic.prompt: .*{document}"),
])
def test_bad_options(override, message):
    with pytest.raises(TunewiseError, match=message):
        load_config(None, [override])


def test_synthetic_on_another_task_is_refused():
    with pytest.raises(TunewiseError, match="synthetic.queries: task classification .* set it to 0"):
        load_config(None, ["task=classification", "synthetic.queries=10"])


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, pairs_file, tiny_st_model, tiny_bert):
    from typer.testing import CliRunner

    from tunewise.cli.app import app

    out = tmp_path / "queries.jsonl"
    base = ["synthesize", "--output", str(out), "--set", f"data.train={pairs_file}", "--set", f"model={tiny_st_model}",
            "--set", "synthetic.queries=10"]
    for extra in (["--set", f"synthetic.generator={tiny_bert}"], ["--set", "synthetic.ratio=2"],
                  ["--set", f"data.unlabeled={tmp_path / 'missing.csv'}"]):
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
        assert not out.exists()


def test_cli_writes_the_queries_file(tmp_path, pairs_file, tiny_st_model, tiny_llama):
    from typer.testing import CliRunner

    from tunewise.cli.app import app

    out = tmp_path / "queries.jsonl"
    result = CliRunner().invoke(app, ["synthesize", "--output", str(out), "--set", f"data.train={pairs_file}",
                                      "--set", f"model={tiny_st_model}", "--set", "synthetic.queries=10", "--set", "data.max_train=10",
                                      "--set", f"synthetic.generator={tiny_llama}", "--set", "synthetic.max_new_tokens=4"])
    assert result.exit_code == 0, result.output
    rows = read_queries(out)
    assert rows and {r.generator for r in rows} == {tiny_llama}
    assert all(r.status == KEPT or r.status for r in rows)
