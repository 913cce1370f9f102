"""The config objects: one dataclass per core section, validated in ``__post_init__``.

Task sections (``llm``, ``image``, ``classify``...) are dataclasses of the modules that use
them, declared with :func:`register_section`; :class:`RunConfig` asks the task registry for
the task's defaults (strategy, primary metric) and the strategy registry for the learning rate.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from tunewise.data.augment import AugmentConfig
from tunewise.errors import TunewiseError, did_you_mean

# eval.primary's default; left at it, a task that does not rank takes its own first metric
RANKING_PRIMARY = "mrr@20"


@dataclass
class HardNegativesConfig:
    """Hard negatives mined with the pre-trained model (text search; :mod:`tunewise.data.hard_negatives`)."""

    mine: bool = field(default=False, metadata={"help": "Give every training pair negatives retrieved by the pre-trained model from the "
        "training documents (+ data.unlabeled and hard_negatives.corpus), never a known positive of the query nor an evaluation-only "
        "document; cached, so a budget sweep mines once. Text search (embedding) only."})
    per_pair: int = field(default=1, metadata={"help": "Mined negatives per training pair (each one more text per example and step)."})
    relative_margin: float | None = field(default=0.02, metadata={"help": "False-negative guard: drop a candidate scoring above the "
        "positive's similarity minus this share of it (NV-Retriever's TopK-PercPos 95% is 0.05; 0.02 measured better "
        "on the demo); empty = off."})
    absolute_margin: float | None = field(default=None, metadata={"help": "False-negative guard: drop a candidate scoring above the "
        "positive's similarity minus this much; empty = off."})
    range_min: int = field(default=0, metadata={"help": "Skip this many of the closest candidates (likely unlabeled positives)."})
    range_max: int | None = field(default=100, metadata={"help": "Take negatives from the candidates ranked above this (the "
        "corpus size when smaller); empty = sentence-transformers' default (range_min + 10 x per_pair + positives with a "
        "guard: it left most demo pairs without a candidate)."})
    sampling: str = field(default="top", metadata={"help": "top (the closest candidates that pass the guard) or random (seeded, "
        "within range_min..range_max)."})
    corpus: str | None = field(default=None, metadata={"help": "Extra unlabeled documents to mine from: CSV/JSONL/Parquet with a "
        "text column (data.columns.text)."})

    def __post_init__(self) -> None:
        if isinstance(self.per_pair, bool) or self.per_pair < 1:
            raise TunewiseError(f"data.hard_negatives.per_pair: must be at least 1, got {self.per_pair}")
        for name, top in (("relative_margin", 1), ("absolute_margin", 2)):  # cosine similarities lie in [-1, 1]
            value = getattr(self, name)
            if value is not None and not 0 <= value < top:
                raise TunewiseError(f"data.hard_negatives.{name}: must be in [0, {top}) or empty, got {value}")
        if self.range_min < 0:
            raise TunewiseError(f"data.hard_negatives.range_min: must be 0 or more, got {self.range_min}")
        if self.range_max is not None and self.range_max - self.range_min < self.per_pair:
            raise TunewiseError(f"data.hard_negatives.range_max: {self.range_max} leaves fewer than per_pair={self.per_pair} ranks "
                                f"after range_min={self.range_min}; raise it (or leave it empty)")
        if self.sampling not in ("top", "random"):
            raise TunewiseError(f"data.hard_negatives.sampling: unknown '{self.sampling}'{did_you_mean(self.sampling, ['top', 'random'])}; "
                                "use top or random")


@dataclass
class DataConfig:
    """Where the labeled data comes from and how it is split."""

    train: str | None = field(default=None, metadata={"help": "Training data: CSV, JSONL, Parquet or a `datasets` folder."})
    format: str = field(default="auto", metadata={"help": "auto (by extension), csv, jsonl, parquet or hf."})
    kind: str = field(default="pairs", metadata={"help": "pairs (query, positive), triplets (+ negative) or labeled (text, label)."})
    columns: dict[str, str] = field(default_factory=dict, metadata={"help": "Role -> column name, e.g. {query: question, positive: answer}."})
    eval_queries: str | None = field(default=None, metadata={"help": "Evaluation queries (id, text); with eval_corpus and eval_qrels."})
    eval_corpus: str | None = field(default=None, metadata={"help": "Evaluation corpus (id, text)."})
    eval_qrels: str | None = field(default=None, metadata={"help": "Relevance judgments (query_id, doc_id[, relevance])."})
    unlabeled: str | None = field(default=None, metadata={"help": "Documents without queries (CSV/JSONL/Parquet/datasets folder; column "
        "synthetic.text_column, default text): synthetic.queries generates training queries for them."})
    eval_fraction: float = field(default=0.2, metadata={"help": "Share of queries held out for evaluation when no eval files are given."})
    eval_size: int | None = field(default=None, metadata={"help": "Number of held-out queries (overrides eval_fraction)."})
    validation_fraction: float = field(default=0.1, metadata={"help": "Share of training queries used for early stopping (only when it is on)."})
    drop_leaked: bool = field(default=True, metadata={"help": "Remove training items whose query also appears in the evaluation set."})
    max_train: int | None = field(default=None, metadata={"help": "Use at most this many training items (seeded subset)."})
    on_missing_label: str = field(default="error", metadata={"help": "A label that is empty, null or an NA string ('NaN', 'N/A', 'null', 'None', "
        "...): error, skip (leave the row out and count it in the data report) or keep (NA strings are class names)."})
    on_invalid_eval: str = field(default="error", metadata={"help": "Eval files: qrels naming an unknown query or document, or a query without a "
        "relevant judgment: error, or drop (and count them in the data report). Duplicate ids are always errors."})
    hard_negatives: HardNegativesConfig = field(default_factory=HardNegativesConfig, metadata={"help": "Mined hard negatives (text search)."})
    augment: AugmentConfig = field(default_factory=AugmentConfig, metadata={"help": "Augmented copies of the training text (search "
        "queries, classification texts); copies: 0 = off."})

    def __post_init__(self) -> None:
        if not 0.0 < self.eval_fraction < 1.0:
            raise TunewiseError(f"data.eval_fraction: must be between 0 and 1 (exclusive), got {self.eval_fraction}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise TunewiseError(f"data.validation_fraction: must be between 0 and 1 (exclusive), got {self.validation_fraction}")
        if self.eval_size is not None and self.eval_size < 1:
            raise TunewiseError(f"data.eval_size: must be at least 1, got {self.eval_size}")
        if self.max_train is not None and self.max_train < 2:
            raise TunewiseError(f"data.max_train: must be at least 2, got {self.max_train}")
        if self.format not in ("auto", "csv", "jsonl", "parquet", "hf"):
            raise TunewiseError(
                f"data.format: unknown format '{self.format}'{did_you_mean(self.format, ['csv', 'jsonl', 'parquet', 'hf'])}; "
                "use auto, csv, jsonl, parquet or hf"
            )
        for name, choices in (("on_missing_label", ("error", "skip", "keep")), ("on_invalid_eval", ("error", "drop"))):
            value = getattr(self, name)
            if value not in choices:
                raise TunewiseError(
                    f"data.{name}: unknown '{value}'{did_you_mean(value, choices)}; use {', '.join(choices[:-1])} or {choices[-1]}"
                )
        given = [self.eval_queries, self.eval_corpus, self.eval_qrels]
        if any(given) and not all(given):
            raise TunewiseError(
                "data.eval_queries, data.eval_corpus and data.eval_qrels go together: give all three, "
                "or none to split the evaluation set from the training data"
            )


@dataclass
class TrainConfig:
    """Training hyper-parameters. Defaults were measured on the demo data (see README)."""

    loss: str = field(default="mnrl", metadata={"help": "mnrl, cached_mnrl, triplet, cosent or contrastive."})
    epochs: float = field(default=3.0, metadata={"help": "Passes over the training data."})
    batch_size: int = field(default=16, metadata={"help": "Examples per step (in-batch negatives: more is harder)."})
    learning_rate: float | None = field(default=None, metadata={"help": "Peak learning rate (linear decay after warm-up); empty = by strategy: 5e-5 "
        "(full, partial, head), 1e-3 (lora, qlora adapters)."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of steps spent warming the learning rate up."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_seq_length: int | None = field(default=None, metadata={"help": "Truncate texts to this many tokens (model default if empty)."})
    precision: str = field(default="auto", metadata={"help": "auto, fp32, fp16 or bf16 (mixed, fp32 master weights; training and evaluation). "
                                                             "auto: bf16 on GPUs that have it (else fp16) and on CPUs with native bf16 "
                                                             "(avx512_bf16, AMX), else fp32. fp16 needs a GPU."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for activation memory."})
    group_by_length: bool = field(default=True, metadata={"help": "Text search training: batch texts of similar length "
                                                          "together (shuffled within windows of 8 batches; less padding, "
                                                          "same epoch). false: plain random batches."})
    early_stopping_patience: int | None = field(default=None, metadata={"help": "Stop after this many evaluations without gain on a validation "
        "share of the training data (data.validation_fraction) scored with "
        "train.early_stopping_metric; restores the best checkpoint. Every task and strategy."})
    early_stopping_metric: str | None = field(default=None, metadata={"help": "The validation metric early stopping watches; empty = "
        "eval.primary. causal-lm also takes eval_loss or perplexity (held-out loss: no generation, cheap)."})
    checkpoint_every: str | bool = field(default="epoch", metadata={"help": "fit: save a resumable checkpoint (weights, optimizer, scheduler, RNG) "
        "every epoch, every N steps (a number), every N minutes ('10min') or never ('off'); `tunewise fit --resume` continues from the last one."})
    keep_checkpoints: int = field(default=2, metadata={"help": "fit: keep the newest this many checkpoints (early stopping also keeps the best)."})
    mini_batch_size: int = field(default=16, metadata={"help": "cached_mnrl: examples per forward chunk."})
    margin: float = field(default=5.0, metadata={"help": "triplet: distance margin."})
    negatives_per_pair: int = field(default=1, metadata={"help": "cosent/contrastive without scores: sampled negatives per pair."})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda[:N]."})
    check_memory: bool = field(default=True, metadata={"help": "Stop before training when the memory estimate exceeds what is free."})
    cpu_allocator: str = field(default="auto", metadata={"help": "CPU only: trim (return freed memory to the OS: ~16% lower peak, ~20% slower), "
        "default, or auto (trim when the estimate is over half the free memory)."})
    report_to: list[str] | str = field(default_factory=list, metadata={"help": "Experiment trackers the Trainer and tunewise log to: "
        "mlflow, tensorboard, wandb (or another transformers report_to name); empty = none."})

    def __post_init__(self) -> None:
        from tunewise.tracking import check_report_to

        self.report_to = check_report_to(self.report_to)
        for name in ("epochs", "learning_rate"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise TunewiseError(f"train.{name}: must be positive, got {getattr(self, name)}")
        for name in ("batch_size", "mini_batch_size", "negatives_per_pair"):
            if getattr(self, name) < 1:
                raise TunewiseError(f"train.{name}: must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise TunewiseError(f"train.warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        if self.cpu_allocator not in ("auto", "trim", "default"):
            raise TunewiseError(f"train.cpu_allocator: unknown '{self.cpu_allocator}'; use auto, trim or default")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise TunewiseError(f"train.device: unknown device '{self.device}'; use auto, cpu, cuda or cuda:N")
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise TunewiseError(f"train.precision: unknown '{self.precision}'; use auto, fp32, fp16 or bf16")
        if self.max_seq_length is not None and self.max_seq_length < 2:
            raise TunewiseError(f"train.max_seq_length: must be at least 2, got {self.max_seq_length}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise TunewiseError(f"train.early_stopping_patience: must be at least 1, got {self.early_stopping_patience}")
        if self.keep_checkpoints < 1 or isinstance(self.keep_checkpoints, bool):
            raise TunewiseError(f"train.keep_checkpoints: must be at least 1, got {self.keep_checkpoints}")
        from tunewise.checkpoints import parse_every

        every = parse_every(self.checkpoint_every)
        self.checkpoint_every = every.text
        if every.unit == "minutes" and self.early_stopping_patience is not None:
            raise TunewiseError("train.checkpoint_every: with early stopping, checkpoints follow the validation evaluations; "
                                "use epoch or a number of steps, not minutes")


EVAL_PRECISIONS = ("train", "fp32")


@dataclass
class EvalConfig:
    """Evaluation: metrics at k, the primary metric and what is shown."""

    k: list[int] = field(default_factory=lambda: [20], metadata={"help": "Cut-offs for MRR, Recall, Precision, MAP, nDCG and hit rate (nDCG@10 is "
        "always added)."})
    primary: str = field(default=RANKING_PRIMARY, metadata={
        "help": "The metric that decides (early stopping, budget planner); left at mrr@20, a task that "
                "does not rank takes its own first metric."})
    batch_size: int = field(default=64, metadata={"help": "Encoding batch size."})
    precision: str = field(default="train", metadata={"help": "train: evaluate in train.precision (bf16 where training uses it: "
        "about 2x faster on CPUs with native bf16, scores within a query or two of fp32, before and after alike) or fp32: "
        "exact full-precision scores, as sentence-transformers computes them by default."})
    examples: int = field(default=3, metadata={"help": "Held-out queries shown with their top results before and after."})
    backend: str = field(default="auto", metadata={"help": "Top-k search: exact (matrix product), faiss or auto."})
    confidence: float = field(default=0.95, metadata={"help": "Level of the paired bootstrap intervals of every before/after gain "
        "(between 0 and 1)."})
    resamples: int = field(default=2000, metadata={"help": "Bootstrap resamples of those intervals, and permutations of the paired "
        "significance test (at least 100)."})
    folds: int | None = field(default=None, metadata={"help": "k-fold cross-validation (--folds): every item is held out once, in K "
        "groups that keep a query and its answers, or an item, on one side (classes stratified); each fold trains from the pre-trained "
        "model. Empty: one held-out split."})
    final_fit: bool = field(default=False, metadata={"help": "With folds (--final-fit): also train on all the data and save that model "
        "(not evaluated on held-out data; the folds estimate how well the recipe does)."})

    def __post_init__(self) -> None:
        if self.folds is not None and (isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2):
            raise TunewiseError(f"eval.folds (--folds): must be a whole number of at least 2, e.g. 5; got {self.folds!r}")
        if self.final_fit and self.folds is None:
            raise TunewiseError("eval.final_fit (--final-fit): only with eval.folds (--folds K); a run without folds saves its model anyway")
        if not self.k:
            raise TunewiseError("eval.k: give at least one cut-off, e.g. [1, 10, 20]")
        for k in self.k:
            if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
                raise TunewiseError(f"eval.k: every k must be a positive integer, got {k!r}")
        if self.batch_size < 1:
            raise TunewiseError(f"eval.batch_size: must be at least 1, got {self.batch_size}")
        if self.examples < 0:
            raise TunewiseError(f"eval.examples: must be 0 or more, got {self.examples}")
        if self.precision not in EVAL_PRECISIONS:
            raise TunewiseError(f"eval.precision: unknown '{self.precision}'; use {' or '.join(EVAL_PRECISIONS)}")
        if self.backend not in ("auto", "exact", "faiss"):
            raise TunewiseError(f"eval.backend: unknown '{self.backend}'; use auto, exact or faiss")
        if isinstance(self.confidence, bool) or not isinstance(self.confidence, (int, float)) or not 0 < self.confidence < 1:
            raise TunewiseError(f"eval.confidence: must be between 0 and 1 (exclusive), e.g. 0.95; got {self.confidence!r}")
        if isinstance(self.resamples, bool) or not isinstance(self.resamples, int) or self.resamples < 100:
            raise TunewiseError(f"eval.resamples: must be an integer of at least 100, e.g. 2000; got {self.resamples!r}")



class _DefaultStrategy(dict):
    """Marks the strategy field as not given, so RunConfig can pick the task's default."""


