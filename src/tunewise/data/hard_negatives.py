"""Hard negatives for text search, mined with the pre-trained model (``data.hard_negatives``).

Each training pair ``(anchor, positive)`` gets ``per_pair`` documents that the model, as
training starts, ranks close to the anchor but that are not among the anchor's known
positives: rows become ``{anchor, positive, negative_1 .. negative_n}``, which
MultipleNegativesRankingLoss and its cached variant score next to the in-batch negatives.

What may become a negative:

- the mining corpus is every document of the whole training set (a budget point's subset
  mines against all of it: the user holds those documents), plus ``data.unlabeled`` and
  ``data.hard_negatives.corpus``; a document of the evaluation or validation corpus that is
  not also a training document is never in it (the held-out answers stay unseen);
- never a known positive of the query: a query can have several positives, and spellings
  that differ only in case or spacing are one query (:func:`tunewise.data.retrieval.normalize`);
- the false-negative guard (``relative_margin`` / ``absolute_margin``) drops candidates that
  score nearly as high as the positive: likely unlabeled positives. ``range_min`` skips the
  closest candidates outright.

The search and the guard are sentence-transformers' :func:`~sentence_transformers.util.mine_hard_negatives`
(it excludes every positive of a repeated anchor). Results are cached on disk by the model's
weights, the settings and the corpus, per query: a budget sweep mines the whole training set
at its first point, and every later point (and run) reads its pairs' negatives back.

References: Moreira et al. 2024, NV-Retriever: Improving text embedding models with effective
hard-negative mining (arXiv:2407.15831): TopK-PercPos, the relative margin of 5%.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
import re
import time
import warnings
from pathlib import Path
from typing import Any

from tunewise.data.retrieval import column_map, normalize
from tunewise.errors import TunewiseError

FORMAT = "1"


def negative_columns(row: dict[str, Any]) -> list[str]:
    """The negative columns of a training row, in order: ``negative`` or ``negative_1 .. negative_n``."""
    return [key for key in row if key == "negative" or re.fullmatch(r"negative_\d+", key)]


def one_negative_per_row(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """``{anchor, positive, negative_1..n}`` rows as n triplets ``{anchor, positive, negative}`` each (TripletLoss)."""
    out = []
    for row in rows:
        for key in negative_columns(row):
            out.append({"anchor": row["anchor"], "positive": row["positive"], "negative": row[key]})
    return out


def extra_texts_per_example(config: Any) -> int:
    """Texts each training example adds to a step when mining is on (the memory planner counts them)."""
    hn = config.data.hard_negatives
    return hn.per_pair if hn.mine else 0


def _read_documents(path: str, option: str, config: Any) -> list[str]:
    from tunewise.data.readers import read_records, require_columns, text_value

    column = column_map(config.data)["text"]
    records = read_records(path, "auto", option=option)
    require_columns(records, {"text": column}, path)
    return [text_value(r, column, i, path) for i, r in enumerate(records)]


def mining_corpus(pool: list[dict[str, str]], data: Any, config: Any) -> tuple[list[str], int]:
    """The documents negatives may come from, and how many evaluation-only documents were kept out.

    Training documents (positives and given negatives of the whole training set), then the
    unlabeled ones (``data.unlabeled``, ``data.hard_negatives.corpus``) that are not documents
    of the evaluation or validation corpus.
    """
    training = [row[key] for row in pool for key in ("positive", *negative_columns(row))]
    extra: list[str] = []
    if getattr(config.data, "unlabeled", None):
        from tunewise.data.synthetic import read_unlabeled  # its reader: the column synthetic.text_column names

        extra += read_unlabeled(config)
    if config.data.hard_negatives.corpus:
        extra += _read_documents(config.data.hard_negatives.corpus, "data.hard_negatives.corpus", config)
    held_out = set(data.eval.corpus.values())
    if getattr(data, "validation", None) is not None:
        held_out |= set(data.validation.corpus.values())
    held_out -= set(training)
    kept = [doc for doc in extra if doc not in held_out]
    corpus = list(dict.fromkeys(training + kept))
    return corpus, len({doc for doc in extra if doc in held_out})


def known_positives(rows: list[dict[str, str]]) -> dict[str, set[str]]:
    """Normalized query -> every positive it has in ``rows``."""
    positives: dict[str, set[str]] = {}
    for row in rows:
        positives.setdefault(normalize(row["anchor"]), set()).add(row["positive"])
    return positives


def _entry(query: str, positives: set[str]) -> str:
    return hashlib.sha256(json.dumps([normalize(query), sorted(positives)]).encode()).hexdigest()[:32]


def _cache_path(model: Any, corpus: list[str], width: int, config: Any) -> Path:
    from tunewise.files import cache_root
    from tunewise.models.feature_cache import fingerprint, texts_fingerprint, weights_fingerprint

    hn = config.data.hard_negatives
    settings = {k: getattr(hn, k) for k in ("relative_margin", "absolute_margin", "range_min", "range_max", "sampling")}
    key = fingerprint(kind="hard-negatives", weights=weights_fingerprint(model), max_seq_length=model.max_seq_length,
                      width=width, seed=config.seed, settings=settings, corpus=texts_fingerprint(corpus), format=FORMAT)
    return cache_root() / "hard-negatives" / f"{key}.json"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("format") == FORMAT and isinstance(stored.get("entries"), dict):
            return stored
    except (OSError, ValueError):
        pass  # missing or damaged: mined again and rewritten
    return {"format": FORMAT, "entries": {}, "seconds": {}, "guard_dropped": {}}


def mine(queries: dict[str, set[str]], corpus: list[str], model: Any, width: int, config: Any) -> tuple[dict[str, list[str]], int]:
    """Negatives for each query (its text -> its known positives) with sentence-transformers' miner.

    Returns:
        (query -> up to ``width`` negatives, closest first; candidates the margin guard dropped).
    """
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    hn = config.data.hard_negatives
    pairs = [(q, p) for q, positives in queries.items() for p in sorted(positives)]
    dataset = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    state = random.getstate()
    random.seed(config.seed)  # sampling: random draws from Python's generator
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its statistics table warns on a single negative (std of one value)
            mined = mine_hard_negatives(
                dataset, model, anchor_column_name="anchor", positive_column_name="positive", corpus=corpus,
                range_min=hn.range_min, range_max=hn.range_max, relative_margin=hn.relative_margin,
                absolute_margin=hn.absolute_margin, num_negatives=width, sampling_strategy=hn.sampling,
                output_format="triplet", batch_size=config.eval.batch_size, verbose=True,
            )
    finally:
        random.setstate(state)
    # "Skipped 1,234 potential negatives (5.00%) due to the relative_margin of 0.05." (verbose statistics)
    dropped = sum(int(n.replace(",", "")) for n in re.findall(r"Skipped ([\d,]+) potential negatives .*?margin", printed.getvalue()))
    found: dict[str, list[str]] = {q: [] for q in queries}
    for anchor, negative in zip(mined["anchor"], mined["negative"]):
        if negative not in found[anchor]:  # a query with several positives lists its negatives once per positive
            found[anchor].append(negative)
    return found, dropped


def add_hard_negatives(rows: list[dict[str, str]], data: Any, config: Any, model: Any, report: dict[str, Any]) -> list[dict[str, str]]:
    """``rows`` with ``negative_1 .. negative_n`` mined for each (the last step of :func:`~tunewise.data.training_rows.search_rows`).

    A row that brings its own ``negative`` (triplets data) keeps it first. What mining did goes
    to ``report``: ``hard_negatives_seconds`` (what mining these rows' queries cost, also when
    the cache answered), ``hard_negatives_cached``, ``hard_negatives_mined``,
    ``hard_negatives_short_pairs`` (pairs filled up with random documents for want of
    candidates), ``hard_negatives_guard_dropped``, ``hard_negatives_corpus`` and
    ``hard_negatives_eval_documents_excluded``.

    Raises:
        TunewiseError: ``per_pair`` asks for more negatives than the corpus holds for a query.
    """
    hn = config.data.hard_negatives
    if not hn.mine or not rows:
        return rows
    if model is None:
        raise TunewiseError("data.hard_negatives.mine: this training path has no model to mine with; set it to false")
    pool = list(data.pool) if getattr(data, "pool", None) is not None else list(data.train)
    corpus, excluded = mining_corpus(pool, data, config)
    positives = known_positives(pool + rows)
    given = any("negative" in row for row in rows)
    width = hn.per_pair + int(given)  # rows without a given negative get one more mined
    if hn.range_max is not None and hn.range_max - hn.range_min < width:
        raise TunewiseError(f"data.hard_negatives.range_max: {hn.range_max} leaves fewer than {width} ranks after "
                            f"range_min={hn.range_min} (per_pair, plus one for rows without a given negative); raise it")
    _check_enough(positives, corpus, width, hn.range_min)

    canon: dict[str, str] = {}  # normalized query -> the spelling the model sees
    for row in pool + rows:
        canon.setdefault(normalize(row["anchor"]), row["anchor"])
    path = _cache_path(model, corpus, width, config)
    cache = _read_cache(path)
    entries = cache["entries"]
    wanted = {key: _entry(key, positives[key]) for key in dict.fromkeys(normalize(r["anchor"]) for r in rows)}
    cached = all(e in entries for e in wanted.values())
    if not cached:
        # first use: the whole training set (and these rows), so that every later subset reads them back
        todo = {key: _entry(key, positives[key]) for key in dict.fromkeys(normalize(r["anchor"]) for r in pool + rows)}
        todo = {key: e for key, e in todo.items() if e not in entries}
        from tunewise.tasks.progress import work_progress

        with work_progress(f"mining hard negatives ({len(todo)} queries, {len(corpus)} documents)", 1) as advance:
            mine_start = time.perf_counter()
            found, dropped = mine({canon[key]: positives[key] for key in todo}, corpus, model, width, config)
            advance(1)
        share = (time.perf_counter() - mine_start) / max(len(todo), 1)
        for key, e in todo.items():
            entries[e] = found[canon[key]]
            cache["seconds"][e] = share
            cache["guard_dropped"][e] = dropped / max(len(todo), 1)
        from tunewise.files import write_json

        write_json(path, cache)
    rng = random.Random(config.seed)
    out, mined_count, short = [], 0, 0
    for row in rows:
        key = normalize(row["anchor"])
        negatives = [row["negative"]] if "negative" in row else []
        for doc in entries[wanted[key]]:
            if len(negatives) == width:
                break
            if doc not in positives[key] and doc not in negatives:  # defensive: the miner already excludes them
                negatives.append(doc)
                mined_count += 1
        if len(negatives) < width:
            short += 1
            negatives += _filler(rng, corpus, positives[key] | set(negatives), width - len(negatives))
        base = {k: v for k, v in row.items() if k not in negative_columns(row)}
        out.append({**base, **{f"negative_{i}": doc for i, doc in enumerate(negatives, start=1)}})
    # the whole training set's mining (and these rows'), as it cost when it ran: cached or not
    used = set(_all_entries(pool, positives)) | set(wanted.values())
    report.update({
        "hard_negatives_seconds": round(sum(cache["seconds"].get(e, 0.0) for e in used), 4),
        "hard_negatives_cached": cached,
        "hard_negatives_mined": mined_count,
        "hard_negatives_short_pairs": short,
        "hard_negatives_guard_dropped": round(sum(cache["guard_dropped"].get(e, 0.0) for e in used)),
        "hard_negatives_per_pair": hn.per_pair,
        "hard_negatives_corpus": len(corpus),
        "hard_negatives_eval_documents_excluded": excluded,
    })
    return out


def _all_entries(pool: list[dict[str, str]], positives: dict[str, set[str]]) -> list[str]:
    return [_entry(key, positives[key]) for key in dict.fromkeys(normalize(r["anchor"]) for r in pool)]


def _filler(rng: random.Random, corpus: list[str], exclude: set[str], n: int) -> list[str]:
    """``n`` random documents outside ``exclude`` (as an in-batch negative would be)."""
    choices = [doc for doc in corpus if doc not in exclude]
    if len(choices) < n:
        raise TunewiseError(f"data.hard_negatives.per_pair: the mining corpus holds too few documents ({len(corpus)}) "
                            "to give every pair its negatives; lower per_pair or add documents (data.hard_negatives.corpus)")
    return rng.sample(choices, n)


def _check_enough(positives: dict[str, set[str]], corpus: list[str], per_pair: int, range_min: int) -> None:
    documents = set(corpus)
    query, own = max(positives.items(), key=lambda item: len(item[1] & documents))
    available = len(documents - own) - range_min
    if per_pair > available:
        raise TunewiseError(
            f"data.hard_negatives.per_pair: {per_pair} negatives per pair, but the mining corpus holds only {available} "
            f"documents that are not a positive of query '{query[:60]}'"
            + (f" (after range_min={range_min})" if range_min else "")
            + "; lower per_pair or add documents (data.hard_negatives.corpus)"
        )
