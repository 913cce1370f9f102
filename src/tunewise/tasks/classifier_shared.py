"""What text and image classification share: scoring, the frozen-feature baseline, training.

The "before" of a classifier is the transfer-learning baseline: the pre-trained backbone,
frozen, with only its final linear layer fitted (a multinomial logistic regression on the
features that layer sees, Kornblith et al. 2019). The fitted weights are written into that
layer, so the same :func:`score` scores "before" and "after", and, by default, fine-tuning
starts from this head (linear probing then fine-tuning, Kumar et al. 2022).

Training is the transformers :class:`Trainer`: the models take ``labels`` and return a loss.

References: Kornblith et al. 2019, "Do Better ImageNet Models Transfer Better?"
(arXiv:1805.08974); Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and
Underperform Out-of-Distribution" (LP-FT, arXiv:2202.10054).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunewise.config import RunConfig, register_section
from tunewise.errors import TunewiseError
from tunewise.evaluate.classification import CLASSIFICATION_METRICS, classification_metrics, confusion_matrix, per_class
from tunewise.tasks.base import HeadSupport, Metric, TrainStats
from tunewise.tasks.training import (
    common_training_kwargs,
    early_stopping,
    early_stopping_callback,
    early_stopping_record,
    metric_key,
    train_resumable,
    validating,
    watched_metric,
)


@dataclass
class ClassifyConfig:
    """Classification: the frozen-feature baseline ("before") and how fine-tuning starts."""

    baseline_c: float = field(default=1.0, metadata={"help": "Inverse L2 strength of the logistic-regression head fitted on frozen features (the "
        "'before' model)."})
    init_head: bool = field(default=True, metadata={"help": "Start fine-tuning from that fitted head (linear probe, then fine-tune) instead of a "
        "random one."})

    def __post_init__(self) -> None:
        if self.baseline_c <= 0:
            raise TunewiseError(f"classify.baseline_c: must be positive, got {self.baseline_c}")


register_section("classify", ClassifyConfig)

# What the text and image classifiers declare in their TaskSpec.
CLASSIFIER_METRICS = tuple(Metric(name) for name in CLASSIFICATION_METRICS)
CLASSIFIER_HEAD = HeadSupport("classifier-inputs", refused_options=("dim", "activation"),
                              why="a classifier's head is its final linear layer (one output per class)")


@dataclass
class ClassificationResult:
    """Metrics of one model state, with per-class precision/recall and the confusion matrix."""

    metrics: dict[str, float]
    seconds: float
    examples: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # classes, per_class, confusion_matrix
    predictions: list[int] = field(default_factory=list, repr=False)
    # metric -> per-item value (evaluation order, the same for every model state), where the metric
    # is a mean over items: accuracy is the mean of 1.0 (correct) / 0.0. Macro and weighted
    # averages are not means over items: their intervals resample ``codes`` (see ``statistics``).
    items: dict[str, list[float]] = field(default_factory=dict, repr=False)
    codes: list[int] = field(default_factory=list, repr=False)  # y_true * n_classes + y_pred per item
    n_classes: int = 0

    @property
    def resampled(self) -> dict[str, tuple[list[int], Any]]:
        """Metrics that are not means over items: their per-item codes and the statistic recomputing them."""
        from tunewise.evaluate.uncertainty import classification_statistic

        if not self.codes:
            return {}
        return {name: (self.codes, classification_statistic(name, self.n_classes))
                for name in self.metrics if name not in self.items}


def score(y_true: Sequence[int], y_pred: Sequence[int], classes: list[str], inputs: Sequence[str],
          seconds: float, n_examples: int) -> ClassificationResult:
    """Metrics and details of predictions; examples show the first ``n_examples`` inputs."""
    n = len(classes)
    rows = per_class(list(y_true), list(y_pred), n)
    details = {
        "classes": classes,
        "per_class": {classes[c]: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
                      for c, r in enumerate(rows)},
        "confusion_matrix": confusion_matrix(list(y_true), list(y_pred), n),
    }
    examples = [{"input": inputs[i], "expected": classes[y_true[i]], "output": classes[y_pred[i]],
                 "correct": y_true[i] == y_pred[i]} for i in range(min(n_examples, len(y_true)))]
    metrics = classification_metrics(list(y_true), list(y_pred), n)
    items = {"accuracy": [float(t == p) for t, p in zip(y_true, y_pred)]}
    codes = [int(t) * n + int(p) for t, p in zip(y_true, y_pred)]
    return ClassificationResult(metrics, seconds, examples, details, list(y_pred), items, codes, n)


def head_for_data(task: Any, config: RunConfig, device: str) -> Any:
    """``load_model`` of a classifier task: a head for the data's classes (new, or a saved one of that size), for ``fit``.

    The task keeps ``_classes`` (set by ``prepare_data``) and loads with ``_load(config, labels, device, mapping)``.
    """
    if task._classes is None:
        raise TunewiseError(f"{task.spec.name}: prepare_data must run before load_model (the head needs the classes)")
    return task._load(config, task._classes, device, None)


def trained_head(task: Any, config: RunConfig, device: str, labels: Sequence[str] | None, default: str) -> Any:
    """``load_trained`` of a classifier task: the saved head whose ``labels`` match the data's by name."""
    mapping = match_trained_head(labels, task._classes, config.model or default, task.spec.name)
    return task._load(config, labels, device, mapping)


