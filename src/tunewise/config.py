"""Typed run configuration: dataclasses, YAML load/dump and dotted command-line overrides.

A run is described by one YAML file::

    task: embedding
    model: path/or/hub-id        # empty: the packaged all-MiniLM-L6-v2
    output_dir: runs/faq
    data:
      train: faq.csv
      columns: {query: question, positive: answer}
    train: {epochs: 3, batch_size: 16}
    strategy: full

Unknown keys are errors that suggest the closest valid key; values are checked against
the field types. Command-line overrides use dotted paths (``train.epochs=2``) and are
parsed with ``yaml.safe_load`` so ``1e-5``, ``true`` and ``[1, 5]`` mean what they say.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunewise.errors import TunewiseError, did_you_mean


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
    eval_fraction: float = field(default=0.2, metadata={"help": "Share of queries held out for evaluation when no eval files are given."})
    eval_size: int | None = field(default=None, metadata={"help": "Number of held-out queries (overrides eval_fraction)."})
    validation_fraction: float = field(default=0.1, metadata={"help": "Share of training queries used for early stopping (only when it is on)."})
    drop_leaked: bool = field(default=True, metadata={"help": "Remove training items whose query also appears in the evaluation set."})
    max_train: int | None = field(default=None, metadata={"help": "Use at most this many training items (seeded subset)."})
    on_missing_label: str = field(default="error", metadata={"help": "A label that is empty, null or an NA string ('NaN', 'N/A', 'null', 'None', ...): error, skip (leave the row out and count it in the data report) or keep (NA strings are class names)."})
    on_invalid_eval: str = field(default="error", metadata={"help": "Eval files: qrels naming an unknown query or document, or a query without a relevant judgment: error, or drop (and count them in the data report). Duplicate ids are always errors."})

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
    learning_rate: float | None = field(default=None, metadata={"help": "Peak learning rate (linear decay after warm-up); empty = by strategy: 5e-5 (full, partial, head), 1e-3 (lora, qlora adapters)."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of steps spent warming the learning rate up."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_seq_length: int | None = field(default=None, metadata={"help": "Truncate texts to this many tokens (model default if empty)."})
    precision: str = field(default="auto", metadata={"help": "auto, fp32, fp16 or bf16 (mixed precision needs a GPU)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for activation memory."})
    early_stopping_patience: int | None = field(default=None, metadata={"help": "Stop after this many evaluations without gain; restores the best."})
    mini_batch_size: int = field(default=16, metadata={"help": "cached_mnrl: examples per forward chunk."})
    margin: float = field(default=5.0, metadata={"help": "triplet: distance margin."})
    negatives_per_pair: int = field(default=1, metadata={"help": "cosent/contrastive without scores: sampled negatives per pair."})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda[:N]."})
    check_memory: bool = field(default=True, metadata={"help": "Stop before training when the memory estimate exceeds what is free."})
    cpu_allocator: str = field(default="auto", metadata={"help": "CPU only: trim (return freed memory to the OS: ~16% lower peak, ~20% slower), default, or auto (trim when the estimate is over half the free memory)."})

    def __post_init__(self) -> None:
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
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise TunewiseError(f"train.precision: unknown '{self.precision}'; use auto, fp32, fp16 or bf16")
        if self.max_seq_length is not None and self.max_seq_length < 2:
            raise TunewiseError(f"train.max_seq_length: must be at least 2, got {self.max_seq_length}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise TunewiseError(f"train.early_stopping_patience: must be at least 1, got {self.early_stopping_patience}")


@dataclass
class EvalConfig:
    """Evaluation: metrics at k, the primary metric and what is shown."""

    k: list[int] = field(default_factory=lambda: [20], metadata={"help": "Cut-offs for MRR, Recall, Precision, MAP, nDCG and hit rate (nDCG@10 is always added)."})
    primary: str = field(default="mrr@20", metadata={"help": "The metric that decides (early stopping, budget planner); left at mrr@20, a task that does not rank takes its own first metric."})
    batch_size: int = field(default=64, metadata={"help": "Encoding batch size."})
    examples: int = field(default=3, metadata={"help": "Held-out queries shown with their top results before and after."})
    backend: str = field(default="auto", metadata={"help": "Top-k search: exact (matrix product), faiss or auto."})

    def __post_init__(self) -> None:
        if not self.k:
            raise TunewiseError("eval.k: give at least one cut-off, e.g. [1, 10, 20]")
        for k in self.k:
            if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
                raise TunewiseError(f"eval.k: every k must be a positive integer, got {k!r}")
        if self.batch_size < 1:
            raise TunewiseError(f"eval.batch_size: must be at least 1, got {self.batch_size}")
        if self.examples < 0:
            raise TunewiseError(f"eval.examples: must be 0 or more, got {self.examples}")
        if self.backend not in ("auto", "exact", "faiss"):
            raise TunewiseError(f"eval.backend: unknown '{self.backend}'; use auto, exact or faiss")

    primary_default = "mrr@20"  # what "left at default" means for RunConfig's choice of primary


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


def _load_extensions() -> None:
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
    strategy: dict[str, Any] | str = field(default_factory=lambda: _DefaultStrategy(name="full"), metadata={"help": "Strategy name and its options, e.g. {name: lora, rank: 8}; default: the task's (full; causal-lm: lora)."})
    sections: dict[str, Any] = field(default_factory=dict, repr=False, metadata={"sections": True})

    def __post_init__(self) -> None:
        _load_extensions()
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
        self.eval.primary = spec.resolve_primary(self.eval.primary, self.eval.primary == EvalConfig.primary_default, self)
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


# --------------------------------------------------------------------------------------
# dict -> dataclass with type checks


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except TunewiseError as err:
                errors.append(err)
        raise errors[0]
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TunewiseError(f"{where}: expected a mapping of options, got {type(value).__name__} {value!r}")
        return from_dict(tp, value, prefix=where)
    if origin is list:
        if not isinstance(value, list):
            raise TunewiseError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise TunewiseError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        _, val_tp = typing.get_args(tp)
        return {str(k): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise TunewiseError(f"{where}: must be a finite number, got {value!r}")
            return number
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise TunewiseError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are errors."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields if not f.metadata.get("sections")]
    holder = next((f.name for f in fields if f.metadata.get("sections")), None)
    if holder is not None:  # RunConfig: task sections are top-level keys too
        _load_extensions()
        names += list(SECTIONS)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if holder is not None and key in SECTIONS:
            kwargs.setdefault(holder, {})[key] = _coerce(value, SECTIONS[key], where)
            continue
        if key not in names:
            raise TunewiseError(
                f"unknown config key '{where}'{did_you_mean(key, names)}; valid keys here: {', '.join(names)}"
            )
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


# --------------------------------------------------------------------------------------
# YAML and overrides


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise TunewiseError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise TunewiseError(f"{path}: not UTF-8 text; re-save the config as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise TunewiseError(f"{path}:{line} is not valid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TunewiseError(f"{path}: the config must be a mapping of keys (task, model, data, train...), got {type(data).__name__}")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override in place (value parsed as YAML)."""
    if "=" not in assignment:
        raise TunewiseError(f"--set: expected key=value (e.g. train.epochs=2), got '{assignment}'")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise TunewiseError(f"--set: empty key in '{assignment}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str) and part == "strategy":
            child = {"name": child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise TunewiseError(f"--set {key}: '{part}' is not a section")
        node[part] = child
        node = child
    node[parts[-1]] = value


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> RunConfig:
    """Load a run config: YAML file, then ``values`` (dotted keys), then ``--set`` overrides.

    Args:
        path: a YAML file, or None for the defaults.
        overrides: ``["train.epochs=2", ...]`` as typed on the command line.
        values: dotted keys set by named CLI flags (None values are ignored).

    Returns:
        The validated :class:`RunConfig`.

    Raises:
        TunewiseError: unknown keys (with a suggestion), wrong types, invalid values.
    """
    data = read_yaml(path) if path is not None else {}
    for key, value in (values or {}).items():
        if value is not None:
            apply_override(data, f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"
                           if not isinstance(value, str) else f"{key}={_quote(value)}")
    for assignment in overrides or []:
        apply_override(data, assignment)
    return from_dict(RunConfig, data)


def _quote(value: str) -> str:
    # A path such as "1e-5" or "yes" must stay a string when re-parsed.
    return yaml.safe_dump(value, default_style='"').strip()


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML, suitable for ``tunewise fit``."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)


def config_reference() -> str:
    """A Markdown reference of every config key, its default and its help text."""
    lines = ["| key | default | meaning |", "|---|---|---|"]

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("sections"):
                for name, section in SECTIONS.items():
                    walk(section, f"{prefix}{name}.")
                continue
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            else:
                default = ""
            shown = "" if default is None else json.dumps(default, default=str, ensure_ascii=False)
            lines.append(f"| `{prefix}{f.name}` | `{shown}` | {f.metadata.get('help', '').replace('{tasks}', tasks)} |")

    _load_extensions()
    from tunewise.tasks.base import TASKS

    tasks = ", ".join(f"{name} ({TASKS.get(name).spec.summary})" for name in TASKS)
    walk(RunConfig, "")
    return "\n".join(lines)
