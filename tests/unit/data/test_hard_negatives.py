"""Mined hard negatives (data.hard_negatives): what may and may not become a negative, the cache, bad input."""

from __future__ import annotations

import json
import re

import pytest
from rich.console import Console

import tunewise
import tunewise.data.hard_negatives as hn_module
from tunewise.config import load_config
from tunewise.data.hard_negatives import add_hard_negatives, one_negative_per_row
from tunewise.data.retrieval import IRDataset, RetrievalData
from tunewise.errors import TunewiseError
from tunewise.tasks.embedding_losses import LOSSES, rows_for_loss

from conftest import make_pairs  # noqa: E402
from tiny_models import write_jsonl  # noqa: E402

# Two queries with several positives; one is spelled twice (case and spacing differ: one query).
ROWS = [
    {"anchor": "How long does a roof permit take?", "positive": "roof permits take six weeks"},
    {"anchor": "how long does a  roof permit take?", "positive": "the roof office answers in a month"},
    {"anchor": "Who checks the fence?", "positive": "the fence inspector checks it"},
    {"anchor": "Who checks the fence?", "positive": "neighbours may check a fence"},
    {"anchor": "Is solar allowed?", "positive": "solar panels are allowed on roofs"},
    {"anchor": "Can I build a shed?", "positive": "a small shed needs no permit"},
    {"anchor": "What about drainage?", "positive": "drainage must reach the street"},
]
EVAL_ONLY = "the held-out answer about chimneys"


@pytest.fixture(scope="module")
def model(tiny_st_model):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(tiny_st_model, device="cpu")


def data_for(rows, pool=None):
    eval_ds = IRDataset({"q0": "a chimney question"}, {"d0": EVAL_ONLY, "d1": rows[0]["positive"]}, {"q0": {"d0": 1}})
    return RetrievalData(list(rows), eval_ds, pool=pool)


def config_for(tmp_path, *extra):
    return load_config(None, [f"data.train={tmp_path / 'unused.jsonl'}", "data.hard_negatives.mine=true",
                              "data.hard_negatives.relative_margin=null", *extra])


def test_known_positives_and_eval_only_documents_never_become_negatives(model, tmp_path):
    extra = tmp_path / "extra.jsonl"
    write_jsonl(extra, [{"text": EVAL_ONLY}, {"text": "balconies need a railing"}, {"text": ROWS[2]["positive"]}])
    # every candidate the corpus holds for the roof query: 8 documents - 2 positives
    cfg = config_for(tmp_path, "data.hard_negatives.per_pair=6", f"data.hard_negatives.corpus={extra}")
    report: dict = {}
    rows = add_hard_negatives(ROWS, data_for(ROWS), cfg, model, report)
    assert len(rows) == len(ROWS) and list(rows[0]) == ["anchor", "positive", *(f"negative_{i}" for i in range(1, 7))]
    own = {0: {ROWS[0]["positive"], ROWS[1]["positive"]}, 1: {ROWS[0]["positive"], ROWS[1]["positive"]},
           2: {ROWS[2]["positive"], ROWS[3]["positive"]}, 3: {ROWS[2]["positive"], ROWS[3]["positive"]}}
    for i, row in enumerate(rows):
        negatives = [row[f"negative_{k}"] for k in range(1, 7)]
        assert len(set(negatives)) == 6
        assert not set(negatives) & own.get(i, {ROWS[i]["positive"]})  # no positive of the query, in any spelling
        assert EVAL_ONLY not in negatives  # an evaluation-only document is never mined
    assert "balconies need a railing" in {r[k] for r in rows for k in r if k.startswith("negative_")}  # unlabeled: mined
    # 7 training documents + 1 unlabeled; the roof query has exactly its 6 non-positives: nothing short
    assert report["hard_negatives_eval_documents_excluded"] == 1 and report["hard_negatives_corpus"] == 8
    assert report["hard_negatives_mined"] == 6 * len(ROWS) and report["hard_negatives_short_pairs"] == 0
    assert report["hard_negatives_cached"] is False and report["hard_negatives_seconds"] > 0


def test_a_budget_subset_reads_the_whole_sets_negatives_from_the_cache(model, tmp_path, monkeypatch):
    calls = []
    real = hn_module.mine

    def counting(queries, *args, **kwargs):
        calls.append(len(queries))
        return real(queries, *args, **kwargs)

    monkeypatch.setattr(hn_module, "mine", counting)
    cfg = config_for(tmp_path, "data.hard_negatives.per_pair=2", "seed=7")
    first: dict = {}
    full = add_hard_negatives(ROWS, data_for(ROWS), cfg, model, first)
    subset = [ROWS[2], ROWS[5]]
    second: dict = {}
    part = add_hard_negatives(subset, data_for(subset, pool=ROWS), cfg, model, second)
    assert calls == [5]  # the five distinct queries of the whole set, once
    assert second["hard_negatives_cached"] is True
    assert second["hard_negatives_seconds"] == pytest.approx(first["hard_negatives_seconds"])  # full cost, also cached
    assert part == [full[2], full[5]]  # the subset's pairs get the whole set's negatives
    # other settings are another cache entry
    add_hard_negatives(subset, data_for(subset, pool=ROWS), config_for(tmp_path, "data.hard_negatives.per_pair=1"), model, {})
    assert len(calls) == 2


