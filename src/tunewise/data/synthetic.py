"""Synthetic training queries for documents that have none: the embedding task's first data lever.

A user with 50 labeled (query, document) pairs usually has many more documents. For each
document without a labeled query (``data.unlabeled``, else the training documents the current
labeled subset does not cover), a small generator (default: the packaged SmolLM2-135M-Instruct)
writes ``synthetic.per_document`` search queries. They are cleaned and deduplicated (empty, too
long, copying the document, or repeating another query: dropped), then checked by round trip
(``synthetic.filter_top_k``): the model as training starts must rank the source document in the
top k, which drops queries the document does not answer. At most ``synthetic.queries`` kept
pairs (and at most ``synthetic.ratio`` of the training mix) join the labeled rows.

Documents relevant to an evaluation or validation query never get queries unless the user put
them in ``data.unlabeled``; then the report counts them (``eval_documents``: transductive).

References:
    Nogueira et al., "Document Expansion by Query Prediction" (doc2query), 2019.
    Dai et al., "Promptagator: Few-shot Dense Retrieval From 8 Examples" (round-trip filtering), 2022.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunewise.data.readers import read_records, text_value
from tunewise.errors import TunewiseError, did_you_mean

QUERY_PROMPT = ("Text: {document}\n\nWrite one short question in {language} that someone would type into a search box "
                "and that the text above answers. Reply with the question only.")
SEQ2SEQ_PROMPT = "{document}"
PARAPHRASE_PROMPT = ("Rewrite this question in other words, in {language}, keeping its meaning. Reply with the "
                     "rewritten question only.\n\nQuestion: {document}")
UNKNOWN_LANGUAGE = "the document's language"
MAX_DOCUMENT_CHARS = 600  # the prompt carries the document's start: a query needs its topic, not all of it
KEPT = "kept"
OVERGENERATE = 2  # documents sampled per synthetic query asked for: the filters drop some

# A few hundred characters of function words tell the common languages apart well enough to ask
# a generator for the right one; anything else is "the document's language".
_STOPWORDS = {
    "Swedish": "och att det som en på är för med inte av till den har de om ett kan jag så var men ska vid eller",
    "English": "the and of to in is that for it with as on are be this by or not you can your have",
    "German": "der die und das ist nicht zu den von mit sich des auf für ein eine dem auch es werden",
    "French": "le la les et des est une un du pour que dans pas qui sur au avec ce sont par",
    "Spanish": "el la de que y en los las del se por un una para con no es al lo como más",
    "Danish": "og at det som en på er for med ikke af til den har de om et kan jeg så var men skal",
    "Norwegian": "og at det som en på er for med ikke av til den har de om et kan jeg så var men skal ikkje",
    "Dutch": "de het een en van is dat op te in niet zijn voor met die er aan ook als",
}


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    evaluated: bool = False  # relevant to an evaluation or validation query (transductive)


@dataclass
class SyntheticQuery:
    """One generated query and what became of it: one line of the queries file."""

    query: str
    document: str
    document_id: str
    generator: str
    status: str = KEPT  # "kept", or the reason it was dropped
    seconds: float = 0.0  # this query's share of generation time


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _doc_id(text: str) -> str:
    return "sha-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def detect_language(texts: list[str]) -> str:
    """The language most of ``texts`` is written in (by function words), else "the document's language"."""
    words = Counter(w for t in texts[:200] for w in re.findall(r"[^\W\d_]+", t.casefold()))
    total = sum(words.values()) or 1
    scores = {lang: sum(words[w] for w in stop.split()) / total for lang, stop in _STOPWORDS.items()}
    best = max(scores, key=scores.get)
    return best if scores[best] >= 0.08 else UNKNOWN_LANGUAGE


# --------------------------------------------------------------------------------------
# Which documents get queries


def read_unlabeled(config: Any) -> list[str]:
    """The distinct document texts of ``data.unlabeled`` (column ``synthetic.text_column``).

    Raises:
        TunewiseError: missing or empty file, no such column, or no text in it.
    """
    return [d.text for d in _unlabeled_documents(config)]


def _unlabeled_documents(config: Any) -> list[Document]:
    path = config.data.unlabeled
    records = read_records(path, "auto", option="data.unlabeled")
    column = config.synthetic.text_column
    available = list(records[0].keys())
    if column not in available:
        raise TunewiseError(f"data.unlabeled: {path} has no column '{column}'{did_you_mean(column, available)}; columns are: "
                            f"{', '.join(map(str, available))}. Set synthetic.text_column to the one holding the documents")
    docs: dict[str, Document] = {}
    for i, record in enumerate(records):
        text = text_value(record, column, i, path, allow_empty=True)
        if text and text not in docs:
            given = record.get("id")
            docs[text] = Document(str(given) if given not in (None, "") else _doc_id(text), text)
    if not docs:
        raise TunewiseError(f"data.unlabeled: {path} has no text in column '{column}'; give documents or remove data.unlabeled")
    return list(docs.values())


def _evaluated_texts(data: Any) -> set[str]:
    """Documents judged relevant to an evaluation or validation query (normalised text)."""
    out: set[str] = set()
    for ds in (getattr(data, "eval", None), getattr(data, "validation", None)):
        if ds is not None:
            out.update(normalize(ds.corpus[d]) for rel in ds.qrels.values() for d in rel if d in ds.corpus)
    return out


def documents_for(rows: list[dict[str, str]], data: Any, config: Any) -> list[Document]:
    """The documents that get synthetic queries: ``data.unlabeled``, else uncovered training documents.

    Training documents (every positive of the training file, beyond ``data.max_train`` too) count
    when no labeled row of ``rows`` has them as positive and no evaluation query has them as answer.
    """
    evaluated = _evaluated_texts(data)
    if config.data.unlabeled:
        return [Document(d.id, d.text, normalize(d.text) in evaluated) for d in _unlabeled_documents(config)]
    if config.data.kind not in ("pairs", "triplets") or not config.data.train:
        return []
    from tunewise.data.retrieval import load_items

    covered = {normalize(r["positive"]) for r in rows} | evaluated
    ids = {normalize(t): i for i, t in getattr(getattr(data, "eval", None), "corpus", {}).items()}
    docs: dict[str, Document] = {}
    for item in load_items(config.data):
        key = normalize(item[1])
        if key not in covered and key not in docs:
            docs[key] = Document(ids.get(key) or _doc_id(item[1]), item[1])
    return list(docs.values())


# --------------------------------------------------------------------------------------
# Generation, cleaning, round trip


def _settings(config: Any, template: str, language: str, *, per_input: int | None = None, seed: int | None = None):
    from tunewise.models.generator import GenerationSettings

    syn = config.synthetic
    return GenerationSettings(template=template, language=language, per_input=per_input or syn.per_document,
                              max_new_tokens=syn.max_new_tokens, temperature=float(syn.temperature),
                              seed=seed if seed is not None else _seed(config),
                              batch_size=syn.batch_size)


def _seed(config: Any) -> int:
    return config.synthetic.seed if config.synthetic.seed is not None else config.seed


def _template(config: Any, kind: str) -> str:
    return config.synthetic.prompt or (SEQ2SEQ_PROMPT if kind == "seq2seq" else QUERY_PROMPT)


_LABEL = re.compile(r"^\s*(?:[-*•\d.)]+\s*)?(?:question|query|fråga|frage|pregunta|q)\s*[:：]\s*", re.IGNORECASE)


def clean_query(raw: str) -> str:
    """The query in a generator's reply: its first non-empty line, without a "Question:" label or quotes."""
    line = next((ln for ln in raw.splitlines() if ln.strip()), "")
    line = _LABEL.sub("", line).strip().strip("\"'“”«»`").strip()
    return re.sub(r"\s+", " ", line)


