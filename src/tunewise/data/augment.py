"""Text augmentation of training items: more varied copies of the labels you have.

``data.augment`` adds ``copies`` altered copies of every training item, each made by one op
drawn from ``ops`` (EDA's recipe: one simple edit per copy; Wei & Zou 2019, arXiv:1901.11196):

| op | what changes (``p`` = share of words touched) | from |
|---|---|---|
| ``delete`` | random words dropped | nlpaug ``RandomWordAug`` |
| ``swap`` | random neighbouring words swapped | nlpaug ``RandomWordAug`` |
| ``typo`` | keyboard typos inside random words (realistic for typed queries) | nlpaug ``KeyboardAug`` |
| ``char`` | random letters substituted inside random words | nlpaug ``RandomCharAug`` |
| ``synonym`` | random words replaced by a nearest neighbour in the model's own token embeddings | here |
| ``paraphrase`` | a generated paraphrase of the whole text | :func:`tunewise.data.synthetic.paraphrase` |

Only training text is touched: the task calls this from :mod:`tunewise.data.training_rows`
after its evaluation and validation sets were split off, so no copy can cross into them.
Words are split on white space (punctuation stays on its word), so å/ä/ö, emoji and
hyphenated compounds come through as they were; an edit that would leave a text empty keeps
the original, and a copy that came out unchanged is dropped. Every copy is seeded by the
run's seed, the copy number and the text itself: the same item gets the same copies in every
budget-sweep subset that holds it.

``synonym`` uses the model being trained because no offline synonym resource ships on PyPI
(nltk's WordNet data and ``wn``'s lexicons are downloaded at run time, and WordNet is English
only): for a word the tokenizer keeps whole, the candidates are the whole-word tokens nearest
to it in the input embedding matrix (often inflections and related words). It works for any
language the model's vocabulary covers and does nothing to words split into sub-words.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tunewise.errors import TunewiseError, did_you_mean
from tunewise.registry import Registry

# An op: (texts, per-text seeds, p, context) -> the altered texts (same order and length).
Op = Callable[[list[str], list[int], float, "OpContext"], list[str]]
OPS: Registry[Op] = Registry("augmentation op", "data.augment.ops")
TARGETS = ("query", "both")
INSTALL = 'pip install "tunewise[augment]"'


@dataclass
class AugmentConfig:
    """Augmented copies of the training items (never of evaluation or validation items)."""

    copies: int = field(default=0, metadata={"help": "Augmented copies per training item; 0 = off. Each copy adds a "
        "pass over the data per epoch (copies: 1 doubles the training steps)."})
    ops: list[str] = field(default_factory=lambda: ["delete", "swap"], metadata={"help": "Edits one of which makes each "
        "copy: delete, swap (words), typo, char (letters), synonym (the model's embedding neighbours), paraphrase "
        "(generated; data.synthetic's generator)."})
    p: float = field(default=0.1, metadata={"help": "Share of words an edit touches, in (0, 1]."})
    targets: str = field(default="query", metadata={"help": "Search rows: which side is augmented: query (the "
        "anchor; documents rarely benefit) or both (query and positive)."})

    def __post_init__(self) -> None:
        if self.copies < 0:
            raise TunewiseError(f"data.augment.copies: must be 0 (off) or more, got {self.copies}")
        if not 0.0 < self.p <= 1.0:
            raise TunewiseError(f"data.augment.p: must be in (0, 1] (a share of words), got {self.p}")
        if not self.ops:
            raise TunewiseError(f"data.augment.ops: give at least one op, e.g. [delete, swap]; choose from {', '.join(OPS)}")
        self.ops = [OPS.canonical(op) for op in self.ops]
        if self.targets not in TARGETS:
            raise TunewiseError(f"data.augment.targets: unknown '{self.targets}'{did_you_mean(self.targets, TARGETS)}; "
                                "use query or both")


@dataclass
class OpContext:
    """What an op may need besides the texts: the run config (paraphrase) and the model (synonym)."""

    config: Any = None
    model: Any = None
    seed: int = 0
    copy: int = 0  # which copy is being made (a generator's seed)
    cache: dict = field(default_factory=dict)


# -- the ops ------------------------------------------------------------------------------------

def _split(text: str) -> list[str]:
    return text.split()


def _join(words: list[str]) -> str:
    return " ".join(words)


@contextlib.contextmanager
def _global_seed(seed: int) -> Iterator[None]:
    """nlpaug draws from ``random`` and numpy's global generator: seed both, then restore them."""
    import numpy as np

    state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(state)
        np.random.set_state(np_state)


_PIECES = re.compile(r"\w+|\W")  # words and single other characters: "".join gives the text back exactly


def _pieces(text: str) -> list[str]:
    return _PIECES.findall(text)


