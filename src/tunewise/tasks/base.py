"""The contract every task fulfils, what it declares about itself, and the registry that finds it.

A task is one module under :mod:`tunewise.tasks` that registers a class with :data:`TASKS`.
Everything the rest of tunewise needs to know about a task is either a method of
:class:`Task` or a fact in its :class:`TaskSpec`; the runner, the budget planner, the memory
planner, the strategies and the CLI ask the registry and never test a task's name.

Required members (:class:`Task`), and who calls them:

| member | called by | what for |
|---|---|---|
| ``spec`` (a :class:`TaskSpec`) | everyone | metrics and their direction, unit, default and refused strategies, memory profile, head support |
| ``prepare_data(config)`` | :mod:`tunewise.run`, budget sweep | read and split the data; TunewiseError on bad input |
| ``data_report(data)`` | run, sweep | counts, leakage, skipped rows (goes to metrics.json) |
| ``n_train(data)`` / ``subset(data, indices)`` | run, sweep | training size; nested subsets of the budget planner |
| ``load_model(config, device)`` | run, sweep, compare, wiseft | the pre-trained model |
| ``modules(model)`` | strategies | the torch module whose parameters train |
| ``evaluate(model, data, config, split=)`` | run, sweep | ``metrics``, ``seconds``, ``items`` (per-item scores, fixed order: :class:`~tunewise.evaluate.uncertainty.HasItems`) |
| ``train(model, data, config, workdir=, callbacks=, param_groups=)`` | run (through the strategy) | train in place with the HF Trainer family |
| ``save(model, path)`` | run | so that the ecosystem's own loader opens ``path`` |
| ``card_info(data)`` | run | model card: library, pipeline_tag, usage, evaluated_on |

Optional capabilities are small :class:`typing.Protocol` classes below; callers test them with
``isinstance(task, HasBaseline)`` (never ``getattr``), and each says its default:

| capability | methods | default without it | called by |
|---|---|---|---|
| :class:`HasBaseline` | ``baseline(model, data, config)`` | the pre-trained model is evaluated as is | ``run.evaluate_before`` (fit, sweep, Ray worker) |
| :class:`HasInitHead` | ``init_head(model, data, config)`` | budget points start from the loaded model | budget sweep |
| :class:`HasBackbone` | ``backbone(model)``, ``head_modules(model)`` | the whole ``modules(model)`` is the backbone, no head | strategies (layers, LoRA, schedules) |
| :class:`SwapsBackbone` | ``set_backbone(model, b)`` | only a backbone that is the whole model can be swapped (else LoRA/QLoRA are refused) | lora, qlora |
| :class:`CanAddHead` | ``add_head(model, dim, activation)`` | ``strategy.head_dim`` is refused | strategies |
| :class:`HasModelSource` | ``model_source(config)`` | ``resolve_model(config.model)`` | lora, qlora (the adapter's base model) |
| :class:`CachesFeatures` | ``feature_keys``, ``feature_batches``, ``preprocessing`` | none: the ``head`` kinds that cache per input (``classifier-inputs``, ``pooled-image``) need it | head strategy |
| :class:`KnowsChance` | ``chance(data, config)`` | scores are not compared with chance | ``run.fit``: an after-score at or below chance is flagged in the output and the card |
| :class:`ChecksConfig` | ``check_config(config)`` | nothing task-specific to check | ``run.check_config`` (fit, ``tunewise config``) before any data is read |
| :class:`LoadsTrained` | ``load_trained(config, device)`` | ``load_model`` | ``run.evaluate``: a model scored without training must be a trained one (a classifier's head) |
| :class:`SplitsFolds` | ``folds(config, k)`` | ``--folds`` is refused for the task | :mod:`tunewise.folds` (``fit``, ``evaluate``, ``compare``, ``budget`` with ``eval.folds``) |
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tunewise.errors import TunewiseError, did_you_mean
from tunewise.registry import Registry


@dataclass(frozen=True)
class Metric:
    """A metric a task reports, with its direction.

    Args:
        name: as it appears in metrics.json and ``eval.primary``.
        higher_is_better: False for losses, perplexity, error rates.
        needs: given the run config, why the metric cannot be the primary one (None: it can).
    """

    name: str
    higher_is_better: bool = True
    needs: Callable[[Any], str | None] | None = None


@dataclass(frozen=True)
class MemoryProfile:
    """How one training example of the task becomes memory (read by :mod:`tunewise.memory`).

    Args:
        step: the estimator's model of a training step (:mod:`tunewise.memory.steps`):
            ``contrastive`` (texts encoded per example, mean-pooled, in-batch negatives),
            ``classifier`` (one text, a class head), ``lm`` (one sequence, the vocabulary
            head), ``image`` (one image, a head) or ``image-text`` (an image and its caption
            through two towers, contrastive over the batch, the towers' projections as head).
        texts_per_example: inputs encoded per example (None: the step's default: 2 for
            ``contrastive``, else 1).
        sequence: where the sequence length comes from: ``texts`` (the longest training
            texts), ``lm`` (``llm.max_length`` or the longest encoded example), ``image``
            (``image.size``), ``labels`` (the longest training label: a seq2seq decoder's
            tokens) or ``model`` (``train.max_seq_length`` or the model's limit).
        arch_from: ``path`` reads the architecture from the model's folder or hub config;
            ``model`` from the loaded model's ``config`` (models built in code, GGUF).
    """

    step: str
    texts_per_example: int | None = None
    sequence: str = "model"
    arch_from: str = "path"


@dataclass(frozen=True)
class HeadSupport:
    """What the ``head`` strategy trains on this task (frozen, cached backbone + a small head).

    Args:
        features: what is cached per input: ``pooled-text`` (sentence embeddings),
            ``classifier-inputs`` (what the final linear layer sees), ``pooled-image``,
            ``clip-towers`` (both towers' pooled outputs).
        refused_options: head options the task refuses, with ``why``.
        losses: the ``train.loss`` values the cached head supports (None: the task's own).
    """

    features: str
    refused_options: tuple[str, ...] = ()
    why: str = ""
    losses: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TaskSpec:
    """What a task declares about itself, in one place.

    Args:
        name: the registered name users type (lower case, words joined by ``-``).
        summary: one line for ``--help`` and the config reference.
        unit: what one training example is called in reports ("pairs", "items", "images").
        primary: the default primary metric.
        metrics: the metrics the task reports; empty for ranking tasks, whose metrics are
            ``name@k`` for every ``eval.k`` (all higher-is-better).
        aliases: other accepted spellings of ``name`` (kept for old configs, no warning).
        default_strategy: the strategy a config that names none gets.
        refused: strategy name -> why it does not apply to this task.
        head: what the ``head`` strategy does here (None with ``refused["head"]`` set).
        memory: the memory planner's profile (None: runs are measured, not estimated).
        default_model: what ``model:`` empty means, as shown in reports.
        lora_all_linear: LoRA/QLoRA adapt every linear layer of the blocks by default
            (else peft's per-architecture default, q and v).
        modality: what the task's models take: ``text``, ``image`` or ``image-text`` (CLIP);
            a model of another kind is refused before any work (:func:`tunewise.models.loading.check_modality`).
        general_domain: the general-domain set on which WiSE-FT (:mod:`tunewise.wiseft`,
            ``strategy.interpolate``, ``tunewise interpolate``) measures what fine-tuning forgot:
            ``text-pairs`` ((query, positive) pairs searched with the run's primary metric; the
            saved model re-loads as a SentenceTransformer). None: WiSE-FT is refused.
        cpu_bf16_auto: ``train.precision: auto`` may pick bf16 autocast on a CPU with native
            bf16 (:mod:`tunewise.precision`); False: bf16 measurably hurt this task's quality,
            so auto keeps fp32 there (``bf16`` still forces it).
        levers: the data levers of issue 16 the task applies to its training rows
            (:mod:`tunewise.data.training_rows`), by config section: ``hard_negatives``
            (``data.hard_negatives.mine``). A lever turned on for a task without it is refused.
    """

    name: str
    summary: str
    unit: str
    primary: str
    metrics: tuple[Metric, ...] = ()
    aliases: tuple[str, ...] = ()
    default_strategy: str = "full"
    refused: Mapping[str, str] = field(default_factory=dict)
    head: HeadSupport | None = None
    memory: MemoryProfile | None = None
    default_model: str = "all-MiniLM-L6-v2 (packaged)"
    lora_all_linear: bool = False
    general_domain: str | None = None
    modality: str = "text"
    levers: tuple[str, ...] = ()
    cpu_bf16_auto: bool = True

    @property
    def ranking(self) -> bool:
        """Metrics are ``name@k`` over ranked results (search tasks)."""
        return not self.metrics

    def metric(self, name: str) -> Metric:
        """The declared metric ``name`` (ranking metrics: any ``name@k``, higher-is-better)."""
        for metric in self.metrics:
            if metric.name == name:
                return metric
        if self.ranking:
            return Metric(name)
        raise TunewiseError(f"eval.primary: task {self.name} reports {', '.join(m.name for m in self.metrics)}, "
                            f"not '{name}'{did_you_mean(name, [m.name for m in self.metrics])}")

    def higher_is_better(self, name: str) -> bool:
        return self.metric(name).higher_is_better

    def resolve_primary(self, requested: str, default_requested: bool, config: Any) -> str:
        """The primary metric of a run: ``requested``, or the first usable one when it was left at default.

        Raises:
            TunewiseError: the metric is not one of the task's, or cannot be computed for this config.
        """
        if self.ranking:
            from tunewise.evaluate.metrics import parse_metric_name

            try:
                metric, k = parse_metric_name(requested)
            except TunewiseError as err:
                reason = str(err).removeprefix("eval.primary: ")
                raise TunewiseError(f"eval.primary: '{requested}' is not a metric of task '{self.name}' ({reason})") from None
            return f"{metric}@{k}"
        if default_requested:
            for metric in self.metrics:
                if metric.needs is None or metric.needs(config) is None:
                    return metric.name
        metric = self.metric(requested)
        reason = metric.needs(config) if metric.needs is not None else None
        if reason:
            raise TunewiseError(f"eval.primary: {metric.name} {reason}")
        return metric.name

    def check_strategy(self, strategy: str) -> None:
        """Raise the task's reason when it refuses ``strategy``."""
        if strategy in self.refused:
            raise TunewiseError(f"strategy {strategy}: {self.refused[strategy]}")


@dataclass
class TrainStats:
    """What training measured."""

    seconds: float
    examples: int
    steps: int
    epochs: float
    samples_per_second: float
    history: list[dict[str, Any]] = field(default_factory=list)  # evaluations during training
    best: dict[str, Any] | None = None  # early stopping: the restored checkpoint
    details: dict[str, Any] = field(default_factory=dict)  # strategy-specific facts (head: the feature cache)


class Task(Protocol):
    """The methods every task has (see the module docstring for who calls them)."""

    spec: TaskSpec

    def prepare_data(self, config: Any) -> Any: ...

    def data_report(self, data: Any) -> dict[str, Any]: ...

    def subset(self, data: Any, indices: list[int]) -> Any: ...

    def n_train(self, data: Any) -> int: ...

    def load_model(self, config: Any, device: str) -> Any: ...

    def modules(self, model: Any) -> Any: ...

    def evaluate(self, model: Any, data: Any, config: Any, *, split: str = "eval") -> Any: ...

    def train(self, model: Any, data: Any, config: Any, *, workdir: Path, callbacks: list | None = None,
              param_groups: list[dict] | None = None) -> TrainStats: ...

    def save(self, model: Any, path: Path) -> None: ...

    def card_info(self, data: Any) -> dict[str, str]: ...


@runtime_checkable
class HasBaseline(Protocol):
    """The pre-trained model cannot be scored as is (a classifier needs a head): score this instead."""

    def baseline(self, model: Any, data: Any, config: Any) -> Any: ...


@runtime_checkable
class HasInitHead(Protocol):
    """Budget points start from a head fitted on their own subset (as ``fit`` does)."""

    def init_head(self, model: Any, data: Any, config: Any) -> float: ...


@runtime_checkable
class HasBackbone(Protocol):
    """Where the pre-trained network and the new heads sit inside the task's model."""

    def backbone(self, model: Any) -> Any: ...

    def head_modules(self, model: Any) -> list: ...


@runtime_checkable
class SwapsBackbone(Protocol):
    """The backbone can be replaced inside the model (LoRA wraps it, QLoRA re-loads it in 4 bit)."""

    def set_backbone(self, model: Any, backbone: Any) -> None: ...


@runtime_checkable
class CanAddHead(Protocol):
    """A new projection head can be appended (``strategy.head_dim``, the ``head`` strategy's ``dim``)."""

    def add_head(self, model: Any, dim: int | None, activation: str = "identity") -> Any: ...


@runtime_checkable
class HasModelSource(Protocol):
    """Where the weights come from when ``config.model`` alone does not say (packaged, converted)."""

    def model_source(self, config: Any) -> str: ...


@runtime_checkable
class CachesFeatures(Protocol):
    """Inputs the ``head`` strategy caches backbone outputs for, keyed per input."""

    def feature_keys(self, inputs: list) -> list[str]: ...

    def feature_batches(self, inputs: list, batch_size: int) -> Iterable[dict]: ...

    def preprocessing(self) -> dict[str, Any]: ...


@runtime_checkable
class ChecksConfig(Protocol):
    """Task options (losses, metric cut-offs) checked before any data is read or any model loads."""

    def check_config(self, config: Any) -> None: ...


@runtime_checkable
class KnowsChance(Protocol):
    """Chance levels of the task's metrics on this evaluation set (:mod:`tunewise.evaluate.chance`)."""

    def chance(self, data: Any, config: Any) -> dict[str, float]: ...


@runtime_checkable
class LoadsTrained(Protocol):
    """The model as ``tunewise evaluate`` scores it, without training: a classifier refuses a bare
    backbone (its head would be random) and a head trained on other labels."""

    def load_trained(self, config: Any, device: str) -> Any: ...


@runtime_checkable
class SplitsFolds(Protocol):
    """k-fold cross-validation (``eval.folds``): the task knows what must stay together (a query
    and its answers, a prompt, an item) and whether to stratify; see :mod:`tunewise.data.folds`.
    ``folds`` reads the data and returns a :class:`~tunewise.data.folds.FoldSplits` (one data
    object per fold plus all items for ``--final-fit``), or raises a one-line TunewiseError
    saying why this data cannot be folded."""

    def folds(self, config: Any, k: int) -> Any: ...


TASKS: Registry[type] = Registry("task", "task")