def match_trained_head(labels: Sequence[str] | None, classes: Sequence[str] | None, source: str,
                       task: str) -> list[int] | None:
    """Check a saved classifier before ``tunewise evaluate`` scores it (``load_trained`` of the classifier tasks).

    Args:
        labels: the saved head's label names in output order; None for a bare backbone.
        classes: the data's classes (None: ``prepare_data`` has not run).
        source: the model as the user named it.
        task: the task's name, for the message.

    Returns:
        The :func:`label_map` from the model's outputs to the data's classes.

    Raises:
        TunewiseError: no trained head (it would be random), or one trained on other labels.
    """
    if classes is None:
        raise TunewiseError(f"{task}: prepare_data must run before load_trained (labels are matched to the data's)")
    if labels is None:
        raise TunewiseError(f"model: {source} has no trained classification head; fine-tune it first (tunewise fit) "
                            "or evaluate a tunewise run folder")
    return label_map(labels, classes, source)


def _listed(names: Sequence[str], most: int = 12) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown}, ... ({len(names)} in all)"


def _quoted(names: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


def label_map(model_labels: Sequence[str], data_labels: Sequence[str], source: str) -> list[int] | None:
    """Match a trained head's labels to the data's by name.

    Returns:
        ``mapping[i]``: the data's class index of the model's output ``i``; None when the model's
        outputs are already in the data's order.

    Raises:
        TunewiseError: the two label sets differ (named, both ways).
    """
    model_labels, data_labels = [str(x) for x in model_labels], [str(x) for x in data_labels]
    if model_labels == data_labels:
        return None
    unknown = [d for d in data_labels if d not in model_labels]
    unused = [m for m in model_labels if m not in data_labels]
    if not unknown and not unused and len(set(model_labels)) == len(model_labels):
        return [data_labels.index(label) for label in model_labels]
    why = []
    if unknown:
        why.append(f"{_quoted(unknown)} {'is not a label' if len(unknown) == 1 else 'are not labels'} of the model")
    if unused:
        why.append(f"{_quoted(unused)} {'is' if len(unused) == 1 else 'are'} not in the data")
    if not why:
        why.append("the model repeats a label name")
    raise TunewiseError(f"model: {source} was trained on other labels (model labels: {_listed(model_labels)}; "
                        f"data labels: {_listed(data_labels)}): {'; '.join(why)}")


def head_linear(model: nn.Module, n_classes: int) -> nn.Linear:
    """The classifier's final linear layer: the last ``nn.Linear`` with ``n_classes`` outputs.

    Raises:
        TunewiseError: the model has no such layer (not a classifier for these classes).
    """
    found = None
    for module in model.modules():
        # peft wraps the head in ModulesToSaveWrapper; its active copy is a Linear too.
        if isinstance(module, nn.Linear) and module.out_features == n_classes:
            found = module
    if found is None:
        raise TunewiseError(f"model: no final linear layer with {n_classes} outputs; is this a classifier for {n_classes} classes?")
    return found


@torch.inference_mode()
def head_inputs(model: nn.Module, head: nn.Linear, batches: Iterable[dict[str, torch.Tensor]], device: str) -> torch.Tensor:
    """The features the head sees (its input), for every batch: (n, in_features)."""
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda mod, args, out: captured.append(args[0].detach().float().cpu()))
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            model(**{k: v.to(device) for k, v in batch.items() if k != "labels"})
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat([c.reshape(c.shape[0], -1) for c in captured])


