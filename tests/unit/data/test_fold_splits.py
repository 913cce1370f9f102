"""k-fold splits: every item held out once, no group on both sides, classes stratified, bad K refused."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from tunewise.config import load_config
from tunewise.data.folds import assign_folds, labeled_folds, query_groups, retrieval_folds, text_groups
from tunewise.data.retrieval import normalize
from tunewise.errors import TunewiseError


def _check_partition(folds: list[list[int]], groups: list, n: int) -> None:
    held = [i for fold in folds for i in fold]
    assert sorted(held) == list(range(n))  # every item held out exactly once
    side = {}
    for f, fold in enumerate(folds):
        for i in fold:
            assert side.setdefault(groups[i], f) == f  # a group is never split across folds


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_group_folds_hold_every_item_out_once_and_never_split_a_group(seed):
    rng = random.Random(seed)
    groups = [rng.randrange(23) for _ in range(100)]
    folds = assign_folds(groups, 5, seed)
    assert len(folds) == 5 and all(folds)
    _check_partition(folds, groups, 100)
    assert assign_folds(groups, 5, seed) == folds  # seeded: the same folds again


def test_group_folds_depend_on_the_seed_not_the_file_order():
    groups = list(range(40))
    assert assign_folds(groups, 4, 0) != assign_folds(groups, 4, 1)
    # without shuffling, GroupKFold would put the first groups of the file together
    assert assign_folds(groups, 4, 0)[0] != list(range(10))


def test_stratified_folds_keep_the_class_mix_and_groups_whole():
    rng = random.Random(3)
    labels = ["a"] * 40 + ["b"] * 20 + ["c"] * 10
    groups = [f"{lab}{rng.randrange(15)}" for lab in labels]  # duplicates of a text share a group
    folds = assign_folds(groups, 5, 0, labels)
    _check_partition(folds, groups, len(labels))
    for fold in folds:
        counts = Counter(labels[i] for i in fold)
        assert set(counts) == {"a", "b", "c"}  # every class is held out in every fold
        assert abs(counts["a"] / len(fold) - 40 / 70) < 0.2


def test_bad_k_is_one_line_naming_the_option_and_the_numbers():
    with pytest.raises(TunewiseError, match=r"--folds \(eval.folds\): must be a whole number of at least 2; got 1"):
        assign_folds([1, 2, 3], 1, 0)
    with pytest.raises(TunewiseError, match=r"6 folds need at least 6 queries; the data has 3: lower --folds to 3"):
        assign_folds([1, 1, 2, 2, 3, 3], 6, 0, what="queries")
    with pytest.raises(TunewiseError, match=r"4 stratified folds need at least 4 items in every class; class 'b' has 3"):
        assign_folds(list(range(9)), 4, 0, ["a"] * 6 + ["b"] * 3)


def test_query_groups_join_queries_that_share_an_answer():
    items = [("What is a permit?", "A"), ("what is a  PERMIT?", "B"),  # same query (normalised): one group
             ("Who signs?", "B"),  # shares answer B with the first query: the same group
             ("Where?", "C"), ("When?", "D")]
    groups = query_groups(items)
    assert groups[0] == groups[1] == groups[2]
    assert len({groups[0], groups[3], groups[4]}) == 3


def test_text_groups_fold_case_and_spacing():
    assert text_groups(["A  b", "a b", "c"]) == ["a b", "a b", "c"]


def _config(path, *extra):
    return load_config(None, [f"data.train={path}", *extra])


def test_retrieval_folds_hold_out_each_query_once_and_search_every_answer(tmp_path):
    rows = [{"query": f"question {i % 30}", "positive": f"answer {i % 40}"} for i in range(60)]
    rows.append({"query": "QUESTION 3", "positive": "answer 99"})  # the same query in another case
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    splits = retrieval_folds(_config(path), 4)
    assert len(splits.folds) == 4
    seen: list[str] = []
    answers = {r["positive"] for r in rows}
    for data in splits.folds:
        held = {normalize(q) for q in data.eval.queries.values()}
        trained = {normalize(r["anchor"]) for r in data.train}
        assert not held & trained  # no query on both sides
        assert not {r["positive"] for r in data.train} & {data.eval.corpus[d] for rel in data.eval.qrels.values() for d in rel}
        assert set(data.eval.corpus.values()) == answers  # every answer is searched, as in a one-split run
        seen += held
    assert sorted(seen) == sorted({normalize(r["query"]) for r in rows})  # every query held out exactly once
    assert len(splits.everything.train) == len(rows) and splits.everything.eval.queries == {}


def test_retrieval_folds_refuse_fixed_eval_files(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"query": "q", "positive": "a"}) + "\n")
    cfg = _config(path, f"data.eval_queries={path}", f"data.eval_corpus={path}", f"data.eval_qrels={path}")
    with pytest.raises(TunewiseError, match="data.eval_queries gives a fixed evaluation set"):
        retrieval_folds(cfg, 3)


def test_labeled_folds_are_stratified_and_keep_duplicates_together(tmp_path):
    texts = [f"text {i % 25}" for i in range(30)]  # five texts appear twice
    names = ["x" if i % 3 else "y" for i in range(30)]
    cfg = load_config(None, ["task=classification", "data.train=unused.csv"])
    splits = labeled_folds(texts, names, cfg, 5, "d.csv", groups=text_groups(texts))
    held = [t for d in splits.folds for t in d.eval]
    assert sorted(held) == sorted(texts)
    for data in splits.folds:
        assert not set(data.eval) & set(data.train)
        assert set(data.eval_labels) == {0, 1} and data.classes == ["x", "y"]
    with pytest.raises(TunewiseError, match="class 'y' has 10"):
        labeled_folds(texts, names, cfg, 11, "d.csv")