def screen(query: str, document: str, seen: set[str], max_words: int) -> str:
    """Why a cleaned query is dropped ("" when it is kept); adds a kept query to ``seen``."""
    q, d = normalize(query), normalize(document)
    if not q.strip("?!.,;: "):
        return "empty"
    if len(q.split()) > max_words:
        return "too long"
    if q == d or d in q:
        return "copies the document"
    if q in seen:
        return "duplicate"
    seen.add(q)
    return ""


def round_trip(model: Any, queries: list[str], sources: list[int], pool: list[str], k: int, batch_size: int = 64) -> list[bool]:
    """Whether ``model`` ranks each query's source document (an index into ``pool``) in its top ``k``.

    Ties count against the source (a query that scores every document the same is not kept).
    """
    import torch

    if not queries:
        return []
    enc = dict(convert_to_tensor=True, normalize_embeddings=True, batch_size=batch_size, show_progress_bar=False)
    q = model.encode(queries, **enc).float().cpu()  # (queries, dim)
    d = model.encode(pool, **enc).float().cpu()  # (pool, dim)
    scores = q @ d.T  # (queries, pool)
    own = scores[torch.arange(len(queries)), torch.tensor(sources)]
    rank = (scores >= own[:, None]).sum(dim=1) - 1  # documents scoring at least as high, the source excluded
    return [bool(r < k) for r in rank.tolist()]