def fit_probe(features: torch.Tensor, labels: Sequence[int], n_classes: int, c: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression on standardised features, folded back into raw-feature weights.

    Returns:
        ``(weight, bias)`` of shape (n_classes, dim) and (n_classes,), for ``x @ W.T + b``.
    """
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise TunewiseError('the classification baseline needs scikit-learn (a tunewise dependency): pip install scikit-learn') from None
    x = features.double().numpy()
    mu, sigma = x.mean(0), x.std(0)
    # A near-constant feature (a dead channel) must not get a huge folded weight: floor its
    # scale at a tenth of the mean scale, else a small shift in training mode explodes logits.
    sigma = sigma.clip(min=0.1 * sigma.mean() + 1e-8)
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    import warnings

    with warnings.catch_warnings():  # a small budget point can have fewer items than twice the classes
        warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
        clf.fit((x - mu) / sigma, list(labels))
    weight = torch.zeros(n_classes, x.shape[1], dtype=torch.float64)
    bias = torch.full((n_classes,), -1e4, dtype=torch.float64)  # classes unseen in training never win
    coef, intercept = torch.from_numpy(clf.coef_), torch.from_numpy(clf.intercept_)
    if len(clf.classes_) == 2:  # sklearn keeps one row for two classes: logit(c1) - logit(c0)
        coef, intercept = torch.cat([-coef / 2, coef / 2]), torch.cat([-intercept / 2, intercept / 2])
    sig, m = torch.from_numpy(sigma), torch.from_numpy(mu)
    for row, cls in enumerate(clf.classes_):
        weight[cls] = coef[row] / sig
        bias[cls] = intercept[row] - (coef[row] * m / sig).sum()
    return weight.float(), bias.float()


def fit_probe_into_head(model: nn.Module, n_classes: int, train_batches: Iterable[dict], train_labels: Sequence[int],
                        config: RunConfig, device: str) -> float:
    """Fit a logistic-regression head on the frozen features and write it into the model's head.

    Returns:
        The seconds it took (a backbone pass over the training items plus the fit).
    """
    head = head_linear(model, n_classes)
    start = time.perf_counter()
    features = head_inputs(model, head, train_batches, device)
    weight, bias = fit_probe(features, train_labels, n_classes, config.classify.baseline_c, config.seed)
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight.device, head.weight.dtype))
        if head.bias is not None:
            head.bias.copy_(bias.to(head.bias.device, head.bias.dtype))
    return time.perf_counter() - start


def linear_probe_baseline(model: nn.Module, n_classes: int, train_batches: Iterable[dict], train_labels: Sequence[int],
                          config: RunConfig, device: str, evaluate: Callable[[], ClassificationResult]) -> ClassificationResult:
    """Fit the head on frozen features, score it, and keep it when ``classify.init_head``."""
    head = head_linear(model, n_classes)
    saved = (head.weight.detach().clone(), None if head.bias is None else head.bias.detach().clone())
    fit_seconds = fit_probe_into_head(model, n_classes, train_batches, train_labels, config, device)
    result = evaluate()
    result.seconds += fit_seconds
    result.details["baseline"] = "logistic regression on frozen features (the head's inputs)"
    if not config.classify.init_head:
        with torch.no_grad():
            head.weight.copy_(saved[0])
            if saved[1] is not None:
                head.bias.copy_(saved[1])
    return result


def training_arguments(config: RunConfig, workdir: Path, device: str, *, evaluate: bool, best_metric: str | None = None,
                       greater_is_better: bool = True, **extra: Any):
    """transformers TrainingArguments for a classifier (or any model that returns a loss)."""
    from transformers import TrainingArguments

    kwargs: dict[str, Any] = dict(
        **common_training_kwargs(config, workdir, device, best_metric=best_metric, greater_is_better=greater_is_better,
                                 evaluate=evaluate),
        per_device_eval_batch_size=config.eval.batch_size,
        remove_unused_columns=False,
    )
    kwargs.update(extra)
    return TrainingArguments(**kwargs)


def run_trainer(model: nn.Module, train_dataset: Any, config: RunConfig, *, workdir: Path, device: str,
                collator: Callable | None = None, callbacks: list | None = None, eval_dataset: Any = None,
                compute_metrics: Callable | None = None, trainer_cls: Any = None,
                param_groups: list[dict[str, Any]] | None = None, validate: Callable[[], dict[str, float]] | None = None,
                **extra_args: Any) -> TrainStats:
    """Train with the transformers Trainer; early stopping when train.early_stopping_patience is set.

    Early stopping watches ``eval.primary`` on a validation set: the Trainer's own evaluation of
    ``eval_dataset`` with ``compute_metrics`` (classifiers), or ``validate()`` (any task: search
    metrics over embeddings), which then replaces ``Trainer.evaluate``. The best checkpoint is
    restored at the end; ``stats.best`` says which and why.

    Args:
        param_groups: optimizer groups from the strategy (per-group learning rates); the
            Trainer's own AdamW over every trainable parameter when None.
        validate: scores the model on the task's validation set: ``{metric: value}``.
    """
    from transformers import Trainer

    callbacks = list(callbacks or [])
    optimizers: tuple[Any, Any] = (None, None)
    if param_groups:
        optimizers = (torch.optim.AdamW(param_groups, lr=config.train.learning_rate), None)
    early = early_stopping(config)
    evaluates = eval_dataset is not None or validate is not None
    if early and not evaluates:
        raise TunewiseError("train.early_stopping_patience: no validation set was prepared")
    callbacks += early_stopping_callback(config)
    metric, higher = watched_metric(config)
    args = training_arguments(config, workdir, device, evaluate=evaluates, best_metric=metric_key(metric),
                              greater_is_better=higher, **extra_args)
    logging.getLogger("transformers.trainer").setLevel(logging.ERROR)
    trainer_cls = trainer_cls or Trainer
    if validate is not None:
        trainer_cls = validating(trainer_cls, validate)
        eval_dataset = eval_dataset if eval_dataset is not None else ["validation"]  # the Trainer wants one; validate() scores
    trainer = trainer_cls(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        data_collator=collator, compute_metrics=compute_metrics, callbacks=callbacks, optimizers=optimizers,
    )
    from tunewise.tasks.progress import quiet_progress

    quiet_progress(trainer)  # one bar in a terminal, a line per epoch in a log: no raw {'loss': ...} dicts
    start = time.perf_counter()
    output = train_resumable(trainer, config, workdir)
    wall = time.perf_counter() - start
    history = [h for h in trainer.state.log_history if any(k.startswith("eval_") for k in h)]
    eval_seconds = sum(h.get("eval_runtime", 0.0) for h in history)
    seconds = max(wall - eval_seconds, 1e-9)
    epochs = float(output.metrics.get("epoch", config.train.epochs))
    n = len(train_dataset)
    stats = TrainStats(seconds=seconds, examples=n, steps=int(output.global_step), epochs=epochs,
                       samples_per_second=n * epochs / seconds, history=history)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if losses:
        stats.history = [*history, {"train_loss_per_epoch": losses}]
    stats.best = early_stopping_record(trainer, config, metric)
    return stats


def compute_metrics_fn(n_classes: int) -> Callable:
    """A Trainer ``compute_metrics`` returning the classification metrics of eval logits."""

    def compute(prediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        preds = logits.argmax(-1).tolist()
        return classification_metrics(prediction.label_ids.tolist(), preds, n_classes)

    return compute


def details_file(before: ClassificationResult | None, after: ClassificationResult | None) -> dict[str, Any]:
    """What ``classification_report.json`` holds: per-class P/R/F1 and confusion matrices."""
    return {"before": before.details if before else None, "after": after.details if after else None}


def set_hf_backbone(model: nn.Module, backbone: nn.Module) -> None:
    """Put ``backbone`` (e.g. a peft LoRA wrapper) where a transformers model keeps its base model."""
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or not hasattr(model, prefix):
        raise TunewiseError(f"strategy: cannot find the backbone of {type(model).__name__} to swap")
    setattr(model, prefix, backbone)


def merged_for_saving(backbone: nn.Module) -> nn.Module | None:
    """A peft-wrapped backbone with its adapter folded in (the strategy saved the adapter first),
    so the output folder loads with the plain ecosystem loader; None when not wrapped."""
    if hasattr(backbone, "merge_and_unload") and hasattr(backbone, "peft_config"):
        return backbone.merge_and_unload()
    return None