def _nlpaug(kind: str, p: float):
    try:
        import nlpaug.augmenter.char as nac
        import nlpaug.augmenter.word as naw
    except ImportError:
        raise TunewiseError(f"data.augment.ops: '{kind}' needs nlpaug; {INSTALL}") from None
    if kind in ("delete", "swap"):  # white-space words: punctuation moves with its word, nothing is re-spaced
        return naw.RandomWordAug(action=kind, aug_p=p, aug_min=1, aug_max=None, tokenizer=_split, reverse_tokenizer=_join)
    # letters change inside words only (spaces, punctuation and emoji are pieces too short to touch)
    chars = {"aug_word_p": p, "aug_word_min": 1, "aug_word_max": None, "aug_char_p": 0.3, "aug_char_max": 1, "min_char": 3,
             "include_upper_case": False, "include_numeric": False, "tokenizer": _pieces, "reverse_tokenizer": "".join}
    if kind == "typo":  # nlpaug's QWERTY neighbours; letters it has no map for (å, ä, ö) stay as they are
        return nac.KeyboardAug(include_special_char=False, **chars)
    return nac.RandomCharAug(action="substitute", spec_char="", **chars)


def _nlpaug_op(kind: str) -> Op:
    def op(texts: list[str], seeds: list[int], p: float, ctx: OpContext) -> list[str]:
        aug = ctx.cache.get((kind, p)) or ctx.cache.setdefault((kind, p), _nlpaug(kind, p))
        out = []
        for text, seed in zip(texts, seeds):
            n_words = len(_split(text))
            if n_words < (2 if kind in ("delete", "swap") else 1):
                out.append(text)  # one word: deleting it empties the text, swapping does nothing
                continue
            if kind not in ("delete", "swap"):  # nlpaug counts pieces (spaces too): p stays a share of words
                aug.aug_word_p = min(1.0, p * n_words / max(1, len(_pieces(text))))
            with _global_seed(seed):
                result = aug.augment(text)
            out.append(result[0] if isinstance(result, list) else result)
        return out

    op.__doc__ = f"nlpaug {kind}"
    return op


for _kind in ("delete", "swap", "typo", "char"):
    OPS.register(_kind)(_nlpaug_op(_kind))

_WORD = re.compile(r"^(\W*)(.*?)(\W*)$", re.UNICODE)


class EmbeddingNeighbours:
    """Whole-word tokens nearest to a word in a model's input embeddings (cosine), for ``synonym``."""

    def __init__(self, tokenizer: Any, weight: Any, k: int = 5) -> None:
        import torch

        self.tokenizer, self.k = tokenizer, k
        ids = list(range(min(weight.shape[0], len(tokenizer))))  # embedding rows can outnumber the vocabulary
        words = [tokenizer.convert_tokens_to_string([t]).strip() if t else "" for t in tokenizer.convert_ids_to_tokens(ids)]
        special = set(getattr(tokenizer, "all_special_ids", []))
        alpha = [i for i in ids if i not in special and len(words[i]) > 1 and words[i].isalpha()]
        back = tokenizer([words[i] for i in alpha], add_special_tokens=False)["input_ids"] if alpha else []
        self.ids = [i for i, b in zip(alpha, back) if b == [i]]  # a word the tokenizer keeps whole
        self.words = [words[i] for i in self.ids]
        w = weight.detach().float().cpu()
        self.matrix = torch.nn.functional.normalize(w[self.ids], dim=-1) if self.ids else w[:0]  # (n_words, dim)
        self.row = {i: r for r, i in enumerate(self.ids)}
        self._memo: dict[str, list[str]] = {}

    def __call__(self, word: str) -> list[str]:
        if word not in self._memo:
            ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
            found: list[str] = []
            spelled = self.tokenizer.convert_tokens_to_string(self.tokenizer.convert_ids_to_tokens(ids)).strip()
            if len(ids) == 1 and ids[0] in self.row and spelled.lower() == word.lower():  # not 'lång' read as 'lang'
                sims = self.matrix @ self.matrix[self.row[ids[0]]]  # (n_words,)
                order = sims.topk(min(len(self.ids), self.k + 4)).indices.tolist()
                found = [self.words[r] for r in order if self.words[r].lower() != word.lower()][: self.k]
            self._memo[word] = found
        return self._memo[word]


def neighbours_of(model: Any) -> EmbeddingNeighbours:
    """The neighbour table of a SentenceTransformer, or of ``(tokenizer, transformers model)``."""
    if isinstance(model, tuple):
        tokenizer, module = model
    else:
        first = model[0] if hasattr(model, "__getitem__") else model  # a SentenceTransformer's Transformer module
        tokenizer = getattr(model, "tokenizer", None)
        module = getattr(first, "auto_model", None) or getattr(first, "model", None) or first
    if tokenizer is None or not hasattr(module, "get_input_embeddings"):
        raise TunewiseError("data.augment.ops: 'synonym' needs a text model with a tokenizer; use delete, swap, typo or char")
    return EmbeddingNeighbours(tokenizer, module.get_input_embeddings().weight)