def synthesize(rows: list[dict[str, str]], data: Any, config: Any, model: Any = None) -> tuple[list[SyntheticQuery], dict[str, Any]]:
    """Generate, clean and round-trip filter queries for :func:`documents_for`'s documents.

    Args:
        rows: the labeled training rows (their queries count as seen: a copy is a duplicate).
        model: the encoder as training starts, for the round trip (None: no round trip).

    Returns:
        Every generated query with its status, and a report (seconds, cache, counts by reason).
    """
    from tunewise.models.generator import generate, generator_kind

    syn = config.synthetic
    docs = documents_for(rows, data, config)
    if len(docs) * syn.per_document > OVERGENERATE * syn.queries:  # a seeded sample: a larger budget extends it (cache)
        random.Random(_seed(config)).shuffle(docs)
        docs = docs[:-(-OVERGENERATE * syn.queries // syn.per_document)]
    report: dict[str, Any] = {"documents": len(docs), "eval_documents": sum(d.evaluated for d in docs)}
    if not docs:
        return [], {**report, "synthetic_seconds": 0.0, "synthetic_cached": True, "generated": 0}
    source, kind = generator_kind(syn.generator)
    language = syn.language or detect_language([d.text for d in docs])
    settings = _settings(config, _template(config, kind), language)
    result = generate([d.text[:MAX_DOCUMENT_CHARS] for d in docs], syn.generator, settings, description="synthetic queries")
    seen = {normalize(r["anchor"]) for r in rows}
    items: list[SyntheticQuery] = []
    for doc, outputs in zip(docs, result.outputs):
        for raw in outputs:
            query = clean_query(raw)
            reason = screen(query, doc.text, seen, max_words=3 * syn.max_new_tokens)
            items.append(SyntheticQuery(query or raw, doc.text, doc.id, source, reason or KEPT))
    per_query = result.seconds / max(1, len(items))
    for item in items:
        item.seconds = per_query
    if syn.filter_top_k and model is not None:
        kept = [i for i in items if i.status == KEPT]
        pool = list(dict.fromkeys([d.text for d in docs] + [r["positive"] for r in rows]))
        index = {t: n for n, t in enumerate(pool)}
        ok = round_trip(model, [i.query for i in kept], [index[i.document] for i in kept], pool, syn.filter_top_k)
        for item, passed in zip(kept, ok):
            if not passed:
                item.status = f"round trip: source not in top {syn.filter_top_k}"
    report.update(synthetic_seconds=round(result.seconds, 3), synthetic_cached=result.paid_seconds == 0.0,
                  generated=len(items), language=language, generator=source)
    return items, report


# --------------------------------------------------------------------------------------
# The queries file, and the rows training gets


def write_queries(path: str | Path, items: list[SyntheticQuery]) -> Path:
    """The queries file: one JSON object per line, kept and dropped alike (status says which)."""
    from tunewise.files import write_text

    return write_text(path, "".join(json.dumps(asdict(i), ensure_ascii=False) + "\n" for i in items))


def read_queries(path: str | Path) -> list[SyntheticQuery]:
    """A (possibly edited) queries file; a row without status is kept.

    Raises:
        TunewiseError: a row without query or document, or an unreadable file.
    """
    records = read_records(path, "jsonl", option="synthetic.file")
    items = []
    for n, r in enumerate(records):
        query, document = text_value(r, "query", n, path), text_value(r, "document", n, path)
        items.append(SyntheticQuery(query, document, str(r.get("document_id") or _doc_id(document)), str(r.get("generator", "")),
                                    str(r.get("status") or KEPT), float(r.get("seconds") or 0.0)))
    return items


def default_output(config: Any) -> Path:
    return Path(config.synthetic.output or f"{str(config.output_dir).rstrip('/')}.synthetic.jsonl")


def _counts(items: list[SyntheticQuery]) -> dict[str, Any]:
    return {"generated": len(items), "kept": sum(i.status == KEPT for i in items),
            "filtered": dict(Counter(i.status for i in items if i.status != KEPT))}


def synthetic_rows(rows: list[dict[str, str]], data: Any, config: Any, model: Any = None) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The labeled rows plus the synthetic pairs the config asks for (``search_rows``' first step).

    Uses ``synthetic.file`` as written when it exists (edits win), else generates (cached).
    The kept queries are shuffled with the seed and cut to ``synthetic.queries`` and to
    ``synthetic.ratio`` of the mix, so a sweep over ``synthetic.queries`` uses nested sets.

    Returns:
        ``(rows, report)``; report keys: ``synthetic_seconds`` (full generation cost, cached or
        not), ``synthetic_cached``, ``generated``, ``kept``, ``filtered`` (by reason), ``used``,
        ``documents``, ``eval_documents`` (documents of evaluation queries that got queries).
    """
    syn = config.synthetic
    if not syn.enabled:
        return list(rows), {}
    if syn.file and Path(syn.file).is_file():
        items = read_queries(syn.file)
        report = {"file": syn.file, "synthetic_seconds": round(sum(i.seconds for i in items), 3), "synthetic_cached": True,
                  "documents": len({i.document for i in items}),
                  "eval_documents": len({normalize(i.document) for i in items} & _evaluated_texts(data))}
    else:
        items, report = synthesize(rows, data, config, model)
    report.update(_counts(items))
    if isinstance(getattr(data, "report", None), dict):  # visible in the run's data report (transductive when > 0)
        data.report["synthetic_eval_documents"] = report.get("eval_documents", 0)
    kept = [i for i in items if i.status == KEPT]
    random.Random(_seed(config)).shuffle(kept)
    cap = syn.queries
    if syn.ratio < 1.0:
        cap = min(cap, int(syn.ratio / (1.0 - syn.ratio) * len(rows) + 1e-9))
    used = kept[:cap]
    report["used"] = len(used)
    extra = [{"anchor": i.query, "positive": i.document} for i in used]
    if rows and "negative" in rows[0]:  # triplets: a seeded other document stands in as negative
        rng, pool = random.Random(config.seed), [r["positive"] for r in rows]
        for row in extra:
            row["negative"] = next((p for p in rng.sample(pool, min(len(pool), 5)) if p != row["positive"]), pool[0])
    return list(rows) + extra, report


def synthesize_file(config: Any, output: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """``tunewise synthesize``: generate for the config's documents and write the queries file.

    The round trip uses the config's pre-trained model; nothing is trained.
    """
    from tunewise.data.synthetic_config import check_synthetic
    from tunewise.run import check_config

    if not config.synthetic.enabled:
        raise TunewiseError("synthetic.queries: 0 turns synthetic queries off; set it to how many pairs you want, e.g. --set synthetic.queries=500")
    task = check_config(config)[0]
    check_synthetic(config)
    data = task.prepare_data(config)
    model = task.load_model(config, "cpu") if config.synthetic.filter_top_k else None
    items, report = synthesize(data.train, data, config, model)
    if not report["documents"]:
        raise TunewiseError("data.unlabeled: every training document already has a labeled query and no data.unlabeled "
                            "is given; name a file of documents without queries")
    report.update(_counts(items))
    path = write_queries(output or default_output(config), items)
    return path, report


def paraphrase(texts: list[str], config: Any, *, seed: int) -> list[str]:
    """A rewording of each text by the synthetic generator (augmentation op ``paraphrase``).

    Same generator, cache and progress as synthetic queries; a reply that is empty, too long or
    the text itself gives back the text unchanged.
    """
    from tunewise.models.generator import generate

    if not texts:
        return []
    syn = config.synthetic
    language = syn.language or detect_language(texts)
    result = generate(list(texts), syn.generator, _settings(config, PARAPHRASE_PROMPT, language, per_input=1, seed=seed),
                      description="paraphrases")
    out = []
    for text, outputs in zip(texts, result.outputs):
        new = clean_query(outputs[0]) if outputs else ""
        ok = new and normalize(new) != normalize(text) and len(new.split()) <= 3 * max(8, len(text.split()))
        out.append(new if ok else text)
    return out
