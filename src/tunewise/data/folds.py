"""k-fold splits that keep what belongs together on one side (``eval.folds``, ``--folds``).

Every item is held out exactly once. Items are split by *group*, never one by one: a query
with all its pairs (and every query sharing one of its answers), a chat prompt, an item
whose text appears twice. Classification folds are also stratified, so that every held-out
fold has about the class mix of the whole. The splitters are scikit-learn's
:class:`~sklearn.model_selection.GroupKFold` and :class:`~sklearn.model_selection.StratifiedGroupKFold`
(shuffled, seeded).

:func:`assign_folds` is the pure part (groups in, held-out indices out, bad K refused in one
line); :func:`retrieval_folds` and :func:`labeled_folds` build the tasks' data objects per fold,
exactly as their one-split ``prepare_data`` would have, with the fold as the held-out set.
A task offers folds through :class:`tunewise.tasks.base.SplitsFolds`.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from tunewise.errors import TunewiseError

OPTION = "--folds (eval.folds)"


@dataclass
class FoldSplits:
    """What a task's ``folds(config, k)`` returns.

    Args:
        folds: one data object per fold (the task's own type): ``train`` the other folds,
            ``eval`` this fold.
        everything: every item as training data, nothing held out (``--final-fit``).
        groups: how many groups the items formed.
        grouping: one line saying what a group is, for reports.
        stratified: whether the folds keep the class mix.
    """

    folds: list[Any]
    everything: Any
    groups: int
    grouping: str
    stratified: bool = False


def assign_folds(groups: Sequence[Hashable], k: int, seed: int, labels: Sequence[Hashable] | None = None, *,
                 what: str = "groups") -> list[list[int]]:
    """Split items into ``k`` held-out folds by group (stratified by ``labels`` when given).

    Args:
        groups: one group key per item; items of a group are always held out together.
        k: number of folds.
        seed: shuffles the groups (reproducible folds).
        labels: one class per item: the folds are stratified (every class needs ``k`` items).
        what: what a group is, for the error message ("queries", "items").

    Returns:
        ``k`` sorted lists of item indices; each item is in exactly one, and no group is split.

    Raises:
        TunewiseError: ``k`` below 2, more folds than groups, or (stratified) than the smallest class.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise TunewiseError(f"{OPTION}: must be a whole number of at least 2; got {k!r}")
    n_groups = len(set(groups))
    if k > n_groups:
        raise TunewiseError(f"{OPTION}: {k} folds need at least {k} {what}; the data has {n_groups}: "
                            f"lower --folds to {n_groups} or fewer")
    import numpy as np
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    ids = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    group_ids = np.array([ids[g] for g in groups])
    x = np.zeros((len(groups), 1))
    if labels is not None:
        counts = Counter(labels)
        smallest, n = min(counts.items(), key=lambda kv: (kv[1], str(kv[0])))
        if k > n:
            raise TunewiseError(f"{OPTION}: {k} stratified folds need at least {k} items in every class; "
                                f"class '{smallest}' has {n}: lower --folds to {n} or fewer, or add items to that class")
        label_ids = {c: i for i, c in enumerate(sorted(counts, key=str))}
        y = np.array([label_ids[c] for c in labels])
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(x, y, group_ids)
    else:
        # GroupKFold balances sizes; shuffling the group ids first makes the folds seeded, not file-ordered.
        order = np.random.default_rng(seed).permutation(len(ids))
        splits = GroupKFold(n_splits=k).split(x, None, order[group_ids])
    folds = [sorted(int(i) for i in held) for _, held in splits]
    if any(not fold for fold in folds):
        raise TunewiseError(f"{OPTION}: {k} folds leave one fold empty ({n_groups} {what}, grouped unevenly); lower --folds")
    return folds


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def query_groups(items: Sequence[tuple[str, ...]]) -> list[str]:
    """One group per connected set of queries and positives: a query, all its pairs, every
    query sharing one of its answers (and theirs). Compared as :func:`~tunewise.data.retrieval.normalize` does."""
    from tunewise.data.retrieval import normalize

    uf = _UnionFind()
    for item in items:
        uf.union("q:" + normalize(item[0]), "d:" + item[1])
    return [uf.find("q:" + normalize(item[0])) for item in items]


def text_groups(texts: Sequence[str]) -> list[str]:
    """One group per distinct text (case and spacing folded): a repeated item stays on one side."""
    from tunewise.data.retrieval import normalize

    return [normalize(t) for t in texts]


def _no_eval_files(cfg: Any) -> None:
    if cfg.eval_queries:
        raise TunewiseError(f"{OPTION}: data.eval_queries gives a fixed evaluation set, and folds hold out parts of data.train "
                            "instead; drop the eval files (data.eval_queries, eval_corpus, eval_qrels) or --folds")


def retrieval_folds(config: Any, k: int) -> FoldSplits:
    """The embedding task's folds: pairs/triplets grouped by query and shared answers; labeled items
    grouped by text and stratified by label. The corpus searched is built as in the one-split run."""
    from tunewise.data.retrieval import (
        IRDataset,
        RetrievalData,
        pairs_from_labels,
        read_items,
        split_labeled_items,
        split_pair_items,
        validation_config,
    )

    cfg, seed = config.data, config.seed
    _no_eval_files(cfg)
    items, skipped = read_items(cfg)
    labeled = cfg.kind == "labeled"
    if labeled:
        from tunewise.data.labeled import check_classes

        check_classes([it[1] for it in items], str(cfg.train))
        groups, labels, what = text_groups([it[0] for it in items]), [it[1] for it in items], "distinct texts"
    else:
        groups, labels, what = query_groups(items), None, "query groups (a query with its answers)"
    held_out = assign_folds(groups, k, seed, labels, what=what)
    need_validation = config.train.early_stopping_patience is not None

    def rows_of(train_items: list[tuple[str, ...]]) -> list[dict[str, str]]:
        if labeled:
            return pairs_from_labels(train_items, random.Random(seed))
        return [dict(zip(["anchor", "positive", "negative"], item)) for item in train_items]

    def build(train_items: list[tuple[str, ...]], eval_ds: IRDataset, fold: int | None) -> RetrievalData:
        if cfg.max_train is not None and len(train_items) > cfg.max_train:
            keep = sorted(random.Random(seed).sample(range(len(train_items)), cfg.max_train))
            train_items = [train_items[i] for i in keep]
        validation = None
        if need_validation:
            split = split_labeled_items if labeled else split_pair_items
            train_items, validation = split(train_items, validation_config(cfg), seed + 1, None)
        rows = rows_of(train_items)
        if len(rows) < 2:
            raise TunewiseError(f"{OPTION}: fold {fold} leaves {len(rows)} training rows; need at least 2 (lower --folds or add data)")
        report = {"kind": cfg.kind, "items_read": len(items), "train_examples": len(rows),
                  "eval_queries": len(eval_ds.queries), "eval_corpus": len(eval_ds.corpus),
                  "validation_queries": len(validation.queries) if validation else 0,
                  "leaked_queries": 0, "leaked_removed": False, "leaked_examples": [], "fold": fold, "folds": k}
        if labeled:
            report["skipped_missing_labels"] = skipped
        return RetrievalData(rows, eval_ds, validation, report)

    folds = []
    if labeled:
        for n, held in enumerate(held_out, 1):
            held_set = set(held)
            kept = [i for i in range(len(items)) if i not in held_set]
            by_label: dict[str, list[str]] = defaultdict(list)
            for i in kept:
                by_label[items[i][1]].append(f"d{i}")
            eval_ds = IRDataset({f"q{i}": items[i][0] for i in held}, {f"d{i}": items[i][0] for i in kept},
                                {f"q{i}": {d: 1 for d in by_label.get(items[i][1], [])} for i in held})
            folds.append(build([items[i] for i in kept], eval_ds, n))
    else:
        doc_ids: dict[str, str] = {}
        for item in items:
            for text in item[1:]:
                doc_ids.setdefault(text, f"d{len(doc_ids)}")
        corpus = {d: t for t, d in doc_ids.items()}
        from tunewise.data.retrieval import normalize

        for n, held in enumerate(held_out, 1):
            by_query: dict[str, list[int]] = defaultdict(list)
            for i in held:
                by_query[normalize(items[i][0])].append(i)
            queries, qrels = {}, {}
            for q, rows in enumerate(by_query.values()):
                queries[f"q{q}"] = items[rows[0]][0]
                qrels[f"q{q}"] = {doc_ids[items[i][1]]: 1 for i in rows}
            held_set = set(held)
            folds.append(build([it for i, it in enumerate(items) if i not in held_set], IRDataset(queries, dict(corpus), qrels), n))
    everything = build(list(items), IRDataset({}, {}, {}), None)  # --final-fit: nothing is held out
    return FoldSplits(folds, everything, len(set(groups)), f"{len(set(groups))} {what}", stratified=labeled)


def labeled_folds(items: list[Any], names: list[str], config: Any, k: int, source: str, *,
                  groups: Sequence[Hashable] | None = None, what: str = "distinct items") -> FoldSplits:
    """Stratified, grouped folds of labeled items (classification): ``LabeledData`` per fold.

    Args:
        items: texts or image paths, one per item.
        names: their class names.
        groups: one group key per item (default: the item itself, so duplicates stay together).
        what: what a group is, for messages.
    """
    from tunewise.data.labeled import LabeledData, check_classes, stratified_split

    cfg, seed = config.data, config.seed
    _no_eval_files(cfg)
    classes = check_classes(names, source)
    index = {c: i for i, c in enumerate(classes)}
    labels = [index[c] for c in names]
    groups = list(groups) if groups is not None else [str(it) for it in items]
    held_out = assign_folds(groups, k, seed, list(names), what=what)
    need_validation = config.train.early_stopping_patience is not None

    def build(train_idx: list[int], eval_idx: list[int], fold: int | None) -> LabeledData:
        if cfg.max_train is not None and len(train_idx) > cfg.max_train:
            train_idx = sorted(random.Random(seed).sample(train_idx, cfg.max_train))
        val_idx: list[int] = []
        if need_validation:
            keep, val = stratified_split([labels[i] for i in train_idx], cfg.validation_fraction, None, seed + 1)
            train_idx, val_idx = [train_idx[i] for i in keep], [train_idx[i] for i in val]
        data = LabeledData(
            train=[items[i] for i in train_idx], train_labels=[labels[i] for i in train_idx],
            eval=[items[i] for i in eval_idx], eval_labels=[labels[i] for i in eval_idx], classes=classes,
            validation=[items[i] for i in val_idx] if need_validation else None,
            validation_labels=[labels[i] for i in val_idx] if need_validation else None,
        )
        data.report = {"kind": "labeled", "items_read": len(items), "classes": len(classes),
                       "train_examples": len(train_idx), "eval_items": len(eval_idx), "validation_items": len(val_idx),
                       "smallest_class": min(Counter(names).values()),
                       "skipped_missing_labels": getattr(names, "skipped_missing", 0), "fold": fold, "folds": k}
        return data

    folds = []
    for n, held in enumerate(held_out, 1):
        held_set = set(held)
        folds.append(build([i for i in range(len(items)) if i not in held_set], held, n))
    everything = build(list(range(len(items))), [], None)
    return FoldSplits(folds, everything, len(set(groups)), f"{len(set(groups))} {what}, stratified by class", stratified=True)