# --------------------------------------------------------------------------------------
# Task sections: ``llm:``, ``image:``... are declared by the modules that use them


SECTIONS: dict[str, type] = {}


def register_section(name: str, cls: type) -> type:
    """Declare a top-level config section (``llm``, ``image``...) and the dataclass that validates it.

    Task modules call this for the options only their task reads; the section then loads,
    dumps and appears in the config reference like the core sections.
    """
    if SECTIONS.get(name, cls) is not cls:
        raise ValueError(f"config section '{name}' is registered twice")
    SECTIONS[name] = cls
    return cls


def load_extensions() -> None:
    # Tasks and strategies register their sections and names on import.
    import tunewise.strategies  # noqa: F401
    import tunewise.tasks  # noqa: F401


@dataclass
class RunConfig:
    """One fine-tuning run: task, model, data, training, evaluation and strategy.

    Task sections (``llm``, ``image``, ``classify``...) are declared by the task modules
    (:func:`register_section`) and read as attributes: ``config.llm.max_length``.
    """

    task: str = field(default="embedding", metadata={"help": "What is trained: {tasks}."})
    model: str | None = field(default=None, metadata={"help": "Local folder or hub id; empty = the task's packaged default model."})
    output_dir: str = field(default="runs/tunewise-run", metadata={"help": "Where the model, metrics.json and model card go."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing output folder."})
    seed: int = field(default=42, metadata={"help": "Seeds splits, sampling and training."})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    strategy: dict[str, Any] | str = field(default_factory=lambda: _DefaultStrategy(name="full"), metadata={"help": "Strategy name and its options, "
        "e.g. {name: lora, rank: 8}; default: the task's (full; causal-lm: lora)."})
    sections: dict[str, Any] = field(default_factory=dict, repr=False, metadata={"sections": True})

    def __post_init__(self) -> None:
        load_extensions()
        from tunewise.strategies.base import STRATEGIES
        from tunewise.tasks.base import TASKS

        self.task = TASKS.canonical(self.task)
        spec = TASKS.get(self.task).spec
        for name, cls in SECTIONS.items():
            if not isinstance(self.sections.get(name), cls):
                self.sections[name] = cls()
        if type(self.strategy) is _DefaultStrategy:  # not given: the task's default, as a plain dict
            self.strategy = {"name": spec.default_strategy}
        if isinstance(self.strategy, str):
            self.strategy = {"name": self.strategy}
        if "name" not in self.strategy:  # options without a name: the task's default strategy
            self.strategy = {"name": spec.default_strategy, **self.strategy}
        self.strategy["name"] = STRATEGIES.canonical(str(self.strategy["name"]))
        spec.check_strategy(self.strategy_name)
        if self.data.hard_negatives.mine and "hard_negatives" not in spec.levers:
            raise TunewiseError(f"data.hard_negatives.mine: task {self.task} does not train on (query, document) pairs; "
                                "mining hard negatives is for text search (task: embedding); set it to false")
        synthetic = self.sections.get("synthetic")
        if synthetic is not None and synthetic.queries and "synthetic" not in spec.levers:
            raise TunewiseError(f"synthetic.queries: task {self.task} does not train on (query, document) pairs; synthetic "
                                "queries are for text search (task: embedding); set it to 0")
        if self.data.augment.copies and "augment" not in spec.levers:
            raise TunewiseError(f"data.augment.copies: task {self.task} has no text augmentation (text search and "
                                "classification do); set it to 0")
        self.eval.primary = spec.resolve_primary(self.eval.primary, self.eval.primary == RANKING_PRIMARY, self)
        if self.train.learning_rate is None:  # remembered, so that set_strategy() re-resolves it
            self.train._lr_by_strategy = True
        self._resolve_learning_rate()

    def __getattr__(self, name: str) -> Any:
        # task sections: config.llm, config.image ... (only called for names that are not fields)
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"RunConfig has no section '{name}'")

    def set_strategy(self, spec: dict[str, Any]) -> None:
        """Replace the strategy; a learning rate the config left empty follows the new one."""
        self.strategy = dict(spec)
        self._resolve_learning_rate()

    def _resolve_learning_rate(self) -> None:
        if getattr(self.train, "_lr_by_strategy", False):
            from tunewise.strategies.base import STRATEGIES

            self.train.learning_rate = STRATEGIES.get(self.strategy_name).default_learning_rate

    @property
    def strategy_name(self) -> str:
        return str(self.strategy["name"])

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sections"}
        data.update(self.sections)
        return {key: dataclasses.asdict(value) if dataclasses.is_dataclass(value) else
                (dict(value) if isinstance(value, dict) else value) for key, value in data.items()}