def test_too_many_negatives_per_pair_is_refused_in_one_line(model, tmp_path):
    cfg = config_for(tmp_path, "data.hard_negatives.per_pair=6")  # 7 documents - 2 positives of the roof query
    with pytest.raises(TunewiseError, match=r"data\.hard_negatives\.per_pair: 6 negatives per pair.*only 5 documents") as err:
        add_hard_negatives(ROWS, data_for(ROWS), cfg, model, {})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("data.hard_negatives.per_pair=0", "per_pair: must be at least 1"),
    ("data.hard_negatives.sampling=topk", "sampling: unknown 'topk'"),
    ("data.hard_negatives.mines=true", "unknown config key 'data.hard_negatives.mines' (did you mean 'mine'?)"),
    ("data.hard_negatives.range_max=2", "range_max: 2 leaves fewer than per_pair=3"),
])
def test_bad_options_are_refused(override, message):
    with pytest.raises(TunewiseError, match=re.escape(message)):
        load_config(None, ["data.hard_negatives.per_pair=3", override])


def test_mining_is_refused_for_a_task_that_is_not_text_search():
    with pytest.raises(TunewiseError, match="data.hard_negatives.mine: task classification"):
        load_config(None, ["task=classification", "data.hard_negatives.mine=true"])


def test_losses_use_mined_negatives():
    rows = [{"anchor": "q", "positive": "p", "negative_1": "n1", "negative_2": "n2"},
            {"anchor": "r", "positive": "s", "negative_1": "n3", "negative_2": "n4"}]
    cfg = load_config(None, []).train
    assert rows_for_loss(LOSSES.get("mnrl"), "mnrl", rows, cfg, 0) == rows
    assert rows_for_loss(LOSSES.get("triplet"), "triplet", rows, cfg, 0) == one_negative_per_row(rows)
    assert len(one_negative_per_row(rows)) == 4
    scored = rows_for_loss(LOSSES.get("contrastive"), "contrastive", rows, cfg, 0)
    assert [(r["sentence2"], r["label"]) for r in scored[:3]] == [("p", 1), ("n1", 0), ("n2", 0)]


def test_memory_planner_counts_the_negatives():
    from tunewise.memory.runs import run_settings

    cfg = load_config(None, ["data.hard_negatives.mine=true", "data.hard_negatives.per_pair=3", "train.max_seq_length=32"])
    assert run_settings(cfg, None, "cpu")["texts_per_example"] == 5


@pytest.mark.slow
def test_fit_with_mined_negatives_runs_end_to_end(tiny_st_model, tmp_path, monkeypatch):
    mined = []
    real = hn_module.add_hard_negatives

    def recording(rows, data, config, model, report):
        out = real(rows, data, config, model, report)
        mined.append((out, dict(report)))
        return out

    monkeypatch.setattr(hn_module, "add_hard_negatives", recording)
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, [{"query": r["query"], "positive": r["positive"]} for r in make_pairs()])
    cfg = load_config(None, [f"model={tiny_st_model}", f"data.train={pairs}", f"output_dir={tmp_path / 'run'}",
                             "train.epochs=1", "train.batch_size=8", "train.learning_rate=1e-3",
                             "data.hard_negatives.mine=true", "data.hard_negatives.per_pair=2"])
    result = tunewise.fit(cfg, console=Console(quiet=True))
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert metrics["train"]["examples"] == 48 and metrics["train"]["steps"] > 0  # no-duplicates batches with negatives
    (rows, report), = mined
    assert len(rows) == 48 and {"negative_1", "negative_2"} <= set(rows[0])
    assert all(len({r["positive"], r["negative_1"], r["negative_2"]}) == 3 for r in rows)
    assert report["hard_negatives_cached"] is False and report["hard_negatives_per_pair"] == 2


def test_head_strategy_trains_on_mined_negatives(tiny_st_model, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, [{"query": r["query"], "positive": r["positive"]} for r in make_pairs()])
    result = tunewise.fit({"model": tiny_st_model, "output_dir": str(tmp_path / "run"), "data": {
        "train": str(pairs), "hard_negatives": {"mine": True, "per_pair": 2}}, "train": {"epochs": 1, "batch_size": 8},
        "strategy": {"name": "head"}}, console=Console(quiet=True))
    levers = result.metrics["strategy"]["details"]["levers"]
    assert levers["hard_negatives_per_pair"] == 2 and levers["hard_negatives_mined"] + 2 * levers["hard_negatives_short_pairs"] == 96