@OPS.register("synonym")
def synonym(texts: list[str], seeds: list[int], p: float, ctx: OpContext) -> list[str]:
    """Replace about ``p`` of the words (at least one) that have embedding neighbours."""
    if ctx.model is None:
        raise TunewiseError("data.augment.ops: 'synonym' needs the model being trained; this task does not pass it, "
                            "use delete, swap, typo or char")
    table = ctx.cache.get("neighbours") or ctx.cache.setdefault("neighbours", neighbours_of(ctx.model))
    out = []
    for text, seed in zip(texts, seeds):
        rng = random.Random(seed)
        words = _split(text)
        parts = [_WORD.match(w).groups() for w in words]  # (leading punctuation, word, trailing)
        options = [i for i, (_, core, _) in enumerate(parts) if core and table(core)]
        n = min(len(options), max(1, round(p * len(words))))
        for i in rng.sample(options, n):
            lead, core, trail = parts[i]
            new = rng.choice(table(core))
            new = new.capitalize() if core[:1].isupper() else new
            words[i] = f"{lead}{new}{trail}"
        out.append(_join(words))
    return out


@OPS.register("paraphrase")
def paraphrase(texts: list[str], seeds: list[int], p: float, ctx: OpContext) -> list[str]:
    """A generated paraphrase of each text (``p`` does not apply), from the synthetic-data generator."""
    try:
        from tunewise.data.synthetic import paraphrase as generate
    except ImportError:
        raise TunewiseError("data.augment.ops: 'paraphrase' needs tunewise.data.synthetic.paraphrase, which this "
                            "version does not have; use delete, swap, typo, char or synonym") from None
    if ctx.config is None:
        raise TunewiseError("data.augment.ops: 'paraphrase' needs the run config (its synthetic.generator)")
    return list(generate(texts, ctx.config, seed=ctx.seed + ctx.copy))  # copies differ; texts unchanged come back as they were


# -- applying them ------------------------------------------------------------------------------

def _seed(seed: int, copy: int, role: str, text: str) -> int:
    return zlib.crc32(f"{seed}|{copy}|{role}|{text}".encode())


def augment_texts(texts: list[str], cfg: AugmentConfig, *, seed: int, role: str = "text",
                  ctx: OpContext | None = None) -> list[list[str]]:
    """``cfg.copies`` altered versions of ``texts``: one list per copy, aligned with ``texts``.

    Each text's op and edit are seeded by (seed, copy, role, text). A result that is empty
    keeps the original text (callers drop copies equal to their original).
    """
    ctx = ctx or OpContext(seed=seed)
    copies = []
    for copy in range(cfg.copies):
        ctx.copy = copy
        seeds = [_seed(seed, copy, role, t) for t in texts]
        chosen = [cfg.ops[random.Random(s).randrange(len(cfg.ops))] for s in seeds]
        out = list(texts)
        for name in dict.fromkeys(chosen):
            idx = [i for i, c in enumerate(chosen) if c == name]
            done = OPS.get(name)([texts[i] for i in idx], [seeds[i] + 1 for i in idx], cfg.p, ctx)
            for i, new in zip(idx, done):
                new = " ".join(str(new).split()) if new is not None else ""
                out[i] = new if new else texts[i]
        copies.append(out)
    return copies


def _report(start: float, added: int, cfg: AugmentConfig, tried: int) -> dict[str, Any]:
    return {"augment_seconds": round(time.perf_counter() - start, 3), "augmented": added, "ops": list(cfg.ops),
            "augment_unchanged": tried - added}


def augment_search_rows(rows: list[dict[str, str]], cfg: AugmentConfig, *, seed: int, config: Any = None,
                        model: Any = None) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Search rows plus their augmented copies (the query, or query and positive with targets: both).

    Returns:
        ``(rows, report)``; the report is empty when augmentation is off.
    """
    if cfg.copies == 0 or not rows:
        return list(rows), {}
    start = time.perf_counter()
    ctx = OpContext(config=config, model=model, seed=seed)
    roles = ["anchor"] + (["positive"] if cfg.targets == "both" else [])
    new = {role: augment_texts([r[role] for r in rows], cfg, seed=seed, role=role, ctx=ctx) for role in roles}
    extra = []
    for copy in range(cfg.copies):
        for i, row in enumerate(rows):
            changed = {role: new[role][copy][i] for role in roles if new[role][copy][i] != row[role]}
            if changed:
                extra.append({**row, **changed})
    return [*rows, *extra], _report(start, len(extra), cfg, cfg.copies * len(rows))


def augment_labeled(texts: list[str], labels: list[Any], cfg: AugmentConfig, *, seed: int, config: Any = None,
                    model: Any = None) -> tuple[list[str], list[Any], dict[str, Any]]:
    """Classification texts plus augmented copies, each keeping its item's label."""
    if cfg.copies == 0 or not texts:
        return list(texts), list(labels), {}
    start = time.perf_counter()
    ctx = OpContext(config=config, model=model, seed=seed)
    out_texts, out_labels = list(texts), list(labels)
    for version in augment_texts(list(texts), cfg, seed=seed, ctx=ctx):
        for text, new, label in zip(texts, version, labels):
            if new != text:
                out_texts.append(new)
                out_labels.append(label)
    return out_texts, out_labels, _report(start, len(out_texts) - len(texts), cfg, cfg.copies * len(texts))

