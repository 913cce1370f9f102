"""The ``synthetic:`` config section: queries generated for unlabeled documents (embedding search).

Declared here (not in :mod:`tunewise.data.synthetic`) so that loading a config does not import
the generation code; :func:`check_synthetic` is what ``fit``/``synthesize`` run before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunewise.config import register_section
from tunewise.errors import TunewiseError

SEARCH_TASK = "embedding"  # the one task whose training rows are (query, document) pairs


@dataclass
class SyntheticConfig:
    """Synthetic (query, document) pairs from documents without a labeled query (embedding search only)."""

    queries: int = field(default=0, metadata={"help": "Use at most this many synthetic pairs (0 = off); the budget planner's "
        "lever synthetic:N sets it. Documents: data.unlabeled, else the training documents without a labeled query (a seeded sample of "
        "2 x queries / per_document of them when there are more)."})
    generator: str = field(default="", metadata={"help": "Query generator: a local causal LM or seq2seq folder or hub id (no custom "
        "code); empty = the packaged SmolLM2-135M-Instruct."})
    prompt: str = field(default="", metadata={"help": "Prompt template with {document} and {language}; empty = the built-in one "
        "(a chat instruction for causal LMs, the document alone for seq2seq doc2query models)."})
    language: str = field(default="", metadata={"help": "Language the queries are asked for; empty = detected from the documents "
        "(Swedish, English, German, French, Spanish...), else \"the document's language\"."})
    per_document: int = field(default=1, metadata={"help": "Queries generated per document."})
    max_new_tokens: int = field(default=24, metadata={"help": "Generation: new tokens per query (longer outputs are cut and "
        "queries over 3x this many words dropped)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature; 0 = greedy (then per_document must be 1)."})
    seed: int | None = field(default=None, metadata={"help": "Seeds sampling and which synthetic pairs are used; empty = the run seed."})
    batch_size: int = field(default=16, metadata={"help": "Documents per generate() call."})
    filter_top_k: int = field(default=20, metadata={"help": "Round-trip filter: keep a query only if the pre-trained model (as "
        "training starts) ranks its source document in the top k of the documents; 0 = no filter."})
    ratio: float = field(default=1.0, metadata={"help": "Largest share of synthetic pairs in the training mix, in [0, 1]: 0.5 = at most "
        "one synthetic pair per labeled pair; 1 = no cap beyond synthetic.queries."})
    text_column: str = field(default="text", metadata={"help": "Column of data.unlabeled that holds the document text."})
    output: str = field(default="", metadata={"help": "Where `tunewise synthesize` writes the queries (JSONL: query, document, "
        "document_id, generator, status); empty = <output_dir>.synthetic.jsonl beside the run folder."})
    file: str = field(default="", metadata={"help": "An existing (edited) queries file that fit uses instead of generating: rows "
        "whose status is kept (or that have none), as written; edits win, no filter is re-applied."})

    def __post_init__(self) -> None:
        for name in ("queries", "filter_top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TunewiseError(f"synthetic.{name}: must be a whole number of 0 or more, got {value!r}")
        for name in ("per_document", "max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TunewiseError(f"synthetic.{name}: must be a whole number of at least 1, got {value!r}")
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0.0 <= self.ratio <= 1.0:
            raise TunewiseError(f"synthetic.ratio: must be in [0, 1] (the largest share of synthetic pairs in training), got {self.ratio!r}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise TunewiseError(f"synthetic.temperature: must be 0 (greedy) or more, got {self.temperature!r}")
        if self.temperature == 0 and self.per_document > 1:
            raise TunewiseError("synthetic.per_document: greedy decoding (temperature 0) gives one query per document; "
                                "set synthetic.temperature above 0 (e.g. 0.7) for more")
        if self.prompt and "{document}" not in self.prompt:
            raise TunewiseError("synthetic.prompt: the template must contain {document} (and may contain {language})")
        if not self.text_column:
            raise TunewiseError("synthetic.text_column: give the column of data.unlabeled that holds the documents")

    @property
    def enabled(self) -> bool:
        return self.queries > 0


register_section("synthetic", SyntheticConfig)


def check_synthetic(config: Any) -> None:
    """What ``fit`` and ``synthesize`` check before any work when synthetic pairs are on.

    Raises:
        TunewiseError: synthetic pairs on a task that is not embedding search, an unreadable or
            empty data.unlabeled (or one without the text column), or a generator that is not a
            causal LM or seq2seq model (read from its config; no weights are loaded).
    """
    syn = config.synthetic
    if not syn.enabled:
        return
    if config.task != SEARCH_TASK:  # RunConfig refuses it first (TaskSpec.levers); kept for configs built by hand
        raise TunewiseError(f"synthetic.queries: synthetic queries train embedding search only, not task '{config.task}'; "
                            "set synthetic.queries: 0")
    from tunewise.data.synthetic import read_unlabeled
    from tunewise.models.generator import generator_kind

    if config.data.unlabeled:
        read_unlabeled(config)
    if not (syn.file and _exists(syn.file)):
        generator_kind(syn.generator)


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).is_file()
